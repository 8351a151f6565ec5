"""Audio at the edge: files and streamed PCM in, 16 kHz mono float32 out.

Everything past this module sees one format: ``np.float32`` samples in [-1, 1] at
``SAMPLE_RATE``. Files are decoded with libsndfile (WAV/FLAC/OGG) or FFmpeg through PyAV
(MP3/M4A/anything else); streams are ``pcm_s16le`` bytes in frames of any size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
MIN_STREAM_RATE = 8_000
MAX_STREAM_RATE = 48_000


class AudioError(ValueError):
    """Audio that cannot be used, with a message fit to show a user."""


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average channels: (frames, channels) -> (frames,)."""
    if samples.ndim == 1:
        return samples
    return samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a whole signal (soxr, high quality)."""
    if rate == target or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str | Path) -> np.ndarray:
    """Read any common audio file into 16 kHz mono float32.

    Raises AudioError with a one-line reason for missing, empty, unreadable or
    non-audio files, and for audio files that hold no samples at all.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: file is empty")
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        data, rate = _decode_with_ffmpeg(p)
    if data.size == 0:
        raise AudioError(f"{p}: no audio (0 samples)")
    return resample(to_mono(data), rate)


def _decode_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    # PyAV (FFmpeg) covers MP3, M4A/AAC, Opus, video containers...
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: contains no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            pieces = [
                out.to_ndarray().reshape(-1)
                for frame in container.decode(stream)
                for out in resampler.resample(frame)
            ]
            pieces += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc.__class__.__name__})") from exc
    samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    return samples.astype(np.float32).reshape(-1, 1), SAMPLE_RATE


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    sf.write(str(path), samples, rate, subtype="PCM_16")


class PcmDecoder:
    """Streamed ``pcm_s16le`` bytes -> 16 kHz mono float32, frame by frame.

    Frames may have any byte count: a trailing odd byte (or partial multi-channel
    sample) is carried into the next frame rather than dropped. Rates other than
    16 kHz are resampled by a streaming resampler that keeps its filter state.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> None:
        if not MIN_STREAM_RATE <= sample_rate <= MAX_STREAM_RATE:
            raise AudioError(
                f"sample_rate {sample_rate} outside {MIN_STREAM_RATE}-{MAX_STREAM_RATE} Hz"
            )
        if channels not in (1, 2):
            raise AudioError(f"channels must be 1 or 2, got {channels}")
        self.sample_rate = sample_rate
        self.channels = channels
        self._frame_bytes = 2 * channels
        self._carry = b""
        self._resampler = (
            None
            if sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32")
        )

    @property
    def pending_bytes(self) -> int:
        """Bytes held back until the rest of their sample arrives."""
        return len(self._carry)

    def decode(self, data: bytes) -> np.ndarray:
        buf = self._carry + data
        usable = len(buf) - len(buf) % self._frame_bytes
        self._carry = buf[usable:]
        samples = np.frombuffer(buf[:usable], dtype="<i2").astype(np.float32) / 32768.0
        samples = to_mono(samples.reshape(-1, self.channels))
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return samples

    def flush(self) -> np.ndarray:
        """End of stream: drain the resampler (an incomplete last sample cannot be decoded)."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float32 [-1, 1] -> ``pcm_s16le`` bytes (for clients and tests)."""
    clipped = np.clip(samples, -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()
