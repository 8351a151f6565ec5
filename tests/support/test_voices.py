"""The synthetic conversation helper used by the diarization/transcription tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from support.voices import SAMPLE_RATE, available_voices, make_conversation


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_three_voice_conversation(tmp_path: Path) -> None:
    voices = available_voices()
    assert len(voices) >= 3, f"only {voices} work: run scripts/install-test-voices.sh"
    lines = ["Good morning, shall we start?", "Yes, the report is ready.", "Great, send it over."]
    conv = make_conversation(list(zip(voices[:3], lines, strict=True)), gap_s=0.6, pad_s=0.5)

    assert conv.audio.dtype == np.float32 and conv.audio.ndim == 1
    assert [t.speaker for t in conv.turns] == voices[:3]
    assert [t.text for t in conv.turns] == lines
    assert conv.turns[0].start == 0.5
    assert abs(conv.duration - (conv.turns[-1].end + 0.5)) < 1 / SAMPLE_RATE
    for prev, nxt in zip(conv.turns, conv.turns[1:], strict=False):
        assert abs(nxt.start - prev.end - 0.6) < 1 / SAMPLE_RATE

    silent = np.ones(len(conv.audio), dtype=bool)
    for t in conv.turns:
        a, b = round(t.start * SAMPLE_RATE), round(t.end * SAMPLE_RATE)
        assert 0.4 < t.end - t.start < 5.0
        assert _rms(conv.audio[a:b]) > 0.02, t
        silent[a:b] = False
    assert not conv.audio[silent].any()  # only the turns carry sound

    rttm = conv.rttm("conv1").splitlines()
    assert len(rttm) == 3
    fields = rttm[0].split()
    assert fields[:4] == ["SPEAKER", "conv1", "1", "0.500"] and fields[7] == voices[0]
    data, sr = sf.read(conv.write_wav(tmp_path / "conv.wav"), dtype="float32")
    assert sr == SAMPLE_RATE and len(data) == len(conv.audio)


def test_overlapping_turns() -> None:
    a, b = available_voices()[:2]
    conv = make_conversation([(a, "I was saying that"), (b, "Sorry, go on.")], gap_s=-0.3)
    assert conv.turns[1].start < conv.turns[0].end
    assert abs(conv.turns[0].end - conv.turns[1].start - 0.3) < 1 / SAMPLE_RATE
