"""A stream that survives its connection, and the replay log it needs.

``ResumingStream`` keeps the audio the server has not settled yet (``audio_committed_s``),
reconnects with the session's id, resume token and last seq when the connection breaks
or the server restarts, and replays what the server no longer holds, so every final
arrives exactly once and the session's clock runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from pydantic import BaseModel

from hubbub.client.connection import (
    TranscriberClient,
    TranscriberError,
    TranscriberStream,
    control_text,
    parse,
    server_message,
)
from hubbub.protocol import (
    CLOSE_INTERNAL,
    RETRYABLE_CODES,
    TRANSCRIBER_LOST,
    Ended,
    ErrorMessage,
    Finalize,
    Ping,
    Stop,
)

log = logging.getLogger(__name__)


class ReplayLog:
    """What was sent and may have to be sent again, positioned on the session's clock.

    Audio is kept from the server's ``audio_committed_s`` on (what it has not settled
    into stored finals), at most ``max_s`` seconds of it; ``stop`` and ``finalize`` are
    kept in order with it. After a reconnect, everything from the server's
    ``resume_from_s`` on is sent again.
    """

    CONTROLS = ("stop", "finalize")  # a ping said while cut would be answered by nobody

    def __init__(self, sample_rate: int, channels: int, start_s: float, max_s: float) -> None:
        self.frame = 2 * channels
        self.rate = sample_rate
        self.pos = self._bytes(start_s)  # session clock of the next byte sent, in bytes
        self.max_bytes = self._bytes(max_s)
        self._items: deque[tuple[int, bytes | str]] = deque()
        self._audio = 0  # bytes of audio held
        self.dropped_to = 0  # audio before this position was dropped over the bound

    def _bytes(self, seconds: float) -> int:
        return round(seconds * self.rate) * self.frame

    @property
    def held_s(self) -> float:
        return self._audio / self.frame / self.rate

    def audio(self, pcm: bytes) -> None:
        self._items.append((self.pos, pcm))
        self.pos += len(pcm)
        self._audio += len(pcm)
        while self._audio > self.max_bytes and self._items:
            start, item = self._items.popleft()
            if isinstance(item, bytes):
                self._audio -= len(item)
                self.dropped_to = start + len(item)

    def control(self, text: str, kind: str) -> None:
        if kind in self.CONTROLS:
            self._items.append((self.pos, text))

    def settle(self, committed_s: float) -> None:
        """The server settled everything before ``committed_s``: forget it."""
        cut = self._bytes(committed_s)
        while self._items:
            start, item = self._items[0]
            end = start + len(item) if isinstance(item, bytes) else start + 1
            if end > cut:
                break
            self._items.popleft()
            if isinstance(item, bytes):
                self._audio -= len(item)

    def since(self, resume_from_s: float) -> list[bytes | str] | None:
        """What to send again for a server that holds audio up to ``resume_from_s``;
        None when part of it is no longer held."""
        cut = self._bytes(resume_from_s)
        if cut < self.dropped_to:
            return None
        out: list[bytes | str] = []
        for start, item in self._items:
            if isinstance(item, str):
                if start >= cut:
                    out.append(item)
            elif start + len(item) > cut:
                out.append(item[max(0, cut - start) :])
        return out


class ResumingStream:
    """A stream that survives its connection: same interface as ``TranscriberStream``.

    When the connection breaks (no ``ended`` or ``error`` came), it reconnects with the
    session's id, resume token and last seq, retrying refusals that may pass (a server
    restarting, full, or another replica answering) for ``resume_within_s``; then it
    replays the kept audio from the server's ``resume_from_s`` on. The resumed ``ready``
    is swallowed; its catch-up update is passed on. ``taken_over`` (another connection
    resumed the session) and other final errors end the stream: never a tug of war.
    """

    def __init__(
        self,
        client: TranscriberClient,
        stream: TranscriberStream,
        *,
        resume_within_s: float = 30.0,
        max_replay_s: float = 120.0,
        on_resume: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.ready_raw = stream.ready_raw
        self.ready = stream.ready
        self.resume_within_s = resume_within_s
        self.on_resume = on_resume
        rate = int(stream.start.get("sample_rate") or 16_000)
        channels = int(stream.start.get("channels") or 1)
        self.log = ReplayLog(rate, channels, stream.ready.resume_from_s, max_replay_s)
        self._lock = asyncio.Lock()  # keeps sends and replays in order
        self._connected = True
        self.stopping = False  # ``stop`` was sent: an ``ended`` is the end
        self.resumes = 0
        self.lost: str | None = None  # why resuming gave up

    # -- what callers read ------------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self.stream.session_id

    @property
    def ended(self) -> Ended | None:
        return self.stream.ended

    @property
    def error(self) -> ErrorMessage | None:
        return self.stream.error

    @property
    def close_code(self) -> int | None:
        return self.stream.close_code

    @property
    def close_reason(self) -> str | None:
        return self.stream.close_reason

    @property
    def last_seq(self) -> int | None:
        return self.stream.last_seq

    # -- client -> server -------------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        async with self._lock:
            if self.lost:
                return
            self.log.audio(pcm)
            if self._connected:
                try:
                    await self.stream.send_audio(pcm)
                except Exception:  # cut: the reader side reconnects and replays
                    self._connected = False

    async def send_control(self, message: BaseModel | Mapping[str, Any] | str) -> None:
        text = control_text(message)
        kind = str(parse(text).get("type"))
        async with self._lock:
            self.stopping = self.stopping or kind == "stop"
            self.log.control(text, kind)
            if self._connected:
                try:
                    await self.stream.send_control(text)
                except Exception:
                    self._connected = False

    async def finalize(self) -> None:
        await self.send_control(Finalize(type="finalize"))

    async def stop(self) -> None:
        await self.send_control(Stop(type="stop"))

    async def ping(self) -> None:
        await self.send_control(Ping(type="ping"))

    # -- server -> client -------------------------------------------------------------

    async def frames(self) -> AsyncIterator[tuple[str | bytes, dict[str, Any]]]:
        """Server frames across reconnections, until the session ends, fails, or we give
        up (``lost`` says why)."""
        frames = self.stream.frames()
        while True:
            async for raw, msg in frames:
                kind = msg.get("type")
                if kind == "transcript":
                    self.log.settle(self.stream.committed_s)
                elif kind in ("ended", "error") and self._should_resume():
                    continue  # the server went away for now: not the end of the session
                yield raw, msg
            if not (self.stream.broken or self._should_resume()):
                return
            resumed = await self._resume()
            if resumed is None:
                return
            frames, catch_up = resumed
            if catch_up is not None:
                yield catch_up

    def _should_resume(self) -> bool:
        """A server restarting said goodbye (``ended`` for shutdown, a retryable error):
        the session goes on once it is back, unless we asked it to stop."""
        s = self.stream
        if s.ended is not None:
            return s.ended.reason == "shutting_down" and not self.stopping
        return s.error is not None and s.error.code in RETRYABLE_CODES

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for _, msg in self.frames():
            if msg:
                yield server_message.validate_python(msg)
        if self.lost is not None:
            yield ErrorMessage(code=TRANSCRIBER_LOST, message=self.lost)

    async def _resume(
        self,
    ) -> tuple[AsyncIterator[tuple[str | bytes, dict[str, Any]]], tuple[str, dict] | None] | None:
        """Reconnect until it works or ``resume_within_s`` has passed; replay; go on."""
        async with self._lock:
            self._connected = False
        start = self.stream.resume_start()
        began = time.monotonic()
        deadline = began + self.resume_within_s
        delay = 0.05
        log.info("connection cut (code %s): resuming session %s", self.close_code, self.session_id)
        while self.lost is None:
            try:
                stream = await self.client.open_stream(start, headers=self.stream.headers)
            except TranscriberError as exc:
                left = deadline - time.monotonic()
                # Another replica may answer "unknown" until the one holding it does.
                again = exc.retryable or exc.code == "unknown_session"
                if not again or left <= 0:
                    self.lost = f"could not resume: {exc.code}: {exc.message}"
                    break
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)
                continue
            try:
                resumed = await self._continue(stream)
            except BaseException:
                with contextlib.suppress(Exception):
                    await stream.close()
                raise
            if resumed is not None:
                log.info("resumed %s in %.3f s", self.session_id, time.monotonic() - began)
                return resumed
        log.warning("session %s lost: %s", self.session_id, self.lost)
        return None

    async def _continue(self, stream: TranscriberStream):
        frames = stream.frames()
        catch_up = None
        # The catch-up update follows the resumed ready: finals missed while cut.
        with contextlib.suppress(TimeoutError, StopAsyncIteration):
            catch_up = await asyncio.wait_for(anext(frames), self.client.ready_timeout)
        async with self._lock:
            replay = self.log.since(stream.ready.resume_from_s)
            if replay is None:
                self.lost = "could not resume: the audio to send again is no longer held"
                await stream.close(CLOSE_INTERNAL, "replay lost")
                return None
            self.stream = stream
            log.info("replaying %d frames from %.2f s", len(replay), stream.ready.resume_from_s)
            try:
                for item in replay:
                    if isinstance(item, bytes):
                        await stream.send_audio(item)
                    else:
                        await stream.send_control(item)
                self._connected = True
            except Exception:  # cut again: the reader finds the stream closed and retries
                pass
        if catch_up is not None and catch_up[1].get("type") == "transcript":
            self.log.settle(stream.committed_s)
        self.resumes += 1
        if self.on_resume is not None:
            self.on_resume()
        return frames, catch_up

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.stream.close(code, reason)
