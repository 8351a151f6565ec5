"""Scoring for ``hubbub eval``: WER, cpWER and DER, plus RTTM/STM readers.

Conventions (so numbers are comparable with published ones):

- WER counts come from jiwer on text passed through :func:`normalize_text` on both sides.
- cpWER is the CHiME-6 / meeteval "concatenated minimum-permutation WER": each speaker's words
  are joined in time order, reference and hypothesis speakers are paired so that the total
  number of word errors is minimal (Hungarian assignment, exactly as meeteval does), and a
  speaker left without a partner counts as all deletions (reference) or insertions (hypothesis).
- DER follows NIST md-eval-22: a no-score collar of ``collar`` seconds on *each* side of every
  reference turn boundary, overlapped speech is scored, and speakers are mapped one-to-one to
  maximise their overlap time in the evaluated region (before collars are removed). It is
  computed exactly on the intervals between turn/collar boundaries, not on a frame grid.
  Without a UEM the evaluated region spans all reference *and* hypothesis turns (as dscore and
  pyannote.metrics do); md-eval alone would use the reference span only and so ignore false
  alarms after the last reference turn.

Every result keeps raw counts, so totals over many files are ``aggregate(results)``
(sum of errors over sum of reference), never an average of rates.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple, TypeVar

import jiwer
import numpy as np
from num2words import num2words
from scipy.optimize import linear_sum_assignment

# --------------------------------------------------------------------------- text normalisation

# Curly and modifier apostrophes are what ASR and typeset references use for "'".
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})

# Written abbreviations whose spoken form is unambiguous; references spell them out
# ("mister john dashwood") while ASR output often abbreviates ("Mr. John Dashwood").
_SPELLINGS = {
    "mr": "mister",
    "mrs": "missus",
    "dr": "doctor",
    "prof": "professor",
    "ok": "okay",
    "&": "and",
}
_SPELLING_RE = re.compile(r"\b(mr|mrs|dr|prof|ok)\b\.?|&")

# A number as written: grouped thousands or plain digits, an optional decimal part, an
# optional ordinal/plural suffix and an optional percent sign.
_NUMBER_RE = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:(st|nd|rd|th|s)\b)?(\s?%)?")

# Hesitations that some references transcribe and most ASR systems drop (Whisper's list).
_FILLERS = frozenset({"hmm", "mm", "mhm", "mmm", "uh", "um"})


def _is_year(digits: str) -> bool:
    # Four-digit numbers in these ranges are read as years ("eighteen thirteen"), which is
    # how both speakers and references say them; 2000-2009 read the same either way.
    value = int(digits)
    return len(digits) == 4 and (1100 <= value <= 1999 or 2010 <= value <= 2099)


def _spell_number(match: re.Match[str]) -> str:
    integer, fraction, suffix, percent = match.groups()
    digits = integer.replace(",", "")
    try:
        if fraction:
            words = num2words(Decimal(digits + fraction))
        elif suffix in ("st", "nd", "rd", "th"):
            words = num2words(int(digits), to="ordinal")
        elif "," not in integer and _is_year(digits):
            words = num2words(int(digits), to="year")
        else:
            words = num2words(int(digits))
    except OverflowError:
        # Digit strings too long for num2words (ids, phone numbers) are read digit by digit.
        words = " ".join(num2words(int(d)) for d in digits + (fraction or "").lstrip("."))
    if suffix == "s":  # "1990s" -> "nineteen nineties", "80s" -> "eighties"
        words = words[:-1] + "ies" if words.endswith("y") else words + "s"
    if percent:
        words += " percent"
    return f" {words} "


def normalize_text(text: str, *, drop_fillers: bool = False) -> str:
    """Canonical form for WER: lower case, digits spelled out, no punctuation, single spaces.

    Steps, in order: Unicode NFKC; curly apostrophes to ``'``; lower case; a few abbreviations
    spelled out (mr. mister, mrs. missus, dr. doctor, prof. professor, ok okay, & and);
    numbers spelled out with num2words (``13`` thirteen, ``1,000`` one thousand, ``3.5`` three
    point five, ``2nd`` second, ``1990s`` nineteen nineties, ``50%`` fifty percent; a bare
    four-digit 1100-1999 or 2010-2099 is read as a year: ``1813`` eighteen thirteen); every
    other punctuation or symbol character becomes a space (so hyphenated words split:
    "ill-disposed" -> "ill disposed"); apostrophes are kept only inside words ("i'm",
    "there's") and dropped at word edges ("'tis", "speakers'"). With ``drop_fillers`` the
    hesitations um/uh/hmm/mm/mhm/mmm are removed too.

    Not handled on purpose: currency ("$5"), times ("3:30" becomes "three thirty"), British vs
    American spelling, and contractions vs. full forms ("don't" stays "don't").
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    text = _SPELLING_RE.sub(lambda m: f" {_SPELLINGS[m.group(1) or m.group(0)]} ", text)
    text = _NUMBER_RE.sub(_spell_number, text)
    # Punctuation and symbols separate words (num2words output has "," and "-" too).
    text = "".join(" " if ch != "'" and unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    # An apostrophe not between two word characters is quoting, not a contraction.
    text = re.sub(r"\B'|'\B", "", text)
    words = text.split()
    if drop_fillers:
        words = [w for w in words if w not in _FILLERS]
    return " ".join(words)


# --------------------------------------------------------------------------- results


def _ratio(errors: float, reference: float) -> float:
    # No reference at all: perfect if nothing was produced, otherwise unboundedly wrong.
    if reference > 0:
        return errors / reference
    return 0.0 if errors == 0 else math.inf


@dataclass(frozen=True)
class WerResult:
    """Word-level alignment counts; ``rate`` is (S + D + I) / (S + D + hits)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def ref_words(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def hyp_words(self) -> int:
        return self.substitutions + self.insertions + self.hits

    @property
    def rate(self) -> float:
        return _ratio(self.errors, self.ref_words)

    def __add__(self, other: WerResult) -> WerResult:
        if not isinstance(other, WerResult):
            return NotImplemented
        return WerResult(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.hits + other.hits,
        )


@dataclass(frozen=True)
class DerResult:
    """Diarization error times in seconds; ``total`` is scored reference speaker time.

    ``overlap`` is the scored reference time beyond one speaker at a time: what a
    transcript that gives each moment one speaker must miss, however good. It is not an
    error of its own (it is part of ``missed`` for such a transcript), but it says how much
    of a DER no single-speaker labelling can win back.

    ``speaker_map`` (reference -> hypothesis label) is informational and is dropped when
    results are added together.
    """

    missed: float = 0.0
    false_alarm: float = 0.0
    confusion: float = 0.0
    total: float = 0.0
    overlap: float = 0.0
    speaker_map: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def errors(self) -> float:
        return self.missed + self.false_alarm + self.confusion

    @property
    def rate(self) -> float:
        return _ratio(self.errors, self.total)

    def __add__(self, other: DerResult) -> DerResult:
        if not isinstance(other, DerResult):
            return NotImplemented
        return DerResult(
            self.missed + other.missed,
            self.false_alarm + other.false_alarm,
            self.confusion + other.confusion,
            self.total + other.total,
            self.overlap + other.overlap,
        )


_Result = TypeVar("_Result", WerResult, DerResult)


def aggregate(results: Iterable[_Result]) -> _Result:
    """Corpus-level totals: counts are summed, so ``.rate`` is sum(errors) / sum(reference)."""
    items = list(results)
    if not items:
        raise ValueError("aggregate() needs at least one result")
    total = items[0]
    for item in items[1:]:
        total = total + item
    return total


# --------------------------------------------------------------------------- WER / cpWER


def _count(reference: str, hypothesis: str) -> WerResult:
    out = jiwer.process_words(reference, hypothesis)
    return WerResult(out.substitutions, out.deletions, out.insertions, out.hits)


def wer(reference: str, hypothesis: str, *, normalize: bool = True) -> WerResult:
    """Word error counts of ``hypothesis`` against ``reference`` (normalised unless told not)."""
    if normalize:
        reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
    return _count(reference, hypothesis)


def cpwer(
    reference: Mapping[str, str], hypothesis: Mapping[str, str], *, normalize: bool = True
) -> WerResult:
    """Concatenated minimum-permutation WER over per-speaker texts (labels need not match).

    Each value is one speaker's whole text in time order (see :func:`speaker_texts`).
    """
    refs = [normalize_text(t) if normalize else t for t in reference.values()]
    hyps = [normalize_text(t) if normalize else t for t in hypothesis.values()]
    size = max(len(refs), len(hyps))
    if size == 0:
        return WerResult()
    # Padding with empty speakers makes an unpaired speaker cost all its words.
    refs += [""] * (size - len(refs))
    hyps += [""] * (size - len(hyps))
    pairs = [[_count(r, h) for h in hyps] for r in refs]
    cost = np.array([[p.errors for p in row] for row in pairs])
    rows, cols = linear_sum_assignment(cost)
    return aggregate(pairs[r][c] for r, c in zip(rows, cols, strict=True))


# --------------------------------------------------------------------------- DER


@dataclass(frozen=True)
class Turn:
    """One speaker talking from ``start`` to ``end`` seconds."""

    speaker: str
    start: float
    end: float

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"turn ends before it starts: {self}")


def _covered(points: np.ndarray, spans: Sequence[tuple[float, float]]) -> np.ndarray:
    """Which ``points`` fall inside any half-open span ``[start, end)``."""
    if not spans:
        return np.zeros(points.shape, dtype=bool)
    ordered = np.array(sorted(spans), dtype=float)
    starts = ordered[:, 0]
    # Running max of ends: the spans starting at or before a point reach up to this time.
    reach = np.maximum.accumulate(ordered[:, 1])
    idx = np.searchsorted(starts, points, side="right") - 1
    return (idx >= 0) & (points < reach[np.maximum(idx, 0)])


def _activity(turns: Sequence[Turn], speakers: Sequence[str], points: np.ndarray) -> np.ndarray:
    """Boolean (speaker, interval) matrix; a speaker's own overlapping turns count once."""
    rows = [_covered(points, [(t.start, t.end) for t in turns if t.speaker == s]) for s in speakers]
    return np.array(rows, dtype=bool).reshape(len(speakers), len(points))


def der(
    reference: Sequence[Turn],
    hypothesis: Sequence[Turn],
    collar: float = 0.25,
    uem: tuple[float, float] | None = None,
) -> DerResult:
    """Diarization error of ``hypothesis`` turns against ``reference`` turns (md-eval rules).

    ``collar`` seconds either side of every reference turn start and end are not scored.
    ``uem`` limits scoring to ``(start, end)``; by default it spans all turns of both sides.
    """
    if collar < 0:
        raise ValueError("collar must be >= 0")
    ref = [t for t in reference if t.end > t.start]
    hyp = [t for t in hypothesis if t.end > t.start]
    if uem is None:
        if not ref and not hyp:
            return DerResult()
        uem = (min(t.start for t in ref + hyp), max(t.end for t in ref + hyp))
    lo, hi = uem
    if hi <= lo:
        raise ValueError(f"empty uem: {uem}")

    ref_edges = [x for t in ref for x in (t.start, t.end)]
    zones = [(x - collar, x + collar) for x in ref_edges] if collar > 0 else []
    # Every time at which anything changes, so each elementary interval is uniform and
    # its midpoint decides it exactly.
    cuts = [lo, hi, *ref_edges, *(x for t in hyp for x in (t.start, t.end))]
    cuts += [x for zone in zones for x in zone]
    bounds = np.unique(np.clip(np.array(cuts, dtype=float), lo, hi))
    duration = np.diff(bounds)
    mid = (bounds[:-1] + bounds[1:]) / 2
    scored = duration * ~_covered(mid, zones)

    ref_speakers = sorted({t.speaker for t in ref})
    hyp_speakers = sorted({t.speaker for t in hyp})
    ref_act = _activity(ref, ref_speakers, mid)
    hyp_act = _activity(hyp, hyp_speakers, mid)

    # md-eval maps speakers on the whole evaluated region (collars included), then scores.
    overlap = (ref_act * duration) @ hyp_act.T.astype(float)
    speaker_map: dict[str, str] = {}
    correct = 0.0
    if overlap.size:
        for r, h in zip(*linear_sum_assignment(overlap, maximize=True), strict=True):
            if overlap[r, h] > 0:
                speaker_map[ref_speakers[r]] = hyp_speakers[h]
                correct += float(scored @ (ref_act[r] & hyp_act[h]))

    n_ref = ref_act.sum(axis=0)
    n_hyp = hyp_act.sum(axis=0)
    return DerResult(
        missed=float(scored @ np.maximum(n_ref - n_hyp, 0)),
        false_alarm=float(scored @ np.maximum(n_hyp - n_ref, 0)),
        # Clamp float dust: correct time can never exceed the matched speaker time.
        confusion=max(0.0, float(scored @ np.minimum(n_ref, n_hyp)) - correct),
        total=float(scored @ n_ref),
        overlap=float(scored @ np.maximum(n_ref - 1, 0)),
        speaker_map=speaker_map,
    )


# --------------------------------------------------------------------------- file readers


class StmSegment(NamedTuple):
    speaker: str
    start: float
    end: float
    text: str


def _read_source(source: str | Path) -> str:
    # A Path, or a one-line string naming an existing file, is read; anything else is content.
    if isinstance(source, Path):
        return source.read_text(encoding="utf-8")
    if "\n" not in source and source.strip() and Path(source).is_file():
        return Path(source).read_text(encoding="utf-8")
    return source


def _records(text: str, min_fields: int, kind: str) -> Iterable[tuple[int, list[str]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";;"):
            continue
        fields = line.split()
        if len(fields) < min_fields:
            raise ValueError(f"{kind} line {number}: expected {min_fields}+ fields: {line!r}")
        yield number, fields


def read_rttm(source: str | Path) -> dict[str, list[Turn]]:
    """SPEAKER records of an RTTM file (path or text), grouped by file id in file order.

    Fields: ``SPEAKER file chan start duration <NA> <NA> speaker <NA> <NA>``; other record
    types are ignored.
    """
    turns: dict[str, list[Turn]] = {}
    for _, fields in _records(_read_source(source), 9, "RTTM"):
        if fields[0] != "SPEAKER":
            continue
        start, duration = float(fields[3]), float(fields[4])
        # Rounded so start + duration does not leave float dust at turn ends.
        turns.setdefault(fields[1], []).append(Turn(fields[7], start, round(start + duration, 6)))
    return turns


def read_stm(source: str | Path, file_id: str | None = None) -> list[StmSegment]:
    """Segments of an STM file (path or text): ``file chan speaker start end [<label>] text``.

    ``file_id`` keeps only that recording's segments. ``inter_segment_gap`` lines (NIST's
    marker for unscored gaps) are skipped.
    """
    segments = []
    for _, fields in _records(_read_source(source), 5, "STM"):
        if (file_id is not None and fields[0] != file_id) or fields[2] == "inter_segment_gap":
            continue
        words = fields[5:]
        if words and words[0].startswith("<"):  # optional <o,f0,male> label
            while words and not words[0].endswith(">"):
                words = words[1:]
            words = words[1:]
        segments.append(StmSegment(fields[2], float(fields[3]), float(fields[4]), " ".join(words)))
    return segments


def speaker_texts(segments: Iterable[StmSegment]) -> dict[str, str]:
    """Each speaker's text joined in time order: the input :func:`cpwer` expects."""
    texts: dict[str, list[str]] = {}
    for segment in sorted(segments, key=lambda s: (s.start, s.end)):
        texts.setdefault(segment.speaker, []).append(segment.text)
    return {speaker: " ".join(parts) for speaker, parts in texts.items()}
