"""Words, segments and whole transcripts, and every export format.

A *final* segment is immutable once emitted and carries a stable id; a *partial*
segment is the current guess for one speaker's open utterance and is replaced by the
next update. Times are float seconds from the start of the stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, Field

ExportFormat = Literal["json", "txt", "srt", "vtt", "rttm"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("json", "txt", "srt", "vtt", "rttm")


class Word(BaseModel):
    text: str
    start: float
    end: float
    confidence: float = 1.0


class Segment(BaseModel):
    id: str
    speaker: str
    start: float
    end: float
    text: str
    words: list[Word] = Field(default_factory=list)
    overlap: bool = False


class Transcript(BaseModel):
    """Final segments of one session, in time order.

    Segments keep the engine's speaker labels ("S1"); ``speaker_names`` maps labels to
    the names people gave them, which the text exports show instead.
    """

    session_id: str = ""
    duration: float = 0.0
    segments: list[Segment] = Field(default_factory=list)
    speaker_names: dict[str, str] = Field(default_factory=dict)

    def name(self, label: str) -> str:
        return self.speaker_names.get(label) or label

    @property
    def speakers(self) -> list[str]:
        seen: dict[str, None] = {}
        for seg in self.segments:
            seen.setdefault(seg.speaker, None)
        return list(seen)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    def by_speaker(self) -> dict[str, str]:
        out: dict[str, list[str]] = {}
        for seg in self.segments:
            out.setdefault(seg.speaker, []).append(seg.text)
        return {spk: " ".join(parts) for spk, parts in out.items()}

    def sorted(self) -> Transcript:
        segs = sorted(self.segments, key=lambda s: (s.start, s.end))
        return self.model_copy(update={"segments": segs})


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _spoken(segments: Iterable[Segment]) -> list[Segment]:
    return [s for s in segments if s.text.strip()]


# A final is often part of an utterance (words turn final while it goes on), so the
# text exports join one speaker's consecutive finals into a line or a caption cue.
TURN_GAP_S = 1.0  # a shorter pause between one speaker's finals continues the turn
LINE_MAX_S = 30.0  # text: a longer turn goes on on a new line
CUE_MAX_S = 7.0  # captions: the longest a cue stays on screen,
CUE_MAX_CHARS = 84  # and what two lines of 42 characters hold


def turns(
    segments: Iterable[Segment], max_s: float = LINE_MAX_S, max_chars: int | None = None
) -> list[Segment]:
    """Consecutive finals of one speaker joined (a segment is never split): less than
    ``TURN_GAP_S`` apart, together at most ``max_s`` long and ``max_chars`` of text."""
    out: list[Segment] = []
    for seg in _spoken(segments):
        last = out[-1] if out else None
        if (
            last is not None
            and last.speaker == seg.speaker
            and seg.start - last.end < TURN_GAP_S
            and seg.end - last.start <= max_s
            and (max_chars is None or len(last.text) + 1 + len(seg.text) <= max_chars)
        ):
            out[-1] = last.model_copy(
                update={
                    "end": max(last.end, seg.end),
                    "text": f"{last.text.strip()} {seg.text.strip()}",
                    "words": last.words + seg.words,
                    "overlap": last.overlap or seg.overlap,
                }
            )
        else:
            out.append(seg)
    return out


def to_json(t: Transcript) -> str:
    return json.dumps(t.model_dump(), indent=2, ensure_ascii=False) + "\n"


def to_text(t: Transcript) -> str:
    """One line per turn: ``[00:00:01.200] S1: text``."""
    lines = [f"[{_clock(s.start, '.')}] {t.name(s.speaker)}: {s.text}" for s in turns(t.segments)]
    return "\n".join(lines) + ("\n" if lines else "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _srt_safe(text: str) -> str:
    """SRT has no escapes: an arrow would read as a timing line and angle brackets as
    markup (``<b>``), so they become look-alikes; text stays on its line."""
    return _one_line(text).replace("-->", "→").replace("<", "‹").replace(">", "›")


def _vtt_safe(text: str) -> str:
    """WebVTT's own escapes, so names and text cannot open tags or end a cue."""
    return _one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_srt(t: Transcript) -> str:
    blocks = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n"
        f"[{_srt_safe(t.name(s.speaker))}] {_srt_safe(s.text)}\n"
        for i, s in enumerate(turns(t.segments, CUE_MAX_S, CUE_MAX_CHARS), 1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    # <v Speaker> is WebVTT's own voice span, understood by players and editors.
    blocks = [
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n"
        f"<v {_vtt_safe(t.name(s.speaker))}>{_vtt_safe(s.text)}\n"
        for s in turns(t.segments, CUE_MAX_S, CUE_MAX_CHARS)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_rttm(t: Transcript, file_id: str | None = None) -> str:
    fid = (file_id or t.session_id or "audio").replace(" ", "_")
    # RTTM fields are separated by spaces: a name's spaces become underscores.
    lines = [
        f"SPEAKER {fid} 1 {s.start:.3f} {max(0.0, s.end - s.start):.3f} <NA> <NA> "
        f"{'_'.join(t.name(s.speaker).split())} <NA> <NA>"
        for s in t.segments
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def export(t: Transcript, fmt: ExportFormat, file_id: str | None = None) -> str:
    match fmt:
        case "json":
            return to_json(t)
        case "txt":
            return to_text(t)
        case "srt":
            return to_srt(t)
        case "vtt":
            return to_vtt(t)
        case "rttm":
            return to_rttm(t, file_id)
    raise ValueError(f"unknown export format {fmt!r}")


def relabelled(segments: Sequence[Segment], relabel: Mapping[str, str]) -> list[Segment]:
    """``segments`` with the speakers of those named in ``relabel`` revised."""
    return [
        s.model_copy(update={"speaker": relabel[s.id]}) if s.id in relabel else s for s in segments
    ]


def join_words(words: Sequence[Word]) -> str:
    """Whisper words carry their own leading space; join and tidy them."""
    return "".join(w.text for w in words).strip()
