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
from hubbub.engines.base import Engine, EngineUpdate, SessionOptions
from hubbub.evaluation.conversations import build_conversations
from hubbub.evaluation.conversations import telephone as phone_call  # built(telephone=...)
from hubbub.evaluation.metrics import (
    DerResult,
    StmSegment,
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
from hubbub.evaluation.splits import split_of
from hubbub.recordings import transcribe_many
from hubbub.transcript import Transcript, relabelled


@dataclass
class FileScore:
    """One recording's scores: words, and speakers as first given out (live) and after
    the engine's second looks (refined: what stored transcripts and exports hold)."""

    id: str
    category: str
    split: str
    duration_s: float
    ref_speakers: int | None
    hyp_speakers: int
    live_speakers: int
    wer: WerResult | None = None
    der: DerResult | None = None
    live_der: DerResult | None = None
    cpwer: WerResult | None = None
    live_cpwer: WerResult | None = None
    text: str = ""

    def row(self) -> dict:
        def r(x: WerResult | DerResult | None) -> float | None:
            return None if x is None else round(x.rate, 4)

        return {
            "id": self.id,
            "category": self.category,
            "split": self.split,
            "duration_s": round(self.duration_s, 2),
            "ref_speakers": self.ref_speakers,
            "hyp_speakers": self.hyp_speakers,
            "live_speakers": self.live_speakers,
            "wer": r(self.wer),
            "der": r(self.der),
            "live_der": r(self.live_der),
            "overlap": _overlap_floor([self.der]),
            "cpwer": r(self.cpwer),
            "live_cpwer": r(self.live_cpwer),
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


@dataclass
class Recording:
    """A recording with whatever references it has: a manifest entry, or a conversation
    built at test time (hubbub.evaluation.conversations)."""

    id: str
    category: str
    load: Callable[[], np.ndarray]
    text: str | None = None  # the transcript, for WER
    turns: list[Turn] | None = None  # who spoke when, for DER
    words: list[StmSegment] | None = None  # who said what, for cpWER
    speakers: int | None = None

    @property
    def split(self) -> str:
        return split_of(self.id)


def from_manifest(entries: list[dict], root: Path) -> list[Recording]:
    out = []
    for e in entries:
        turns = None
        if e.get("ref_rttm"):
            turns = [t for ts in read_rttm(root / e["ref_rttm"]).values() for t in ts]
        out.append(
            Recording(
                id=e["id"],
                category=e["category"],
                load=lambda path=root / e["audio"]: load_audio(path),
                text=(root / e["ref_text"]).read_text() if e.get("ref_text") else None,
                turns=turns,
                words=read_stm(root / e["ref_stm"]) if e.get("ref_stm") else None,
                speakers=e.get("speakers"),
            )
        )
    return out


def built(manifest: Path, count: int, telephone: bool = False) -> list[Recording]:
    """``count`` conversations built from the manifest's single-speaker clips; with
    ``telephone``, the same ones again as a phone call carries them."""
    out = []
    for c in build_conversations(manifest, count):
        kinds = [("built_conversations", c.id, lambda audio=c.audio: audio)]
        if telephone:
            phoned = c.id.replace("built/", "built/telephone/")
            kinds.append(("built_telephone", phoned, lambda audio=c.audio: phone_call(audio)))
        out += [
            Recording(
                id=rec_id,
                category=category,
                load=load,
                text=" ".join(seg.text for seg in c.segments),
                turns=c.turns,
                words=c.segments,
                speakers=c.speakers,
            )
            for category, rec_id, load in kinds
        ]
    return out


def score(
    rec: Recording, t: Transcript, live: Transcript | None = None, collar: float = 0.25
) -> FileScore:
    """Scores of ``t`` (refined speakers) and ``live`` (first guesses) against ``rec``."""
    fs = FileScore(
        id=rec.id,
        category=rec.category,
        split=rec.split,
        duration_s=t.duration,
        ref_speakers=rec.speakers,
        hyp_speakers=len(t.speakers),
        live_speakers=len((live or t).speakers),
        text=t.text,
    )
    if rec.text is not None:
        fs.wer = wer(rec.text, t.text)
    if live is None:  # no speakers to score (whole-file baseline)
        return fs
    if rec.turns is not None:
        fs.der = der(rec.turns, [Turn(s.speaker, s.start, s.end) for s in t.segments], collar)
        fs.live_der = der(
            rec.turns, [Turn(s.speaker, s.start, s.end) for s in live.segments], collar
        )
    if rec.words is not None:
        reference = speaker_texts(rec.words)
        fs.cpwer = cpwer(reference, t.by_speaker())
        fs.live_cpwer = cpwer(reference, live.by_speaker())
    return fs


def run_streaming(
    engine: Engine,
    recordings: list[Recording],
    options: SessionOptions | None = None,
    batch: int = 4,
    on_file: Callable[[FileScore], None] | None = None,
    collar: float = 0.25,
) -> list[FileScore]:
    """Each group of ``batch`` recordings streams through the engine together, as live
    sessions; speakers are scored as first given out and as finally revised."""
    scores = []
    first: dict[str, dict[str, str]] = {}  # recording -> segment id -> its first speaker

    def note(name: str, _processed: float, upd: EngineUpdate) -> None:
        for seg in upd.finals:
            first.setdefault(name, {}).setdefault(seg.id, seg.speaker)

    for i in range(0, len(recordings), batch):
        group = recordings[i : i + batch]
        audios = {r.id: r.load() for r in group}
        transcripts = transcribe_many(engine, audios, options, on_update=note)
        for r in group:
            t = transcripts[r.id]
            live = t.model_copy(update={"segments": relabelled(t.segments, first.get(r.id, {}))})
            scores.append(score(r, t, live, collar))
            if on_file:
                on_file(scores[-1])
    return scores


def run_whole_file(
    model_path: str,
    recordings: list[Recording],
    threads: int = 2,
    on_file: Callable[[FileScore], None] | None = None,
) -> list[FileScore]:
    """Baseline: faster-whisper on each whole file (beam 5, its VAD), no speakers."""
    from faster_whisper import WhisperModel

    from hubbub.transcript import Segment

    model = WhisperModel(model_path, device="cpu", compute_type="int8", cpu_threads=threads)
    scores = []
    for r in recordings:
        audio = r.load()
        segs, _ = model.transcribe(audio, beam_size=5, vad_filter=True, temperature=0.0)
        t = Transcript(
            session_id=r.id,
            duration=len(audio) / 16000,
            segments=[
                Segment(id=str(k), speaker="S1", start=s.start, end=s.end, text=s.text.strip())
                for k, s in enumerate(segs)
            ],
        )
        scores.append(score(r, t))
        if on_file:
            on_file(scores[-1])
    return scores


def summary(scores: list[FileScore], by_split: bool = True) -> dict:
    """Corpus totals (sum of errors over sum of reference) per metric, per category and,
    where a category spans both, per split (``category/tune``, ``category/test``)."""
    groups: dict[str, list[FileScore]] = {}
    for s in scores:
        groups.setdefault(s.category, []).append(s)
        splits = {x.split for x in scores if x.category == s.category}
        if by_split and len(splits) > 1:
            groups.setdefault(f"{s.category}/{s.split}", []).append(s)
    groups = dict(sorted(groups.items()))
    groups["all"] = list(scores)
    return {name: _totals(group) for name, group in groups.items()}


def _der_parts(results: list[DerResult | None]) -> dict[str, float] | None:
    """Where the DER comes from: missed speech, false alarms, confused speakers, each as a
    share of the scored reference time."""
    items = [x for x in results if x is not None]
    if not items:
        return None
    t = aggregate(items)
    if t.total <= 0:
        return None
    parts = {"missed": t.missed, "false_alarm": t.false_alarm, "confusion": t.confusion}
    return {name: round(value / t.total, 4) for name, value in parts.items()}


def _overlap_floor(results: list[DerResult | None]) -> float | None:
    """Overlapped reference speech beyond its first speaker, as a share of the scored
    reference time: the DER a one-speaker-at-a-time transcript cannot go below."""
    items = [x for x in results if x is not None]
    t = aggregate(items) if items else None
    return round(t.overlap / t.total, 4) if t and t.total > 0 else None


def _totals(group: list[FileScore]) -> dict:
    def total(results: list) -> float | None:
        items = [x for x in results if x is not None]
        return round(aggregate(items).rate, 4) if items else None

    counted = [s for s in group if s.ref_speakers is not None and s.der is not None]

    def exact(attr: str) -> float | None:
        if not counted:
            return None
        return round(float(np.mean([getattr(s, attr) == s.ref_speakers for s in counted])), 3)

    return {
        "files": len(group),
        "wer": total([s.wer for s in group]),
        "der": total([s.der for s in group]),
        "live_der": total([s.live_der for s in group]),
        "der_parts": _der_parts([s.der for s in group]),
        "overlap_floor": _overlap_floor([s.der for s in group]),
        "cpwer": total([s.cpwer for s in group]),
        "live_cpwer": total([s.live_cpwer for s in group]),
        "speaker_count_exact": exact("hyp_speakers"),
        "live_speaker_count_exact": exact("live_speakers"),
    }
