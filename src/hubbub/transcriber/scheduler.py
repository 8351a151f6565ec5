"""One worker thread owns the engine and steps every ready session in one batched call.

The event loop only moves bytes and events: it pushes decoded audio into a stream's
bounded buffer and reads deliveries from the stream's callback. Every method here that
the event loop calls is the one door into a stream: it takes the lock, and a stream's
fields are otherwise touched only by the worker. The worker wakes when any stream has a
full chunk (or a flush is due), takes ONE chunk from each ready stream, calls
``engine.step`` once, and hands each update back. A failure inside a step is retried
per stream, so one bad session ends alone.
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

from hubbub.audio import SAMPLE_RATE
from hubbub.engines.base import ChunkInput, Engine, EngineSession, EngineUpdate, SessionOptions

log = logging.getLogger(__name__)


class SchedulerFull(Exception):
    """No capacity for another session (admission control)."""


class BufferFull(Exception):
    """A session sent audio faster than it can be processed, past its buffer bound."""


@dataclass
class Delivery:
    """What a step produced for one stream: an update, or the error that ended it.

    ``flushed_through`` is the newest flush request (numbered by ``Scheduler.flush``)
    whose audio this step has turned into finals; 0 when none.
    """

    update: EngineUpdate | None
    error: str | None = None
    flushed_through: int = 0
    buffered_s: float = 0.0  # audio still waiting after this step


@dataclass
class Stream:
    """A session as the scheduler sees it: buffered audio in, deliveries out."""

    id: str
    options: SessionOptions
    deliver: Callable[[Delivery], None]
    max_buffer_samples: int
    realtime: bool = True  # a live stream, not a file fed as fast as it is processed
    segment_base: int = 0  # final segments this session already had (a continued session)
    state: str = ""  # the engine's state to continue from (a continued session)
    engine_session: EngineSession | None = None
    buffer: deque[np.ndarray] = field(default_factory=deque)
    buffered: int = 0
    received: int = 0
    flush_requested: int = 0  # numbers flush requests
    flush_cut: int = 0  # the request the buffered audio is being flushed for
    parked: bool = False  # no client attached: takes no compute slot in admission
    closing: bool = False
    failed: bool = False

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

    Each step's cost per session is its time divided by the speech it advanced (sessions
    whose chunk held speech x chunk): silence costs an engine little, so counting it would
    promise room that speech does not have. With N sessions in real time the worker is
    busy N x cost of the time; a new session is admitted while (N + 1) x cost (the mean
    over recent steps: buffers absorb single slow steps) stays under ``target`` and no
    live session lags more than ``max_lag_s``. Until enough steps were seen, the
    engine's own ``capacity`` stands in; a ``fixed`` limit from the operator overrides it.
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

    def observe(self, step_s: float, speaking: int, chunk_s: float) -> None:
        if speaking:
            self.costs.append(step_s / (speaking * chunk_s))

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
                s.flush_requested += 1
            self._cond.notify()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                if not any(s.flush_requested > s.flush_cut or s.buffered for s in self._live()):
                    break
            time.sleep(0.02)
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _live(self) -> list[Stream]:
        return [s for s in self._streams.values() if not s.failed]

    @property
    def active(self) -> int:
        """Streams that hold a compute slot (attached, not parked)."""
        with self._cond:
            return self._holding()

    def _holding(self) -> int:
        return sum(not s.parked for s in self._streams.values())

    @property
    def max_sessions(self) -> int:
        return self.admission.capacity

    def max_lag_s(self) -> float:
        """The most audio any live session has waiting, in seconds."""
        with self._cond:
            live = [s.buffered for s in self._streams.values() if s.realtime]
            return max(live, default=0) / SAMPLE_RATE

    # -- the door the event loop uses ----------------------------------------------------

    def _admit(self, realtime: bool) -> None:
        """Under the lock: raise SchedulerFull unless one more stream fits."""
        capacity = self.admission.capacity
        holding = self._holding()
        if holding >= capacity:
            raise SchedulerFull(f"{holding} of {capacity} sessions in use")
        if realtime:
            lag = max((s.buffered for s in self._streams.values() if s.realtime), default=0)
            if lag / SAMPLE_RATE > self.admission.max_lag_s:
                raise SchedulerFull(f"sessions already lag {lag / SAMPLE_RATE:.1f} s behind")

    def open(
        self,
        stream_id: str,
        options: SessionOptions,
        deliver: Callable[[Delivery], None],
        *,
        realtime: bool = True,
        segment_base: int = 0,
        state: str = "",
    ) -> Stream:
        with self._cond:
            self._admit(realtime)
            stream = Stream(
                stream_id,
                options,
                deliver,
                int(self.max_buffer_s * SAMPLE_RATE),
                realtime,
                segment_base,
                state,
            )
            self._streams[stream_id] = stream
            self._cond.notify()
            return stream

    def park(self, stream: Stream) -> None:
        """Its client is gone for now: the stream keeps its state but gives up its slot."""
        with self._cond:
            stream.parked = True

    def unpark(self, stream: Stream) -> None:
        """Its client is back: take a slot again (SchedulerFull when none is free)."""
        with self._cond:
            if stream.parked:
                self._admit(stream.realtime)
                stream.parked = False

    def push(self, stream: Stream, samples: np.ndarray) -> None:
        if len(samples) == 0:
            return
        with self._cond:
            if stream.closing:
                return
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

    def received(self, stream: Stream) -> int:
        """Samples pushed into this stream so far."""
        with self._cond:
            return stream.received

    def buffered(self, stream: Stream) -> int:
        with self._cond:
            return stream.buffered

    def flush(self, stream: Stream) -> int:
        """Turn everything buffered so far into finals (``finalize`` / ``stop``).

        Returns the request's number: the delivery whose ``flushed_through`` reaches it
        carries the last of those finals. Requests made while one is pending are served
        by the same step, so each is answered, never merged away.
        """
        with self._cond:
            stream.flush_requested += 1
            self._cond.notify()
            return stream.flush_requested

    def close(self, stream: Stream) -> None:
        """Forget the stream once its work is done (or at once if it failed)."""
        with self._cond:
            stream.closing = True
            self._cond.notify()

    def drop(self, stream: Stream) -> None:
        """Forget the stream now, with the audio it still buffers (its session went on
        elsewhere, where the client sends that audio again)."""
        with self._cond:
            stream.buffer.clear()
            stream.buffered = 0
            stream.flush_cut = stream.flush_requested
            stream.closing = True
            self._cond.notify()

    # -- the worker ----------------------------------------------------------------

    def _ready(self) -> bool:
        chunk = self.engine.chunk_samples
        return any(
            s.engine_session is None
            or s.buffered >= chunk
            or s.flush_requested > s.flush_cut
            or (s.closing and not s.buffered)
            for s in self._streams.values()
        )

    def _run(self) -> None:
        while True:
            try:
                with self._cond:
                    while self._running and not self._ready():
                        self._cond.wait(timeout=0.5)
                    if not self._running:
                        break
                    batch = self._collect()
                if batch:
                    self._step(batch)
            except Exception:  # a bug here must not stop every session: log, go on
                log.exception("scheduler worker: unexpected error")
                time.sleep(0.1)

    def _restore(self, s: Stream) -> None:
        assert s.engine_session is not None
        try:
            self.engine.restore(s.engine_session, s.state)
        except Exception:  # a state it cannot read: the session goes on, its speakers new
            log.warning("session %s: engine state not restored", s.id, exc_info=True)
        s.state = ""

    def _collect(self) -> list[tuple[Stream, ChunkInput, int]]:
        """Under the lock: open new sessions, drop closed ones, cut one chunk per stream."""
        chunk = self.engine.chunk_samples
        batch: list[tuple[Stream, ChunkInput, int]] = []
        for s in list(self._streams.values()):
            if s.engine_session is None:
                s.engine_session = self.engine.open_session(s.id, s.options)
                s.engine_session.segments_out = s.segment_base
                if s.state:
                    self._restore(s)
            pending = s.flush_requested > s.flush_cut
            if s.failed or (s.closing and not s.buffered and not pending):
                del self._streams[s.id]
                self._close_engine_session(s)
                continue
            if s.buffered >= chunk:
                audio = s.take(chunk)
                flush = pending and s.buffered == 0
            elif pending:
                audio, flush = s.take(s.buffered), True
            else:
                continue
            through = 0
            if flush:
                s.flush_cut = through = s.flush_requested
            behind = s.buffered / SAMPLE_RATE if s.realtime else 0.0
            item = ChunkInput(s.engine_session, audio, flush=flush, behind_s=behind)
            batch.append((s, item, through))
        return batch

    def _close_engine_session(self, s: Stream) -> None:
        try:
            if s.engine_session is not None:
                self.engine.close_session(s.engine_session)
        except Exception:
            log.exception("closing session %s failed", s.id)

    def _step(self, batch: list[tuple[Stream, ChunkInput, int]]) -> None:
        items = [item for _, item, _ in batch]
        t0 = time.perf_counter()
        try:
            updates: list[EngineUpdate | str] = list(self.engine.step(items))
        except Exception:
            log.exception("batched step failed; retrying sessions one by one")
            updates = [self._step_one(item) for item in items]
        dt = time.perf_counter() - t0
        self.stats.steps += 1
        self.stats.last_step_s = dt
        self.stats.last_batch = len(batch)
        speaking = sum(isinstance(u, EngineUpdate) and not u.idle for u in updates)
        self.admission.observe(dt, speaking, self.engine.chunk_samples / SAMPLE_RATE)
        if self.on_step:
            self.on_step(dt, len(batch))
        for (stream, _, through), upd in zip(batch, updates, strict=True):
            with self._cond:
                waiting = stream.buffered / SAMPLE_RATE
                if isinstance(upd, str):
                    stream.failed = True
            try:
                if isinstance(upd, str):
                    stream.deliver(Delivery(None, error=upd))
                else:
                    stream.deliver(Delivery(upd, flushed_through=through, buffered_s=waiting))
            except Exception:  # a closed event loop, say: that stream's problem alone
                log.exception("delivering to session %s failed", stream.id)

    def _step_one(self, item: ChunkInput) -> EngineUpdate | str:
        try:
            return self.engine.step([item])[0]
        except Exception as exc:
            log.exception("session %s failed", item.session.id)
            return f"{exc.__class__.__name__}: {exc}"


def threadsafe_queue_put(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Delivery]
) -> Callable[[Delivery], None]:
    """A ``deliver`` callback that hands worker results to an asyncio queue."""

    def deliver(item: Delivery) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    return deliver
