"""Cut a stream into utterances from per-frame speech probabilities.

An utterance opens when a frame is confidently speech (with a little audio before it,
so soft onsets are kept), and closes after ``min_silence_s`` of non-speech, or when it
reaches ``max_utterance_s`` (so cost and latency stay bounded while someone talks
without pause). A cut at the length bound goes where the last ``cut_search_s`` were
least speech-like (a breath between words, not the middle of one), and the next
utterance starts there. Only the open utterance's audio is kept: memory does not grow
with the length of the session.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hubbub.audio import SAMPLE_RATE
from hubbub.engines.cpu.config import UtteranceConfig
from hubbub.engines.cpu.vad import FRAME


@dataclass
class Utterance:
    start: int  # absolute sample index of the first sample
    audio: np.ndarray

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def end(self) -> int:
        """Absolute sample index just past the last sample."""
        return self.start + len(self.audio)

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


@dataclass
class UtteranceTracker:
    config: UtteranceConfig = field(default_factory=UtteranceConfig)
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    buffer_start: int = 0  # absolute sample index of buffer[0]
    scored: int = 0  # absolute samples covered by VAD frames so far
    open_start: int | None = None  # start of the open utterance, if any
    speech_frames: int = 0
    silent_frames: int = 0
    last_end: int = 0  # end of the last closed utterance: the next may not start before
    # (frame start, speech probability) of the open utterance's latest frames
    recent: deque[tuple[int, float]] = field(default_factory=deque)

    @property
    def in_speech(self) -> bool:
        return self.open_start is not None

    def settled(self) -> int:
        """Absolute sample before which no utterance can still begin or grow."""
        if self.open_start is not None:
            return self.open_start
        pad = int(self.config.speech_pad_s * SAMPLE_RATE)
        return max(self.last_end, self.scored - pad, 0)

    def open_utterance(self) -> Utterance | None:
        if self.open_start is None:
            return None
        a = self.open_start - self.buffer_start
        return Utterance(self.open_start, self.buffer[a:])

    def push(self, samples: np.ndarray, probs: np.ndarray) -> list[Utterance]:
        """Add audio and the VAD scores of the frames it completed; return closed utterances."""
        cfg = self.config
        self.buffer = np.concatenate([self.buffer, samples])
        done: list[Utterance] = []
        pad = int(cfg.speech_pad_s * SAMPLE_RATE)
        min_silence = int(cfg.min_silence_s * SAMPLE_RATE / FRAME)
        max_len = int(cfg.max_utterance_s * SAMPLE_RATE)
        search = max(1, int(cfg.cut_search_s * SAMPLE_RATE / FRAME))
        for p in probs:
            frame_start = self.scored
            self.scored += FRAME
            if self.open_start is None:
                if p >= cfg.onset:
                    self.open_start = max(self.buffer_start, self.last_end, frame_start - pad)
                    self.speech_frames, self.silent_frames = 1, 0
                    self.recent.clear()
                continue
            self.recent.append((frame_start, float(p)))
            if len(self.recent) > search:
                self.recent.popleft()
            if p < cfg.offset:
                self.silent_frames += 1
            else:
                self.silent_frames = 0
                self.speech_frames += 1
            if self.silent_frames >= min_silence:
                end = self.scored - self.silent_frames * FRAME + pad
                done += self._close(end)
            elif self.scored - self.open_start >= max_len:
                done += self._cut()
        self._trim(pad)
        return done

    def _cut(self) -> list[Utterance]:
        """Still talking at the length bound: end the utterance at the quietest recent
        frame (the latest, of equals) and open the next one there."""
        assert self.open_start is not None
        bound = self.open_start + int(self.config.max_utterance_s * SAMPLE_RATE)
        fits = [fp for fp in self.recent if fp[0] + FRAME // 2 <= bound] or list(self.recent)
        quiet, _ = min(reversed(fits), key=lambda fp: fp[1])
        cut = quiet + FRAME // 2
        after = [p for start, p in self.recent if start >= quiet]
        done = self._close(cut)
        self.open_start = cut
        self.speech_frames = sum(p >= self.config.offset for p in after)
        self.recent = deque((s, p) for s, p in self.recent if s > quiet)
        return done

    def flush(self) -> list[Utterance]:
        """End of input (or an explicit finalize): close whatever is open."""
        if self.open_start is None:
            return []
        return self._close(self.buffer_start + len(self.buffer))

    def _close(self, end: int) -> list[Utterance]:
        assert self.open_start is not None
        start = self.open_start
        self.last_end = end
        enough = self.speech_frames * FRAME >= self.config.min_speech_s * SAMPLE_RATE
        self.open_start = None
        self.speech_frames = self.silent_frames = 0
        if not enough:
            return []
        a, b = start - self.buffer_start, end - self.buffer_start
        return [Utterance(start, self.buffer[a:b].copy())]

    def _trim(self, keep: int) -> None:
        # Keep the open utterance, or a short pre-roll for the next onset.
        first = self.open_start if self.open_start is not None else self.scored - keep
        drop = max(0, first - self.buffer_start)
        if drop:
            self.buffer = self.buffer[drop:]
            self.buffer_start += drop


@dataclass
class Heard:
    """The latest chunks as a tracker took them (up to ``max_s`` of audio), so that they
    can be cut again with other thresholds: a phone call is known only after a second or
    two of it, and its first words were cut with thresholds that miss them."""

    max_s: float = 5.0
    # (absolute index of the chunk's first sample, the tracker's ``scored`` then, audio,
    # the VAD scores of the frames it completed)
    chunks: deque[tuple[int, int, np.ndarray, np.ndarray]] = field(default_factory=deque)
    samples: int = 0

    def add(self, tracker: UtteranceTracker, audio: np.ndarray, probs: np.ndarray) -> None:
        """Note a chunk before ``tracker`` takes it."""
        at = tracker.buffer_start + len(tracker.buffer)
        self.chunks.append((at, tracker.scored, audio, probs))
        self.samples += len(audio)
        while self.samples - len(self.chunks[0][2]) >= self.max_s * SAMPLE_RATE:
            self.samples -= len(self.chunks.popleft()[2])

    def holds(self, tracker: UtteranceTracker) -> bool:
        """Whether these chunks hold ``tracker``'s open utterance whole (or it has none)."""
        if not self.chunks:
            return False
        return tracker.open_start is None or tracker.open_start >= self.chunks[0][0]

    def recut(self, config: UtteranceConfig) -> tuple[UtteranceTracker, list[Utterance]]:
        """A tracker with ``config`` that took these chunks instead, and what it closed."""
        if not self.chunks:
            raise ValueError("nothing heard to cut again")
        first, scored = self.chunks[0][:2]
        tracker = UtteranceTracker(config, buffer_start=first, scored=scored, last_end=first)
        done: list[Utterance] = []
        for _, _, audio, probs in self.chunks:
            done += tracker.push(audio, probs)
        return tracker, done
