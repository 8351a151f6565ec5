"""One speaker's words as they stream in: the open (partial) tail, and when it turns final.

Tokens arrive with the time of the encoder frame that emitted them. A SentencePiece
piece starting with ``▁`` opens a new word, so the last word stays open until the next
word starts or the speaker pauses. Cache-aware streaming never revises a token, so a
complete word is final at once (``per_word``, the default): each step gives out the words
that the next word's start, or ``word_gap_s`` without a token, completed. Otherwise the
open tail becomes final at a sentence end, after a pause, when it grows past
``max_segment_s``, or on flush. Either way nothing here grows with the length of the
session. Pure Python, so it is tested without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hubbub.transcript import Segment, Word

WORD_START = "▁"
SENTENCE_END = (".", "?", "!")


@dataclass(frozen=True)
class Token:
    id: int
    piece: str
    start: float  # seconds, stream clock
    end: float  # the end of its frame (clipped to the audio)
    overlap: bool = False  # another speaker was active at this frame


@dataclass
class _OpenWord:
    ids: list[int] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    overlap: bool = False


@dataclass
class _Done:
    word: Word
    overlap: bool


class SpeakerWords:
    def __init__(
        self,
        label: str,
        detokenize: Callable[[list[int]], str],
        pause_s: float = 0.8,
        max_segment_s: float = 20.0,
        per_word: bool = True,
        word_gap_s: float = 0.4,
    ) -> None:
        self.label = label
        self.detokenize = detokenize
        self.pause_s = pause_s
        self.max_segment_s = max_segment_s
        self.per_word = per_word
        self.word_gap_s = word_gap_s
        self.words: list[_Done] = []  # complete words of the open segment
        self.current: _OpenWord | None = None
        self.last_token_s = 0.0

    def state(self) -> tuple:
        """Everything ``add`` and ``close`` change, to undo a failed step."""
        cur = self.current
        copy = None if cur is None else _OpenWord(list(cur.ids), cur.start, cur.end, cur.overlap)
        return list(self.words), copy, self.last_token_s

    def restore(self, state: tuple) -> None:
        words, cur, self.last_token_s = state
        self.words = list(words)
        self.current = (
            None if cur is None else _OpenWord(list(cur.ids), cur.start, cur.end, cur.overlap)
        )

    @property
    def open_words(self) -> int:
        return len(self.words) + (self.current is not None)

    @property
    def pending_from(self) -> float | None:
        """Where this speaker's words not yet final begin (None: nothing pending)."""
        if self.words:
            return self.words[0].word.start
        return None if self.current is None else self.current.start

    def add(self, tokens: list[Token]) -> None:
        for tok in tokens:
            if self.current is None or tok.piece.startswith(WORD_START):
                self._complete()
                self.current = _OpenWord(start=tok.start)
            cur = self.current
            cur.ids.append(tok.id)
            cur.end = tok.end
            cur.overlap = cur.overlap or tok.overlap
            self.last_token_s = tok.start

    def close(self, now: float, flush: bool = False) -> list[Segment]:
        """Finals due at stream time ``now`` (the end of the audio stepped so far).

        Their ids are left empty: the engine numbers a step's finals in time order.
        """
        if flush or now - self.last_token_s >= self.pause_s:
            self._complete()
            return self._emit(len(self.words))
        if self.per_word:
            if now - self.last_token_s >= self.word_gap_s:
                self._complete()  # a word's pieces come frames apart, not this far
            return self._emit(len(self.words))
        cut = 0
        for i, done in enumerate(self.words):
            if done.word.text.endswith(SENTENCE_END):
                cut = i + 1
        if cut == 0 and self.words:
            start = self.words[0].word.start
            if now - start >= self.max_segment_s:
                cut = len(self.words)
        return self._emit(cut)

    def partial(self, segment_id: str) -> Segment | None:
        words = [d.word for d in self.words]
        overlap = any(d.overlap for d in self.words)
        if self.current is not None:
            text = self.detokenize(self.current.ids).strip()
            if text:
                words.append(self._word(self.current, text))
                overlap = overlap or self.current.overlap
        if not words:
            return None
        return _segment(segment_id, self.label, words, overlap)

    def _complete(self) -> None:
        cur, self.current = self.current, None
        if cur is None:
            return
        text = self.detokenize(cur.ids).strip()
        if text:
            self.words.append(_Done(self._word(cur, text), cur.overlap))

    @staticmethod
    def _word(cur: _OpenWord, text: str) -> Word:
        return Word(text=text, start=round(cur.start, 3), end=round(cur.end, 3))

    def _emit(self, n: int) -> list[Segment]:
        if n == 0:
            return []
        done, self.words = self.words[:n], self.words[n:]
        words = [d.word for d in done]
        return [_segment("", self.label, words, any(d.overlap for d in done))]


def _segment(segment_id: str, speaker: str, words: list[Word], overlap: bool) -> Segment:
    return Segment(
        id=segment_id,
        speaker=speaker,
        start=words[0].start,
        end=words[-1].end,
        text=" ".join(w.text for w in words),
        words=words,
        overlap=overlap,
    )
