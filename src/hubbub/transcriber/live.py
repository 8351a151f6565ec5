"""``WS /v1/stream``: live sessions over protocol v1 (hubbub.protocol), with resume.

A ``LiveSession`` outlives its connection. Its pump task turns engine updates into
numbered ``transcript`` messages, writing every final to the store before sending it.
A connection that drops without ``stop`` leaves the session parked for a grace period:
the engine keeps the same speakers and clock, finals keep being stored, and a client
that reconnects with ``session_id`` + ``last_seq`` gets every final it missed and
continues. When the grace period ends, the buffered audio is flushed into finals, so a
disconnect mid-stream loses nothing that was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from fastapi import WebSocket
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from hubbub.audio import SAMPLE_RATE, AudioError, PcmDecoder
from hubbub.engines.base import SessionOptions
from hubbub.engines.scheduler import (
    BufferFull,
    Delivery,
    SchedulerFull,
    Stream,
    threadsafe_queue_put,
)
from hubbub.protocol import (
    CLOSE_NORMAL,
    ERROR_CLOSE_CODES,
    Ended,
    ErrorMessage,
    Finalize,
    Ping,
    Pong,
    Ready,
    Start,
    Stop,
    TranscriptUpdate,
    client_message,
)
from hubbub.security import client_id, websocket_refusal
from hubbub.transcriber.service import Service
from hubbub.transcript import Segment

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 1.0


class SessionError(Exception):
    """Ends a connection with an ``error`` message and the close code for ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"][1:]) or "message"
    return f"{where}: {err['msg']}"


def parse_start(raw: str) -> Start:
    try:
        msg = client_message.validate_json(raw)
    except ValidationError as exc:
        fields = {str(e["loc"][1]) for e in exc.errors() if len(e["loc"]) > 1}
        code = "unsupported_audio" if fields & {"encoding", "sample_rate", "channels"} else None
        raise SessionError(code or "bad_message", _first_error(exc)) from exc
    if not isinstance(msg, Start):
        raise SessionError("no_start", f"the first message must be 'start', got {msg.type!r}")
    return msg


class Arrivals:
    """When each stretch of audio arrived, to measure final latency (bounded)."""

    def __init__(self) -> None:
        self._marks: deque[tuple[float, float]] = deque()

    def mark(self, received_s: float) -> None:
        self._marks.append((received_s, time.monotonic()))

    def latency(self, audio_s: float) -> float | None:
        while len(self._marks) > 1 and self._marks[1][0] <= audio_s:
            self._marks.popleft()
        for received_s, at in self._marks:
            if received_s >= audio_s:
                return time.monotonic() - at
        return None


def _shift(seg: Segment, offset: float) -> Segment:
    if not offset:
        return seg
    words = [
        w.model_copy(update={"start": w.start + offset, "end": w.end + offset}) for w in seg.words
    ]
    return seg.model_copy(
        update={"start": seg.start + offset, "end": seg.end + offset, "words": words}
    )


class LiveSession:
    """One session: its scheduler stream, its numbering, and whichever socket is attached."""

    def __init__(self, svc: Service, session_id: str, start: Start, offset_s: float, seq: int):
        self.svc = svc
        self.id = session_id
        self.start = start
        self.offset_s = offset_s  # clock of a session continued after its engine state was lost
        self.seq = seq
        self.decoder = PcmDecoder(start.sample_rate, start.channels)
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.stream: Stream | None = None
        self.ws: WebSocket | None = None
        self.send_lock = asyncio.Lock()
        self.arrivals = Arrivals()
        self.last_partials: list[Segment] = []
        self.last_sent = 0.0
        self.counted_s = 0.0
        self.reported_s = 0.0  # audio_processed_s of the last update sent
        self.segments = 0
        self.flushes = 0
        self.stopping = False
        self.done = asyncio.Event()
        self.error: tuple[str, str] | None = None
        self.pump: asyncio.Task | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.closing_old: asyncio.Task | None = None  # a replaced socket being closed

    # -- lifecycle ----------------------------------------------------------------

    def open(self) -> None:
        loop = asyncio.get_running_loop()
        options = SessionOptions(language=self.start.language, max_speakers=self.start.max_speakers)
        self.stream = self.svc.scheduler.open(
            self.id, options, threadsafe_queue_put(loop, self.queue), realtime=self.start.realtime
        )
        self.pump = asyncio.create_task(self._pump())
        self.svc.metrics.sessions_active.inc()

    @property
    def received_s(self) -> float:
        return self.offset_s + (self.stream.received_s if self.stream else 0.0)

    @property
    def attached(self) -> bool:
        ws = self.ws
        return (
            ws is not None
            and ws.client_state == WebSocketState.CONNECTED
            and ws.application_state == WebSocketState.CONNECTED
        )

    async def send(self, message: BaseModel) -> None:
        if not self.attached:
            return
        assert self.ws is not None
        async with self.send_lock:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.send_text(message.model_dump_json())

    def flush(self, final: bool = False) -> None:
        assert self.stream is not None
        if self.stream.closing:
            return
        tail = self.decoder.flush()
        if len(tail):
            with contextlib.suppress(BufferFull):
                self.svc.scheduler.push(self.stream, tail)
        self.flushes += 1
        self.svc.scheduler.flush(self.stream)
        if final:
            self.stopping = True
            self.stream.closing = True

    def park(self, grace_s: float) -> None:
        """The client vanished: keep everything for ``grace_s``, then flush and end."""
        self.ws = None
        self.expiry = asyncio.get_running_loop().call_later(grace_s, self.flush, True)

    def unpark(self, ws: WebSocket) -> None:
        """Attach ``ws``; a client reconnecting before its old socket died takes over."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        old, self.ws = self.ws, ws
        if old is not None and old is not ws:
            self.closing_old = asyncio.create_task(_close_quietly(old, CLOSE_NORMAL, "taken over"))

    # -- audio and control from the attached client -----------------------------------

    def audio(self, data: bytes) -> None:
        s = self.svc.settings
        assert self.stream is not None
        if len(data) > s.max_frame_bytes:
            raise SessionError(
                "frame_too_large", f"frame of {len(data)} bytes > {s.max_frame_bytes}"
            )
        samples = self.decoder.decode(data)
        if self.received_s + len(samples) / SAMPLE_RATE > s.max_session_s:
            raise SessionError(
                "session_too_long", f"sessions are limited to {s.max_session_s:.0f} s"
            )
        try:
            self.svc.scheduler.push(self.stream, samples)
        except BufferFull as exc:
            raise SessionError("buffer_full", f"{exc}: send audio in real time") from exc
        self.arrivals.mark(self.stream.received_s)

    # -- engine updates -> transcript messages ------------------------------------------

    async def _pump(self) -> None:
        try:
            while True:
                d = await self.queue.get()
                if d.error is not None:
                    self.error = ("engine_error", d.error)
                    self.svc.metrics.errors.labels("engine_error").inc()
                    if self.attached:
                        assert self.ws is not None
                        await _fail(self.ws, *self.error)
                    return
                self.flushes -= d.flushed
                await self._publish(d)
                if self.stopping and d.flushed and self.flushes <= 0:
                    return
        finally:
            self._end()

    async def _publish(self, d: Delivery) -> None:
        upd = d.update
        assert upd is not None and self.stream is not None
        now = time.monotonic()
        finals = [_shift(s, self.offset_s) for s in upd.finals]
        partials = [_shift(s, self.offset_s) for s in upd.partials]
        changed = partials != self.last_partials
        # A drained buffer is always reported, so a client waiting on progress hears it.
        drained = self.stream.buffered == 0 and upd.audio_processed_s > self.reported_s
        if not (
            finals or changed or drained or d.flushed or now - self.last_sent >= PROGRESS_EVERY_S
        ):
            return
        self.reported_s = upd.audio_processed_s
        self.seq += 1
        processed = self.offset_s + upd.audio_processed_s
        lag = max(0.0, self.received_s - processed)
        m = self.svc.metrics
        m.audio_seconds.inc(max(0.0, processed - self.offset_s - self.counted_s))
        self.counted_s = processed - self.offset_s
        m.lag_seconds.observe(lag)
        if finals:
            # Stored before it is sent: a final the client saw is always in the store.
            self.svc.store.add_finals(self.id, self.seq, finals, processed)
            m.finals.inc(len(finals))
            for seg in upd.finals:
                latency = self.arrivals.latency(seg.end)
                if latency is not None:
                    m.final_latency.observe(latency)
            self.segments += len(finals)
        self.last_partials = partials
        self.last_sent = now
        await self.send(
            TranscriptUpdate(
                seq=self.seq,
                finals=finals,
                partials=partials,
                audio_received_s=round(self.received_s, 3),
                audio_processed_s=round(processed, 3),
                lag_s=round(lag, 3),
            )
        )

    def _end(self) -> None:
        assert self.stream is not None
        self.svc.scheduler.close(self.stream)
        self.svc.metrics.sessions_active.dec()
        self.svc.live.pop(self.id, None)
        status = "failed" if self.error else ("ended" if self.attached else "disconnected")
        self.svc.store.set_status(self.id, status)
        self.done.set()


# -- one connection -------------------------------------------------------------------


async def handle_stream(ws: WebSocket, svc: Service) -> None:
    await ws.accept()
    refusal = websocket_refusal(svc.settings, ws)
    if refusal is not None:
        svc.metrics.sessions_refused.labels(refusal[0]).inc()
        await _fail(ws, *refusal)
        return
    client = client_id(svc.settings, ws)
    if svc.connections[client] >= svc.settings.max_connections_per_client:
        svc.metrics.sessions_refused.labels("too_many_connections").inc()
        limit = svc.settings.max_connections_per_client
        await _fail(ws, "too_many_connections", f"at most {limit} streams per client")
        return
    svc.connections[client] += 1
    try:
        await _connection(ws, svc)
    finally:
        svc.connections[client] -= 1


async def _connection(ws: WebSocket, svc: Service) -> None:
    session: LiveSession | None = None
    try:
        session = await _handshake(ws, svc)
        await _receive(ws, session, svc)
    except SessionError as exc:
        svc.metrics.errors.labels(exc.code).inc()
        if session is not None:
            session.flush(final=True)  # what was sent before the error is still transcribed
        await _fail(ws, exc.code, exc.message)
        return
    except (WebSocketDisconnect, TimeoutError):
        # Park only if this socket still owns the session (not if another took it over).
        owner = session is not None and session.ws is ws
        if owner and not session.stopping and not session.done.is_set():
            session.park(svc.settings.resume_grace_s)
        return
    # ``stop``: the pump finishes the flush, then the client hears ``ended``.
    await session.done.wait()
    if session.error:
        await _fail(ws, *session.error)
        return
    await session.send(
        Ended(
            session_id=session.id,
            seq=session.seq,
            audio_processed_s=round(session.received_s, 3),
            segments=session.segments,
        )
    )
    with contextlib.suppress(RuntimeError):
        await ws.close(CLOSE_NORMAL)


async def _close_quietly(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await ws.close(code, reason=reason)


async def _fail(ws: WebSocket, code: str, message: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await ws.send_text(ErrorMessage(code=code, message=message).model_dump_json())
        await ws.close(ERROR_CLOSE_CODES.get(code, 1011), reason=code)


async def _handshake(ws: WebSocket, svc: Service) -> LiveSession:
    msg = await asyncio.wait_for(ws.receive(), timeout=svc.settings.idle_timeout_s)
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    if msg.get("text") is None:
        raise SessionError("no_start", "the first message must be a JSON 'start' message")
    start = parse_start(msg["text"])
    try:
        session, resumed = _attach(svc, start)
    except AudioError as exc:
        raise SessionError("unsupported_audio", str(exc)) from exc
    except SchedulerFull as exc:
        svc.metrics.sessions_refused.labels("full").inc()
        raise SessionError("server_full", f"server is at capacity ({exc}); retry later") from exc
    session.unpark(ws)
    await session.send(
        Ready(
            session_id=session.id,
            engine=svc.engine.name,
            sample_rate=start.sample_rate,
            resumed=resumed,
            limits=svc.limits,
        )
    )
    if resumed:
        missed = [seg for _, seg in svc.store.finals_after(session.id, start.last_seq or 0)]
        # One catch-up message carrying the current seq: the client's next seq follows it.
        await session.send(
            TranscriptUpdate(
                seq=session.seq,
                finals=missed,
                partials=session.last_partials,
                audio_received_s=round(session.received_s, 3),
                audio_processed_s=round(session.received_s, 3),
                lag_s=0.0,
            )
        )
    return session


def _attach(svc: Service, start: Start) -> tuple[LiveSession, bool]:
    """A parked session, a stored one continued on its old clock, or a new one."""
    sid = start.session_id
    if sid and sid in svc.live:
        session = svc.live[sid]
        if session.stopping:
            raise SessionError("unknown_session", f"session {sid} has ended")
        return session, True
    info = svc.store.info(sid) if sid else None
    if sid and info is None and start.last_seq:
        raise SessionError("unknown_session", f"no session {sid!r} to resume")
    session = LiveSession(
        svc,
        sid or svc.new_session_id(),
        start,
        offset_s=info.audio_s if info else 0.0,
        seq=info.last_seq if info else 0,
    )
    session.open()
    svc.live[session.id] = session
    if info is None:
        svc.store.create(session.id, svc.engine.name, "live")
        svc.metrics.sessions_total.labels("live").inc()
    else:
        svc.store.set_status(session.id, "live")
    return session, info is not None


async def _receive(ws: WebSocket, session: LiveSession, svc: Service) -> None:
    idle = svc.settings.idle_timeout_s
    while True:
        try:
            msg = await asyncio.wait_for(ws.receive(), timeout=idle)
        except TimeoutError as exc:
            raise SessionError("idle_timeout", f"nothing received for {idle:.0f} s") from exc
        if msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        if session.ws is not ws:
            # A newer connection took the session over: what is still queued on this one
            # was resent there (after its catch-up), so it must not count twice.
            raise WebSocketDisconnect(CLOSE_NORMAL)
        if msg.get("bytes") is not None:
            session.audio(msg["bytes"])
            continue
        try:
            control = client_message.validate_json(msg.get("text") or "")
        except ValidationError as exc:
            raise SessionError(
                "bad_message", f"expected binary audio or a control message: {_first_error(exc)}"
            ) from exc
        if isinstance(control, Ping):
            await session.send(Pong())
        elif isinstance(control, Finalize):
            session.flush()
        elif isinstance(control, Stop):
            session.flush(final=True)
            return
        else:
            raise SessionError("bad_message", "'start' was already sent")
