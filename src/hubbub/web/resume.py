"""One upstream stream that survives cuts: reconnect, resume the session, replay audio.

Deployed, the connection to the transcriber gets cut: the platform's request timeout (1 h
at most on Flyte), a replica restarting, a proxy dropping the socket. The transcriber
parks a session whose connection dropped without ``stop`` (transcriber/live.py), so the
relay reconnects with ``session_id`` + ``last_seq`` and carries on, and the browser never
notices:

- the resumed ``ready`` is swallowed (the browser's stream did not change); the catch-up
  ``transcript`` that follows it (finals missed while cut, current partials) is passed on;
- audio the transcriber had not received when the cut came is sent again. Each
  ``transcript`` says how much audio arrived (``audio_received_s``), so the frames up to
  there are dropped from a replay log; the catch-up says it exactly. ``stop`` and
  ``finalize`` go in the same log, in order, and leave it once audio sent after them has
  arrived (a ``stop`` stays until ``ended``): a control written into a socket that was
  already dead is sent again, not lost.

A close that came with ``ended`` or an ``error`` is the transcriber's answer, not a cut.
With several transcriber replicas and no sticky sessions, a reconnect may reach a replica
that does not hold the session (``unknown_session``): a few more tries reach the one that
does, if it is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from hubbub.web.client import (
    TRANSCRIBER_UNAVAILABLE,
    TranscriberClient,
    TranscriberError,
    TranscriberStream,
)

log = logging.getLogger("hubbub.web")

RESUME_WITHIN_S = 30.0  # give up when no reconnect worked for this long
CATCH_UP_TIMEOUT_S = 10.0
# Refusals worth another try. ``bad_message`` is "session already connected": the
# transcriber has not noticed the old connection is gone yet.
RETRY_CODES = frozenset(
    {
        TRANSCRIBER_UNAVAILABLE,
        "transcriber_timeout",
        "server_full",
        "too_many_connections",
        "shutting_down",
        "bad_message",
    }
)
UNKNOWN_SESSION_TRIES = 8  # ~3.5 s of tries at the backoff below
LOGGED_CONTROLS = ("stop", "finalize")  # a ping said while cut would be answered by nobody


def _json(raw: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


class ResumingStream:
    """Wraps the first ``TranscriberStream`` of a relay; same interface, plus resume."""

    def __init__(
        self,
        client: TranscriberClient,
        stream: TranscriberStream,
        *,
        resume_within_s: float = RESUME_WITHIN_S,
        on_resume: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.ready_raw = stream.ready_raw
        self.resume_within_s = resume_within_s
        self.on_resume = on_resume
        self.unknown_session_tries = UNKNOWN_SESSION_TRIES
        rate = int(stream.start.get("sample_rate") or 16_000)
        self._bytes_per_s = rate * int(stream.start.get("channels") or 1) * 2
        # audio_received_s comes rounded to 1 ms; a frame within that of it has arrived.
        self._slack = self._bytes_per_s // 2000 + 1
        self._max_replay = int(stream.ready.limits.max_buffered_s * self._bytes_per_s)
        # (audio bytes sent up to and including it, PCM frame or control), not yet acked
        self._log: deque[tuple[int, bytes | str]] = deque()
        self._sent = 0  # bytes the browser sent so far
        self._lock = asyncio.Lock()  # keeps sends and replays in order
        self._connected = True
        self.resumes = 0
        self.lost: str | None = None  # why resuming gave up

    # -- what the relay reads ---------------------------------------------------------

    @property
    def session_id(self) -> str:
        return self.stream.session_id

    @property
    def ended(self) -> bool:
        return self.stream.ended

    @property
    def close_code(self) -> int | None:
        return self.stream.close_code

    @property
    def close_reason(self) -> str | None:
        return self.stream.close_reason

    @property
    def replay_bytes(self) -> int:
        """Audio sent but not yet acknowledged by the transcriber."""
        return sum(len(item) for _, item in self._log if isinstance(item, bytes))

    # -- browser -> transcriber -------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        async with self._lock:
            if self.lost:
                return
            self._sent += len(pcm)
            self._log.append((self._sent, pcm))
            if not self._connected and self.replay_bytes > self._max_replay:
                self.lost = "the transcriber was away longer than its audio buffer"
            if self._connected:
                try:
                    await self.stream.send_audio(pcm)
                except Exception:  # cut: the reader side reconnects and replays
                    self._connected = False

    async def send_control(self, text: str) -> None:
        async with self._lock:
            if _json(text).get("type") in LOGGED_CONTROLS:
                self._log.append((self._sent, text))
            if self._connected:
                try:
                    await self.stream.send_control(text)
                except Exception:
                    self._connected = False

    # -- transcriber -> browser -------------------------------------------------------

    def _ack(self, msg: dict[str, Any]) -> None:
        received = msg.get("audio_received_s")
        if not isinstance(received, int | float):
            return
        got = round(received * self._bytes_per_s)
        while self._log:
            end, item = self._log[0]
            # A frame has arrived when the count reaches its end; a control, when audio
            # sent after it has arrived too (the stream is ordered).
            done = end <= got + self._slack if isinstance(item, bytes) else end < got - self._slack
            if not done:
                break
            self._log.popleft()

    async def raw_messages(self) -> AsyncIterator[str | bytes]:
        """The transcriber's frames, across reconnections, until it ends or we give up."""
        messages = self.stream.raw_messages()
        while True:
            async for raw in messages:
                if isinstance(raw, str) and '"transcript"' in raw:
                    self._ack(_json(raw))
                yield raw
            if self.stream.ended or self.stream.error is not None:
                return
            resumed = await self._resume()
            if resumed is None:
                return
            messages, catch_up = resumed
            if catch_up is not None:
                yield catch_up

    async def _resume(self) -> tuple[AsyncIterator[str | bytes], str | None] | None:
        """Reconnect until it works or ``resume_within_s`` has passed; replay; go on."""
        async with self._lock:
            self._connected = False
        start = self.stream.resume_start()
        began = time.monotonic()
        deadline = began + self.resume_within_s
        delay = 0.05
        unknown = 0
        log.info("transcriber connection cut (code %s): resuming %s", self.close_code, start)
        while self.lost is None:
            try:
                stream = await self.client.open_stream(start, headers=self.stream.headers)
            except TranscriberError as exc:
                left = deadline - time.monotonic()
                unknown += exc.code == "unknown_session"
                again = exc.code in RETRY_CODES or (
                    exc.code == "unknown_session" and unknown < self.unknown_session_tries
                )
                if not again or left <= 0:
                    self.lost = f"could not resume: {exc.code}: {exc.message}"
                    break
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)
                continue
            try:
                resumed = await self._continue(stream)
                log.info("resumed session %s in %.3f s", self.session_id, time.monotonic() - began)
                return resumed
            except BaseException:
                with contextlib.suppress(Exception):
                    await stream.close()
                raise
        log.warning("session %s lost: %s", self.session_id, self.lost)
        return None

    async def _continue(
        self, stream: TranscriberStream
    ) -> tuple[AsyncIterator[str | bytes], str | None]:
        messages = stream.raw_messages()
        catch_up: str | None = None
        if stream.ready.resumed:
            # The catch-up says exactly how much audio the session holds.
            with contextlib.suppress(TimeoutError, StopAsyncIteration):
                raw = await asyncio.wait_for(anext(messages), CATCH_UP_TIMEOUT_S)
                if isinstance(raw, str):
                    catch_up = raw
                    self._ack(_json(raw))
        async with self._lock:
            self.stream = stream
            log.info("replaying %d bytes the transcriber missed", self.replay_bytes)
            try:
                for _, item in self._log:
                    if isinstance(item, bytes):
                        await stream.send_audio(item)
                    else:
                        await stream.send_control(item)
                self._connected = True
            except Exception:  # cut again: the caller finds the stream closed and retries
                pass
        self.resumes += 1
        if self.on_resume is not None:
            self.on_resume()
        return messages, catch_up

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.stream.close(code, reason)
