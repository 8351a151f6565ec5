"""The engine contract every backend fulfils (CPU Whisper stack, NeMo multitalker).

An engine turns the audio of many live sessions into speaker-attributed segments. It is
driven by one thread (engines are not re-entrant): the scheduler buffers each session's
PCM, and whenever sessions have a full ``chunk_samples`` buffered it calls ``step`` ONCE
with one chunk from each of them, so the engine can batch the work across sessions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hubbub.audio import SAMPLE_RATE
from hubbub.transcript import Segment


@dataclass(frozen=True)
class SessionOptions:
    language: str | None = None
    max_speakers: int | None = None  # None: the engine's own ceiling


@dataclass
class EngineSession:
    """Per-session state owned by an engine; subclasses add what their models need."""

    id: str
    options: SessionOptions
    samples_in: int = 0  # audio stepped so far: the session clock
    segments_out: int = 0  # final segments emitted, for stable ids

    @property
    def audio_s(self) -> float:
        return self.samples_in / SAMPLE_RATE

    def next_segment_id(self) -> str:
        self.segments_out += 1
        return f"{self.id}-{self.segments_out}"


@dataclass
class ChunkInput:
    """One session's share of a step: its next chunk, and whether to flush everything.

    ``flush`` is set on ``finalize``/``stop``: the engine must then turn all audio it
    holds for the session into finals (the chunk may be shorter than ``chunk_samples``).
    ``behind_s``: a live session's audio still waiting after this chunk (0 for a file):
    an engine may do less optional work, such as refreshing partials, to catch up.
    """

    session: EngineSession
    audio: np.ndarray
    flush: bool = False
    behind_s: float = 0.0


@dataclass
class EngineUpdate:
    """What one step produced for one session.

    ``finals`` are new immutable segments; ``partials`` is the complete current tail
    (one segment per speaker still talking) and replaces the previous one.
    ``committed_s``: the session's audio before this point is settled (in finals given
    out, or silence); what follows may still become finals. ``idle``: the step did no
    recognition work for this session (silence), so it says little about capacity.
    ``relabel``: finals given out earlier whose speaker a second look revised (their text
    and times never change). ``state``: when it changed, what the engine needs to continue
    the session on another replica (Engine.restore), as JSON; None when unchanged.
    """

    session: EngineSession
    finals: list[Segment] = field(default_factory=list)
    partials: list[Segment] = field(default_factory=list)
    committed_s: float = 0.0
    idle: bool = False
    relabel: dict[str, str] = field(default_factory=dict)  # segment id -> its new speaker
    state: str | None = None

    @property
    def audio_processed_s(self) -> float:
        return self.session.audio_s


class UnsupportedOptions(ValueError):
    """Session options this engine cannot serve (a message fit to show a user)."""


class Engine(ABC):
    name: str = "engine"
    chunk_samples: int = SAMPLE_RATE // 2
    max_speakers: int = 4
    capacity: int = 2  # live sessions this engine holds in real time on its hardware
    languages: frozenset[str] | None = None  # what it transcribes; None: any language

    def check(self, options: SessionOptions) -> None:
        """Raise UnsupportedOptions before a session is opened with ``options``."""
        lang = options.language
        if lang is not None and self.languages is not None and lang not in self.languages:
            known = ", ".join(sorted(self.languages))
            raise UnsupportedOptions(
                f"language {lang!r}: this server's {self.name} engine transcribes {known} only"
            )

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Load and exercise models once so the first real stream starts fast."""

    @abstractmethod
    def open_session(self, session_id: str, options: SessionOptions) -> EngineSession: ...

    @abstractmethod
    def close_session(self, session: EngineSession) -> None: ...

    def restore(self, session: EngineSession, state: str) -> None:  # noqa: B027 - optional
        """Continue a session from the ``state`` another replica's updates carried (its
        speakers' voices, say), just after ``open_session``. By default nothing carries
        over: a continued session's speakers are new to it."""

    @abstractmethod
    def step(self, batch: Sequence[ChunkInput]) -> list[EngineUpdate]:
        """Advance every session in ``batch`` by its chunk, in one batched call."""
