"""Words that turn final before their utterance ends (local agreement).

Whisper decodes the open utterance again every partial interval, each time continuing
from the words already final (a forced prefix), with all of the utterance's audio in
view. A word becomes final once two decodes in a row agree on it and on every word
before it (the LocalAgreement policy of whisper_streaming, Machacek et al. 2023), and
``holdback_s`` of audio follows it: the last word heard is often cut off, and the next
decode, with more audio, may still change it. When the utterance ends, the final decode
continues from the same prefix, so the words already given out are never revised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hubbub.audio import SAMPLE_RATE
from hubbub.transcript import Word

ECHO_SLACK_S = 0.1  # alignment jitter between a final word's end and the next word
ECHO_WORDS = 3  # a word stretched past the final ones may repeat one of their last this many

_NOT_WORD = re.compile(r"[^\w']+")


def spelling(text: str) -> str:
    """How agreement compares words: case and punctuation aside ("Well," == "well")."""
    return _NOT_WORD.sub("", text.lower())


def agreed(previous: list[str], current: list[str]) -> int:
    """How many leading words two decodes share."""
    n = 0
    for a, b in zip(previous, current, strict=False):
        if a != b:
            break
        n += 1
    return n


@dataclass
class Piece:
    """Words made final together: one final segment."""

    segment_id: str
    speaker: int  # the first guess given with it
    words: list[Word]
    end: float = 0.0  # where its segment ends (past its last word, up to the next one)


@dataclass
class OpenText:
    """The open utterance's final words so far, and what the last decode heard past them."""

    start: int  # the utterance's first sample: a new utterance starts a new OpenText
    words: list[Word] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)  # each final word's tokens
    pieces: list[Piece] = field(default_factory=list)
    guess: list[str] = field(default_factory=list)  # the last decode's words past them

    @property
    def prefix(self) -> list[int]:
        return [t for tokens in self.tokens for t in tokens]

    @property
    def end_s(self) -> float:
        """Where the final words end (the utterance's start if there are none)."""
        return self.words[-1].end if self.words else 0.0

    @property
    def segment_end(self) -> float | None:
        """Where the last final segment of this utterance ends: the next one starts there,
        so the utterance's speech has no holes between its segments."""
        return self.pieces[-1].end if self.pieces else None

    def echoed(self, words: list[Word]) -> int:
        """How many of a decode's leading words repeat the final ones rather than follow
        them: placed before the last final word ends, they are Whisper saying its prefix
        again (seen: "has never been surpassed." then "As never been surpassed"). A word
        that starts before that end and spells one of the last final words is an echo
        too, however far Whisper stretched it (seen: final "surpassed." 32.24-32.60 s,
        then "surpassed." 32.24-33.50 s, given out twice)."""
        if not self.words:
            return 0
        end = self.end_s - ECHO_SLACK_S
        recent = {spelling(w.text) for w in self.words[-ECHO_WORDS:]}
        n = 0
        while n < len(words):
            w = words[n]
            if (w.start + w.end) / 2 >= end and not (w.start < end and spelling(w.text) in recent):
                break
            n += 1
        return n

    def to_commit(
        self, words: list[Word], frontier_s: float, holdback_s: float, after_s: float = 0.0
    ) -> int:
        """How many of a decode's ``words`` (past the final ones, on the session clock)
        are final now: those the previous decode agrees on that end ``holdback_s`` before
        the newest audio, once the utterance is ``after_s`` long. Remembers this decode's
        words for the next one."""
        current = [spelling(w.text) for w in words]
        n = agreed(self.guess, current)
        while n and words[n - 1].end > frontier_s - holdback_s:
            n -= 1
        if frontier_s - self.start / SAMPLE_RATE < after_s:
            n = 0
        self.guess = current[n:]
        return n

    def add(self, piece: Piece, tokens: list[list[int]]) -> None:
        self.words += piece.words
        self.tokens += tokens
        self.pieces.append(piece)

    def split(self, at_s: float, start: int) -> OpenText:
        """Keep the words said before ``at_s`` (where the utterance was cut); the rest go
        to the next utterance, which starts at sample ``start``, as its prefix."""

        def before(w: Word) -> bool:
            return (w.start + w.end) / 2 < at_s

        keep = sum(map(before, self.words))
        later = OpenText(start=start, words=self.words[keep:], tokens=self.tokens[keep:])
        self.words, self.tokens = self.words[:keep], self.tokens[:keep]
        pieces, self.pieces = self.pieces, []
        for p in pieces:  # a piece goes where most of its words went
            side = self.pieces if 2 * sum(map(before, p.words)) >= len(p.words) else later.pieces
            side.append(p)
        return later
