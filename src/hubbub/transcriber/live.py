"""``WS /v1/stream``: one live session per connection, protocol v1 (hubbub.protocol).

Two tasks per connection: the receiver decodes PCM into the scheduler's bounded buffer
and handles control messages; the sender turns engine updates into numbered
``transcript`` messages and writes every final to the store before sending it. A client
that disconnects mid-stream loses nothing: its buffered audio is still flushed and its
finals stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from fastapi import WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from hubbub.audio import AudioError, PcmDecoder
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
from hubbub.transcriber.service import Service
from hubbub.transcript import Segment

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 1.0


class SessionError(Exception):
    """Ends a session with an ``error`` message and the close code for ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _parse_start(raw: str) -> Start:
    try:
        msg = client_message.validate_json(raw)
    except ValidationError as exc:
        fields = {str(e["loc"][1]) for e in exc.errors() if len(e["loc"]) > 1}
        if fields & {"encoding", "sample_rate", "channels"}:
            raise SessionError("unsupported_audio", _first_error(exc)) from exc
        raise SessionError("bad_message", _first_error(exc)) from exc
    if not isinstance(msg, Start):
        raise SessionError("no_start", f"the first message must be 'start', got {msg.type!r}")
    return msg


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"][1:]) or "message"
    return f"{where}: {err['msg']}"


class Arrivals:
    """When each second of audio arrived, to measure final latency (bounded)."""

    def __init__(self) -> None:
        self._marks: deque[tuple[float, float]] = deque()

    def mark(self, received_s: float) -> None:
        self._marks.append((received_s, time.monotonic()))

    def latency(self, audio_s: float) -> float | None:
        while len(self._marks) > 1 and self._marks[1][0] <= audio_s:
            self._marks.popleft()
        if not self._marks or self._marks[0][0] > audio_s + 1.0:
            return None
        for received_s, at in self._marks:
            if received_s >= audio_s:
                return time.monotonic() - at
        return None


class LiveSession:
    def __init__(self, ws: WebSocket, svc: Service) -> None:
        self.ws = ws
        self.svc = svc
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.stream: Stream | None = None
        self.decoder: PcmDecoder | None = None
        self.session_id = ""
        self.seq = 0
        self.stopping = False
        self.flushes_pending = 0
        self.last_partials: list[Segment] = []
        self.last_sent = 0.0
        self.arrivals = Arrivals()
        self.send_lock = asyncio.Lock()
        self.segments_sent = 0
        self.counted_s = 0.0  # audio already added to the processed-seconds counter

    @property
    def connected(self) -> bool:
        ws = self.ws
        return (
            ws.client_state == WebSocketState.CONNECTED
            and ws.application_state == WebSocketState.CONNECTED
        )

    async def send(self, message) -> None:
        if not self.connected:
            return
        async with self.send_lock:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.send_text(message.model_dump_json())

    async def fail(self, code: str, message: str) -> None:
        self.svc.metrics.errors.labels(code).inc()
        await self.send(ErrorMessage(code=code, message=message))
        with contextlib.suppress(RuntimeError):
            await self.ws.close(ERROR_CLOSE_CODES.get(code, 1011), reason=code)

    async def run(self) -> None:
        await self.ws.accept()
        try:
            await self._handshake()
        except SessionError as exc:
            await self.fail(exc.code, exc.message)
            return
        except (WebSocketDisconnect, TimeoutError):
            return
        sender = asyncio.create_task(self._sender())
        try:
            await self._receiver()
        except SessionError as exc:
            await self.fail(exc.code, exc.message)
        except WebSocketDisconnect:
            log.info("session %s: client disconnected; flushing what it sent", self.session_id)
        finally:
            self._request_flush(final=True)
            try:
                await asyncio.wait_for(sender, timeout=self.svc.settings.max_buffer_s + 30)
            except TimeoutError:
                sender.cancel()
            await self._finish()

    async def _handshake(self) -> Start:
        settings = self.svc.settings
        msg = await asyncio.wait_for(self.ws.receive(), timeout=settings.idle_timeout_s)
        if msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        if msg.get("text") is None:
            raise SessionError("no_start", "the first message must be a JSON 'start' message")
        start = _parse_start(msg["text"])
        try:
            self.decoder = PcmDecoder(start.sample_rate, start.channels)
        except AudioError as exc:
            raise SessionError("unsupported_audio", str(exc)) from exc
        self.session_id = start.session_id or self.svc.new_session_id()
        if start.session_id and self.svc.store.exists(start.session_id):
            raise SessionError("unknown_session", "resuming a session is not supported yet")
        options = SessionOptions(language=start.language, max_speakers=start.max_speakers)
        loop = asyncio.get_running_loop()
        try:
            self.stream = self.svc.scheduler.open(
                self.session_id, options, threadsafe_queue_put(loop, self.queue)
            )
        except SchedulerFull as exc:
            self.svc.metrics.sessions_refused.labels("full").inc()
            raise SessionError(
                "server_full", f"server is at capacity ({exc}); retry later"
            ) from exc
        self.svc.metrics.sessions_total.labels("live").inc()
        self.svc.metrics.sessions_active.inc()
        self.svc.store.create(self.session_id, self.svc.engine.name, "live")
        await self.send(
            Ready(
                session_id=self.session_id,
                engine=self.svc.engine.name,
                sample_rate=start.sample_rate,
                limits=self.svc.limits,
            )
        )
        return start

    async def _receiver(self) -> None:
        settings = self.svc.settings
        assert self.stream is not None and self.decoder is not None
        while True:
            try:
                msg = await asyncio.wait_for(self.ws.receive(), timeout=settings.idle_timeout_s)
            except TimeoutError as exc:
                raise SessionError(
                    "idle_timeout", f"nothing received for {settings.idle_timeout_s:.0f} s"
                ) from exc
            if msg["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(msg.get("code", 1000))
            if msg.get("bytes") is not None:
                self._audio(msg["bytes"])
                continue
            control = self._control(msg.get("text") or "")
            if isinstance(control, Ping):
                await self.send(Pong())
            elif isinstance(control, Finalize):
                self._request_flush()
            elif isinstance(control, Stop):
                self.stopping = True
                return

    def _audio(self, data: bytes) -> None:
        settings = self.svc.settings
        assert self.stream is not None and self.decoder is not None
        if len(data) > settings.max_frame_bytes:
            raise SessionError(
                "frame_too_large", f"frame of {len(data)} bytes > {settings.max_frame_bytes}"
            )
        samples = self.decoder.decode(data)
        if self.stream.received_s + len(samples) / 16_000 > settings.max_session_s:
            raise SessionError(
                "session_too_long", f"sessions are limited to {settings.max_session_s:.0f} s"
            )
        try:
            self.svc.scheduler.push(self.stream, samples)
        except BufferFull as exc:
            raise SessionError("buffer_full", f"{exc}: send audio in real time") from exc
        self.arrivals.mark(self.stream.received_s)

    def _control(self, raw: str):
        try:
            msg = client_message.validate_json(raw)
        except ValidationError as exc:
            raise SessionError(
                "bad_message", f"expected binary audio or a control message: {_first_error(exc)}"
            ) from exc
        if isinstance(msg, Start):
            raise SessionError("bad_message", "'start' was already sent")
        return msg

    def _request_flush(self, final: bool = False) -> None:
        if self.stream is None or (final and self.stream.closing):
            return
        if self.decoder is not None:
            tail = self.decoder.flush()
            if len(tail):
                with contextlib.suppress(BufferFull):
                    self.svc.scheduler.push(self.stream, tail)
        self.flushes_pending += 1
        self.svc.scheduler.flush(self.stream)
        if final:
            self.stream.closing = True
            self.stopping = True

    async def _sender(self) -> None:
        assert self.stream is not None
        while True:
            d = await self.queue.get()
            if d.error is not None:
                await self.fail("engine_error", d.error)
                return
            assert d.update is not None
            if d.flushed:
                self.flushes_pending = max(0, self.flushes_pending - 1)
            await self._publish(d)
            if self.stopping and self.flushes_pending == 0 and d.flushed:
                return

    async def _publish(self, d: Delivery) -> None:
        upd = d.update
        assert upd is not None and self.stream is not None
        now = time.monotonic()
        changed = [p.model_dump() for p in upd.partials] != [
            p.model_dump() for p in self.last_partials
        ]
        if not (upd.finals or changed or d.flushed or now - self.last_sent >= PROGRESS_EVERY_S):
            return
        self.seq += 1
        processed = upd.audio_processed_s
        lag = max(0.0, self.stream.received_s - processed)
        m = self.svc.metrics
        m.audio_seconds.inc(max(0.0, processed - self.counted_s))
        self.counted_s = processed
        m.lag_seconds.observe(lag)
        if upd.finals:
            # Stored before it is sent: a final the client saw is always in the store.
            self.svc.store.add_finals(self.session_id, self.seq, upd.finals, processed)
            m.finals.inc(len(upd.finals))
            for seg in upd.finals:
                latency = self.arrivals.latency(seg.end)
                if latency is not None:
                    m.final_latency.observe(latency)
            self.segments_sent += len(upd.finals)
        self.last_partials = upd.partials
        self.last_sent = now
        await self.send(
            TranscriptUpdate(
                seq=self.seq,
                finals=upd.finals,
                partials=upd.partials,
                audio_received_s=round(self.stream.received_s, 3),
                audio_processed_s=round(processed, 3),
                lag_s=round(lag, 3),
            )
        )

    async def _finish(self) -> None:
        assert self.stream is not None
        self.svc.scheduler.close(self.stream)
        self.svc.metrics.sessions_active.dec()
        connected = self.connected
        self.svc.store.set_status(self.session_id, "ended" if connected else "disconnected")
        if not connected:
            return
        await self.send(
            Ended(
                session_id=self.session_id,
                seq=self.seq,
                audio_processed_s=round(self.stream.received_s, 3),
                segments=self.segments_sent,
            )
        )
        with contextlib.suppress(RuntimeError):
            await self.ws.close(CLOSE_NORMAL)


async def handle_stream(ws: WebSocket, svc: Service) -> None:
    await LiveSession(ws, svc).run()
