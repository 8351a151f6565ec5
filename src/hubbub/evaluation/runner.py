"""Score manifests of recordings: the streaming path, or a whole-file baseline.

A manifest is a JSON list of entries with ``id``, ``category``, ``audio`` and optional
``ref_text`` / ``ref_rttm`` / ``ref_stm`` paths relative to the manifest's folder (the
format of shared/data/speech/manifest.json).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubbub.decode import load_audio
from hubbub.engines.base import Engine, SessionOptions
from hubbub.engines.driver import transcribe_streams
from hubbub.evaluation.metrics import (
    DerResult,
    Turn,
    WerResult,
    aggregate,
    cpwer,
    der,
    read_rttm,
    read_stm,
    speaker_texts,
    wer,
)
from hubbub.transcript import Transcript


@dataclass
class FileScore:
    id: str
    category: str
    duration_s: float
    ref_speakers: int | None
    hyp_speakers: int
    wer: WerResult | None = None
    der: DerResult | None = None
    cpwer: WerResult | None = None
    text: str = ""

    def row(self) -> dict:
        return {
            "id": self.id,
            "category": self.category,
            "duration_s": round(self.duration_s, 2),
            "ref_speakers": self.ref_speakers,
            "hyp_speakers": self.hyp_speakers,
            "wer": None if self.wer is None else round(self.wer.rate, 4),
            "der": None if self.der is None else round(self.der.rate, 4),
            "cpwer": None if self.cpwer is None else round(self.cpwer.rate, 4),
            "text": self.text,
        }


REF_KEYS = ("ref_text", "ref_rttm", "ref_stm")


def load_manifest(path: Path, categories: list[str] | None = None) -> list[dict]:
    """Entries of a manifest, checked: ValueError says what is wrong or missing."""
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise ValueError("expected a JSON list of entries")
    for k, e in enumerate(entries):
        if not isinstance(e, dict) or not all(isinstance(e.get(f), str) for f in ("id", "audio")):
            raise ValueError(f"entry {k} needs string 'id' and 'audio' fields")
        e.setdefault("category", "uncategorised")
        for f in ("audio", *REF_KEYS):
            if e.get(f) and not (path.parent / e[f]).is_file():
                raise ValueError(f"entry {e['id']!r}: {f} file {e[f]!r} not found")
    if categories:
        entries = [e for e in entries if e["category"] in categories]
    return entries


def score(entry: dict, root: Path, t: Transcript, diarized: bool = True) -> FileScore:
    fs = FileScore(
        id=entry["id"],
        category=entry["category"],
        duration_s=t.duration,
        ref_speakers=entry.get("speakers"),
        hyp_speakers=len(t.speakers),
        text=t.text,
    )
    if entry.get("ref_text"):
        fs.wer = wer((root / entry["ref_text"]).read_text(), t.text)
    if diarized and entry.get("ref_rttm"):
        ref = [turn for turns in read_rttm(root / entry["ref_rttm"]).values() for turn in turns]
        hyp = [Turn(s.speaker, s.start, s.end) for s in t.segments]
        fs.der = der(ref, hyp, collar=0.25)
    if diarized and entry.get("ref_stm"):
        fs.cpwer = cpwer(speaker_texts(read_stm(root / entry["ref_stm"])), t.by_speaker())
    return fs


def run_streaming(
    engine: Engine,
    entries: list[dict],
    root: Path,
    options: SessionOptions | None = None,
    batch: int = 4,
    on_file: Callable[[FileScore], None] | None = None,
) -> list[FileScore]:
    """Each group of ``batch`` files streams through the engine together, as live sessions."""
    scores = []
    for i in range(0, len(entries), batch):
        group = entries[i : i + batch]
        audios = {e["id"]: load_audio(root / e["audio"]) for e in group}
        transcripts, _ = transcribe_streams(engine, audios, options)
        for e in group:
            scores.append(score(e, root, transcripts[e["id"]]))
            if on_file:
                on_file(scores[-1])
    return scores


def run_whole_file(
    model_path: str,
    entries: list[dict],
    root: Path,
    threads: int = 2,
    on_file: Callable[[FileScore], None] | None = None,
) -> list[FileScore]:
    """Baseline: faster-whisper on each whole file (beam 5, its VAD), no speakers."""
    from faster_whisper import WhisperModel

    from hubbub.transcript import Segment

    model = WhisperModel(model_path, device="cpu", compute_type="int8", cpu_threads=threads)
    scores = []
    for e in entries:
        audio = load_audio(root / e["audio"])
        segs, _ = model.transcribe(audio, beam_size=5, vad_filter=True, temperature=0.0)
        t = Transcript(
            session_id=e["id"],
            duration=len(audio) / 16000,
            segments=[
                Segment(id=str(k), speaker="S1", start=s.start, end=s.end, text=s.text.strip())
                for k, s in enumerate(segs)
            ],
        )
        scores.append(score(e, root, t, diarized=False))
        if on_file:
            on_file(scores[-1])
    return scores


def summary(scores: list[FileScore]) -> dict:
    """Corpus totals (sum of errors over sum of reference) per metric and category."""
    out: dict = {}
    for cat in [*sorted({s.category for s in scores}), "all"]:
        group = [s for s in scores if cat in ("all", s.category)]
        wers = [s.wer for s in group if s.wer is not None]
        ders = [s.der for s in group if s.der is not None]
        cps = [s.cpwer for s in group if s.cpwer is not None]
        counts = [s for s in group if s.ref_speakers is not None]
        out[cat] = {
            "files": len(group),
            "wer": round(aggregate(wers).rate, 4) if wers else None,
            "der": round(aggregate(ders).rate, 4) if ders else None,
            "cpwer": round(aggregate(cps).rate, 4) if cps else None,
            "speaker_count_exact": (
                round(float(np.mean([s.hyp_speakers == s.ref_speakers for s in counts])), 3)
                if counts
                else None
            ),
        }
    return out
