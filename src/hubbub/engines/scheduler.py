"""One worker thread owns the engine and steps every ready session in one batched call.

The async server side only moves bytes and events: it pushes decoded audio into a
session's bounded buffer and reads updates from the session's queue. The worker wakes
when any session has a full chunk (or a flush is due), takes ONE chunk from each ready
session, calls ``engine.step`` once, and hands each update back to the event loop.
A failure inside a step is retried per session, so one bad session ends alone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hubbub.engines.base import SAMPLE_RATE, ChunkInput, Engine, EngineSession, EngineUpdate
from hubbub.engines.base import SessionOptions as EngineOptions

log = logging.getLogger(__name__)


class SchedulerFull(Exception):
    """No capacity for another session (admission control)."""


class BufferFull(Exception):
    """A session sent audio faster than it can be processed, past its buffer bound."""


@dataclass
class Delivery:
    """What a step produced for one stream: an update, or the error that ended it."""

    update: EngineUpdate | None
    error: str | None = None
    flushed: bool = False  # this step turned all audio buffered at a flush into finals


@dataclass
class Stream:
    """A session as the scheduler sees it: buffered audio in, updates out."""

    id: str
    options: EngineOptions
    deliver: Callable[[Delivery], None]
    max_buffer_samples: int
    realtime: bool = True  # a live stream, not a file fed as fast as it is processed
    engine_session: EngineSession | None = None
    buffer: deque[np.ndarray] = field(default_factory=deque)
    buffered: int = 0
    received: int = 0
    flush_pending: int = 0
    closing: bool = False
    failed: bool = False

    @property
    def received_s(self) -> float:
        return self.received / SAMPLE_RATE

    def take(self, n: int) -> np.ndarray:
        parts, got = [], 0
        while self.buffer and got < n:
            piece = self.buffer.popleft()
            if got + len(piece) > n:
                cut = n - got
                self.buffer.appendleft(piece[cut:])
                piece = piece[:cut]
            parts.append(piece)
            got += len(piece)
        self.buffered -= got
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@dataclass
class StepStats:
    steps: int = 0
    last_step_s: float = 0.0
    last_batch: int = 0


class Admission:
    """How many live sessions fit, from what steps have really cost.

    Each step's cost per session is its time divided by the audio it advanced
    (sessions x chunk). With N sessions in real time the worker is busy N x cost of the
    time; a new session is admitted while (N + 1) x cost (the mean over recent steps:
    buffers absorb single slow steps) stays under ``target`` and no live session lags
    more than ``max_lag_s``. Until enough steps were seen, the engine's own ``capacity``
    stands in; a ``fixed`` limit from the operator overrides the measurement.
    """

    def __init__(
        self,
        prior: int,
        hard_cap: int,
        fixed: bool = False,
        target: float = 0.8,
        max_lag_s: float = 2.0,
    ):
        self.prior = prior
        self.hard_cap = hard_cap
        self.fixed = fixed
        self.target = target
        self.max_lag_s = max_lag_s
        self.costs: deque[float] = deque(maxlen=300)

    def observe(self, step_s: float, sessions: int, chunk_s: float) -> None:
        if sessions:
            self.costs.append(step_s / (sessions * chunk_s))

    @property
    def capacity(self) -> int:
        if self.fixed or len(self.costs) < 50:
            return min(self.prior, self.hard_cap)
        cost = float(np.mean(np.asarray(self.costs)))
        return max(1, min(self.hard_cap, int(self.target / max(cost, 1e-6))))


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        max_sessions: int = 0,
        max_buffer_s: float = 30.0,
        on_step: Callable[[float, int], None] | None = None,
    ) -> None:
        self.engine = engine
        # max_sessions > 0 is a fixed limit; 0 lets measured capacity decide.
        self.admission = Admission(
            prior=max_sessions or engine.capacity,
            hard_cap=max_sessions or max(64, 2 * engine.capacity),
            fixed=max_sessions > 0,
        )
        self.max_buffer_s = max_buffer_s
        self.on_step = on_step
        self.stats = StepStats()
        self._streams: dict[str, Stream] = {}
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="hubbub-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Flush every session, then stop the worker (pending finals are delivered)."""
        with self._cond:
            for s in self._streams.values():
                s.flush_pending += 1
            self._cond.notify()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not any(s.flush_pending or s.buffered for s in self._streams.values()):
                    break
            time.sleep(0.02)
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def active(self) -> int:
        with self._cond:
            return len(self._streams)

    @property
    def max_sessions(self) -> int:
        return self.admission.capacity

    def max_lag_s(self) -> float:
        """The most audio any live session has waiting, in seconds."""
        with self._cond:
            live = [s.buffered for s in self._streams.values() if s.realtime]
            return max(live, default=0) / SAMPLE_RATE

    # -- called from the async side ----------------------------------------------------

    def open(
        self,
        stream_id: str,
        options: EngineOptions,
        deliver: Callable[[Delivery], None],
        *,
        realtime: bool = True,
    ) -> Stream:
        capacity = self.admission.capacity
        lag = self.max_lag_s()
        with self._cond:
            if len(self._streams) >= capacity:
                raise SchedulerFull(f"{len(self._streams)} of {capacity} sessions in use")
            if realtime and lag > self.admission.max_lag_s:
                raise SchedulerFull(f"sessions already lag {lag:.1f} s behind")
            stream = Stream(
                stream_id, options, deliver, int(self.max_buffer_s * SAMPLE_RATE), realtime
            )
            self._streams[stream_id] = stream
            self._cond.notify()
            return stream

    def push(self, stream: Stream, samples: np.ndarray) -> None:
        if len(samples) == 0:
            return
        with self._cond:
            if stream.buffered + len(samples) > stream.max_buffer_samples:
                raise BufferFull(
                    f"more than {self.max_buffer_s:.0f} s of audio waiting to be processed"
                )
            stream.buffer.append(samples.astype(np.float32, copy=False))
            stream.buffered += len(samples)
            stream.received += len(samples)
            if stream.buffered >= self.engine.chunk_samples:
                self._cond.notify()

    def room(self, stream: Stream) -> int:
        """Samples that may still be pushed without overflowing the buffer."""
        with self._cond:
            return stream.max_buffer_samples - stream.buffered

    def flush(self, stream: Stream) -> None:
        """Turn everything buffered so far into finals (``finalize`` / ``stop``)."""
        with self._cond:
            stream.flush_pending += 1
            self._cond.notify()

    def close(self, stream: Stream) -> None:
        """Forget the session once its work is done (or at once if it failed)."""
        with self._cond:
            stream.closing = True
            self._cond.notify()

    # -- the worker ----------------------------------------------------------------

    def _ready(self) -> bool:
        chunk = self.engine.chunk_samples
        return any(
            s.engine_session is None
            or s.buffered >= chunk
            or s.flush_pending
            or (s.closing and not s.buffered)
            for s in self._streams.values()
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._running and not self._ready():
                    self._cond.wait(timeout=0.5)
                if not self._running:
                    break
                batch = self._collect()
            if batch:
                self._step(batch)

    def _collect(self) -> list[ChunkInput]:
        """Under the lock: open new sessions, drop closed ones, cut one chunk per session."""
        chunk = self.engine.chunk_samples
        batch: list[ChunkInput] = []
        for s in list(self._streams.values()):
            if s.engine_session is None:
                s.engine_session = self.engine.open_session(s.id, s.options)
            if s.failed or (s.closing and not s.buffered and not s.flush_pending):
                self.engine.close_session(s.engine_session)
                del self._streams[s.id]
                continue
            if s.buffered >= chunk:
                audio = s.take(chunk)
                flush = bool(s.flush_pending) and s.buffered == 0
            elif s.flush_pending:
                audio, flush = s.take(s.buffered), True
            else:
                continue
            if flush:
                s.flush_pending = 0
            batch.append(ChunkInput(s.engine_session, audio, flush=flush))
        return batch

    def _step(self, batch: list[ChunkInput]) -> None:
        t0 = time.perf_counter()
        try:
            updates: list[EngineUpdate | str] = list(self.engine.step(batch))
        except Exception:
            log.exception("batched step failed; retrying sessions one by one")
            updates = [self._step_one(item) for item in batch]
        dt = time.perf_counter() - t0
        self.stats.steps += 1
        self.stats.last_step_s = dt
        self.stats.last_batch = len(batch)
        self.admission.observe(dt, len(batch), self.engine.chunk_samples / SAMPLE_RATE)
        if self.on_step:
            self.on_step(dt, len(batch))
        by_id = {s.engine_session.id: s for s in self._streams.values() if s.engine_session}
        for item, upd in zip(batch, updates, strict=True):
            stream = by_id.get(item.session.id)
            if stream is None:
                continue
            if isinstance(upd, str):
                stream.failed = True
                stream.deliver(Delivery(None, error=upd))
            else:
                stream.deliver(Delivery(upd, flushed=item.flush))

    def _step_one(self, item: ChunkInput) -> EngineUpdate | str:
        try:
            return self.engine.step([item])[0]
        except Exception as exc:
            log.exception("session %s failed", item.session.id)
            return f"{exc.__class__.__name__}: {exc}"


def threadsafe_queue_put(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue
) -> Callable[[Delivery], None]:
    """A ``deliver`` callback that hands worker results to an asyncio queue."""

    def deliver(item: Delivery) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    return deliver
