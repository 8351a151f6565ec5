import subprocess

import numpy as np
import pytest
import soundfile as sf

from hubbub.audio import AudioError, PcmDecoder, float_to_pcm16
from hubbub.decode import load_audio


def _tone(rate: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_files_of_any_rate_and_stereo_become_16k_mono(tmp_path, rate):
    tone = _tone(rate)
    stereo = np.stack([tone, tone], axis=1)
    path = tmp_path / f"tone{rate}.wav"
    sf.write(path, stereo, rate)
    audio = load_audio(path)
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert abs(len(audio) - 16000) <= 2
    # Still a 440 Hz tone: the spectrum peaks there.
    peak = np.argmax(np.abs(np.fft.rfft(audio))) * 16000 / len(audio)
    assert abs(peak - 440) < 5


@pytest.mark.parametrize("ext", ["flac", "ogg"])
def test_compressed_formats(tmp_path, ext):
    path = tmp_path / f"tone.{ext}"
    sf.write(path, _tone(16000), 16000)
    assert abs(len(load_audio(path)) - 16000) < 400


@pytest.mark.parametrize("ext", ["mp3", "m4a"])
def test_ffmpeg_formats(tmp_path, ext):
    import av

    path = tmp_path / f"tone.{ext}"
    codec = "mp3" if ext == "mp3" else "aac"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            float_to_pcm16_array(_tone(16000)), format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    audio = load_audio(path)
    assert 15000 < len(audio) < 18000
    assert np.abs(audio).max() > 0.2


def float_to_pcm16_array(x: np.ndarray) -> np.ndarray:
    return (x * 32767).astype(np.int16).reshape(1, -1)


def test_bad_files_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(garbage)


def test_zero_sample_file_is_no_audio(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    assert path.stat().st_size > 0  # a valid header, but no samples
    with pytest.raises(AudioError, match="no audio"):
        load_audio(path)


def test_pcm_decoder_carries_odd_bytes():
    samples = (np.arange(1001) - 500).astype("<i2")
    data = samples.tobytes()
    dec = PcmDecoder(16000)
    pieces = []
    # Odd-sized frames split samples in half; nothing may be lost or shifted.
    for i in range(0, len(data), 7):
        pieces.append(dec.decode(data[i : i + 7]))
    out = np.concatenate(pieces)
    assert dec.pending_bytes == 0
    np.testing.assert_array_equal(np.round(out * 32768).astype(int), samples.astype(int))


def test_pcm_decoder_holds_incomplete_sample():
    dec = PcmDecoder(16000)
    assert len(dec.decode(b"\x01")) == 0
    assert dec.pending_bytes == 1
    assert len(dec.decode(b"\x00")) == 1


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_pcm_decoder_resamples_streams(rate):
    tone = _tone(rate, seconds=2.0)
    data = float_to_pcm16(tone)
    dec = PcmDecoder(rate)
    out = np.concatenate([dec.decode(data[i : i + 4001]) for i in range(0, len(data), 4001)])
    out = np.concatenate([out, dec.flush()])
    assert abs(len(out) - 32000) < 50
    peak = np.argmax(np.abs(np.fft.rfft(out))) * 16000 / len(out)
    assert abs(peak - 440) < 5


def test_pcm_decoder_stereo_and_limits():
    left = np.full(10, 1000, "<i2")
    right = np.full(10, 3000, "<i2")
    inter = np.stack([left, right], axis=1).reshape(-1).tobytes()
    out = PcmDecoder(16000, channels=2).decode(inter)
    np.testing.assert_allclose(out * 32768, 2000, atol=1)
    with pytest.raises(AudioError, match="sample_rate"):
        PcmDecoder(4000)
    with pytest.raises(AudioError, match="channels"):
        PcmDecoder(16000, channels=3)


def test_sox_made_file_reads(tmp_path):
    sox = subprocess.run(["which", "sox"], capture_output=True)
    assert sox.returncode == 0, "sox is installed by .ci/run"
    path = tmp_path / "s.wav"
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", str(path), "synth", "1", "sine", "440"])
    assert abs(len(load_audio(path)) - 16000) < 10
