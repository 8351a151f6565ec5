"""Conversations built from real single-speaker recordings, with exact references.

Real meetings with speaker-attributed transcripts are scarce, so more are made at test
time: clips of different real speakers (the ``wer_single`` category of a manifest) are
put one after another as turns of a conversation of 2 to 6 people, with short gaps,
quick turn-taking and now and then a short overlap. The turns (RTTM) and each speaker's
words (STM) are known exactly. Conversation k is the same for the same manifest and k,
and falls in the tuning half when k is even (hubbub.evaluation.splits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from hubbub.audio import SAMPLE_RATE
from hubbub.decode import load_audio
from hubbub.evaluation.metrics import StmSegment, Turn

# Who speaks in each clip of shared/data/speech's wer_single category, by id prefix: clips
# of one source and reader are one voice (checked: their embeddings agree, README).
SPEAKER_OF = {
    "openai-whisper/jfk": "JFK",
    "cmusphinx-pocketsphinx/sense_and_sensibility": "LibriVox_SS",
    "cmusphinx-pocketsphinx/goforward": "CMU_goforward",
    "cmusphinx-pocketsphinx/cards": "CMU_cards",
    "KoljaB-RealtimeSTT/LJ": "LJ",
    "lhotse/LJ": "LJ",
    "speechbrain/LJ": "LJ",
    "QuentinFuxa-WhisperLiveKit/6930": "LS_6930",
    "QuentinFuxa-WhisperLiveKit/7902": "LS_7902",
    "MFA/": "MFA_speaker",
    "Uberi-speech_recognition/english": "Uberi",
}
MAX_TURN_S = 12.0  # longer clips make monologues, not conversations


def trimmed(audio: np.ndarray, floor_db: float = -35.0) -> np.ndarray:
    """The clip without its leading and trailing silence (10 ms frames quieter than
    ``floor_db`` below its loudest), so that a reference turn is where the voice is."""
    frame = SAMPLE_RATE // 100
    n = len(audio) // frame
    if n == 0:
        return audio
    energy = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1)) + 1e-9
    loud = np.flatnonzero(20 * np.log10(energy / energy.max()) > floor_db)
    return audio[loud[0] * frame : (loud[-1] + 1) * frame]


def telephone(audio: np.ndarray) -> np.ndarray:
    """``audio`` as a phone call carries it: 300-3400 Hz, sampled at 8 kHz, G.711 mu-law
    (8 bits), and back at 16 kHz (resampled by FFT, as cleanly as a good resampler)."""
    band = butter(4, [300, 3400], "bandpass", fs=SAMPLE_RATE, output="sos")
    spectrum = np.fft.rfft(sosfilt(band, audio))
    half = len(audio) // 2
    narrow = np.clip(np.fft.irfft(spectrum[: half // 2 + 1], half) / 2, -1.0, 1.0)
    mu = 255.0
    code = np.round(np.sign(narrow) * np.log1p(mu * np.abs(narrow)) / np.log1p(mu) * 127) / 127
    decoded = np.sign(code) * np.expm1(np.abs(code) * np.log1p(mu)) / mu
    wide = np.zeros(len(audio) // 2 + 1, complex)
    coded = np.fft.rfft(decoded)
    wide[: len(coded)] = coded * 2
    return np.fft.irfft(wide, len(audio)).astype(np.float32)


def speaker_of(entry_id: str) -> str | None:
    return next((spk for prefix, spk in SPEAKER_OF.items() if entry_id.startswith(prefix)), None)


@dataclass
class Conversation:
    id: str
    audio: np.ndarray
    turns: list[Turn]
    segments: list[StmSegment]  # the words of each turn

    @property
    def speakers(self) -> int:
        return len({t.speaker for t in self.turns})


def build_conversations(manifest: Path, count: int, seed: int = 0) -> list[Conversation]:
    """``count`` conversations of 2 to 6 speakers from the manifest's single-speaker clips."""
    import json

    root = manifest.parent
    clips: dict[str, list[tuple[np.ndarray, str]]] = {}
    for e in json.loads(manifest.read_text()):
        spk = speaker_of(e["id"]) if e.get("category") == "wer_single" else None
        if spk is None or not e.get("ref_text"):
            continue
        audio = trimmed(load_audio(root / e["audio"]))
        if len(audio) <= MAX_TURN_S * SAMPLE_RATE:
            clips.setdefault(spk, []).append((audio, (root / e["ref_text"]).read_text().strip()))
    voices = sorted(clips)
    out = []
    for k in range(count):
        rng = np.random.default_rng(seed * 1000 + k)
        n = min(2 + k % 5, len(voices))
        chosen = list(rng.choice(voices, size=n, replace=False))
        out.append(_conversation(f"built/conversation_{k:02d}", chosen, clips, rng))
    return out


def _conversation(
    conv_id: str,
    speakers: list[str],
    clips: dict[str, list[tuple[np.ndarray, str]]],
    rng: np.random.Generator,
) -> Conversation:
    """Up to 3 turns per speaker, in an order where nobody follows themselves."""
    pool = {s: [clips[s][i] for i in rng.permutation(len(clips[s]))[:3]] for s in speakers}
    left = {s: len(pool[s]) for s in speakers}
    order: list[str] = []
    while any(left.values()):
        options = [s for s in speakers if left[s] and (not order or s != order[-1])]
        options = options or [s for s in speakers if left[s]]
        order.append(str(rng.choice(options)))
        left[order[-1]] -= 1
    pieces: list[tuple[int, np.ndarray]] = []
    turns, segments = [], []
    t = int(0.5 * SAMPLE_RATE)
    for spk in order:
        audio, text = pool[spk].pop()
        if turns and rng.random() < 0.15:  # a short overlap with the turn before
            start = t - int(rng.uniform(0.2, 0.5) * SAMPLE_RATE)
        else:
            start = t + int(rng.uniform(0.1, 0.6) * SAMPLE_RATE)
        pieces.append((start, audio))
        end = start + len(audio)
        turns.append(Turn(spk, start / SAMPLE_RATE, end / SAMPLE_RATE))
        segments.append(StmSegment(spk, start / SAMPLE_RATE, end / SAMPLE_RATE, text))
        t = max(t, end)
    mix = np.zeros(t + SAMPLE_RATE // 2, np.float32)
    for start, audio in pieces:
        mix[start : start + len(audio)] += audio
    return Conversation(conv_id, np.clip(mix, -1.0, 1.0), turns, segments)
