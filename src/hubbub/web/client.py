"""The one client the web app (and any Python caller) uses to talk to the transcriber.

One upstream WebSocket per stream (``WS /v1/stream``, protocol v1), plus plain HTTP for
health and the session API::

    client = TranscriberClient("http://127.0.0.1:8765")
    async with await client.open_stream(Start(type="start")) as stream:
        await stream.send_audio(pcm_s16le)
        await stream.stop()
        async for msg in stream:  # TranscriptUpdate ... Ended
            ...

Resuming a dropped stream is opening a new one with the old ``session_id`` and the
``last_seq`` seen (``stream.resume_start()`` builds that ``start``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from hubbub.protocol import (
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    Ended,
    ErrorMessage,
    Finalize,
    Ping,
    Pong,
    Ready,
    Start,
    Stop,
    TranscriptUpdate,
)

ServerMessage = Annotated[
    Ready | TranscriptUpdate | Pong | ErrorMessage | Ended, Field(discriminator="type")
]
server_message: TypeAdapter[Any] = TypeAdapter(ServerMessage)

# Machine codes this side adds to the protocol's own (sent to the browser in ``error``).
TRANSCRIBER_UNAVAILABLE = "transcriber_unavailable"  # cannot connect: close 1013
TRANSCRIBER_LOST = "transcriber_lost"  # the upstream dropped mid-stream: close 1011

# Close codes that say "the connection broke", not "the peer chose to close".
ABNORMAL_CLOSE_CODES = frozenset({1005, 1006, 1015})


class TranscriberError(Exception):
    """The transcriber refused a stream (an ``error`` message) or could not be reached."""

    def __init__(self, code: str, message: str, close_code: int = CLOSE_INTERNAL) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = close_code

    def to_message(self) -> ErrorMessage:
        return ErrorMessage(code=self.code, message=self.message)


class TranscriberUnavailable(TranscriberError):
    def __init__(self, message: str) -> None:
        super().__init__(TRANSCRIBER_UNAVAILABLE, message, CLOSE_TRY_AGAIN)


def stream_url(base_url: str) -> str:
    """``http://host:port/prefix`` -> ``ws://host:port/prefix/v1/stream``."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"transcriber URL must be http(s)://host[:port], got {base_url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path + "/v1/stream", "", ""))


def _peek(raw: str) -> tuple[str | None, int | None]:
    """The ``type`` and ``seq`` of a server text message, without full validation."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None, None
    if not isinstance(obj, dict):
        return None, None
    seq = obj.get("seq")
    return obj.get("type"), seq if isinstance(seq, int) else None


class TranscriberStream:
    """One live stream: send PCM and control messages, iterate what the transcriber says.

    ``raw_messages()`` yields the server's frames untouched (what a relay forwards);
    iterating the stream itself yields typed protocol messages. Either way ``last_seq``
    and ``ended`` follow the stream, so a dropped stream can be resumed.
    """

    def __init__(
        self,
        ws: ClientConnection,
        ready_raw: str,
        start: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._ws = ws
        self.headers = dict(headers or {})  # this stream's own, e.g. X-Forwarded-For
        self.ready_raw = ready_raw
        self.ready = Ready.model_validate_json(ready_raw)
        self.start = dict(start)
        self.last_seq: int | None = start.get("last_seq") if self.ready.resumed else None
        self.ended = False
        self.error: ErrorMessage | None = None
        self.bytes_sent = 0

    @property
    def session_id(self) -> str:
        return self.ready.session_id

    @property
    def close_code(self) -> int | None:
        """The close code once the upstream has closed (1006 when it just dropped)."""
        return self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self._ws.close_reason

    def resume_start(self) -> dict[str, Any]:
        """The ``start`` message that resumes this stream on a new connection."""
        start = {**self.start, "type": "start", "session_id": self.session_id}
        if self.last_seq is not None:
            start["last_seq"] = self.last_seq
        else:
            start.pop("last_seq", None)
        return start

    # -- client -> server -----------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        """Send ``pcm_s16le`` bytes (any size up to the ``max_frame_bytes`` limit)."""
        await self._ws.send(pcm)
        self.bytes_sent += len(pcm)

    async def send_control(self, message: BaseModel | Mapping[str, Any] | str) -> None:
        """Send a JSON control message; a ``str`` is sent verbatim (a relay's case)."""
        if isinstance(message, BaseModel):
            text = message.model_dump_json(exclude_none=True)
        elif isinstance(message, str):
            text = message
        else:
            text = json.dumps(dict(message))
        await self._ws.send(text)

    async def finalize(self) -> None:
        await self.send_control(Finalize(type="finalize"))

    async def stop(self) -> None:
        await self.send_control(Stop(type="stop"))

    async def ping(self) -> None:
        await self.send_control(Ping(type="ping"))

    # -- server -> client -----------------------------------------------------------

    def _note(self, raw: str) -> None:
        kind, seq = _peek(raw)
        if seq is not None and kind == "transcript":
            self.last_seq = seq
        elif kind == "ended":
            self.ended = True
        elif kind == "error":
            try:
                self.error = ErrorMessage.model_validate_json(raw)
            except ValidationError:
                self.error = ErrorMessage(code="bad_message", message=raw[:200])

    async def raw_messages(self) -> AsyncIterator[str | bytes]:
        """Server frames as they arrive, until the upstream closes (normally or not)."""
        while True:
            try:
                raw = await self._ws.recv()
            except ConnectionClosed:
                return
            if isinstance(raw, str):
                self._note(raw)
            yield raw

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for raw in self.raw_messages():
            if isinstance(raw, str):
                yield server_message.validate_json(raw)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)

    async def __aenter__(self) -> TranscriberStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass
class Health:
    reachable: bool
    latency_ms: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class TranscriberClient:
    """Talks to one transcriber base URL; cheap to keep for the life of an app."""

    def __init__(
        self,
        base_url: str,
        *,
        open_timeout: float = 5.0,
        ready_timeout: float = 30.0,
        http_timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_url = stream_url(self.base_url)
        self.open_timeout = open_timeout
        self.ready_timeout = ready_timeout
        self.headers = dict(headers or {})
        # Service-to-service: no proxies from the environment, no compression for PCM.
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=http_timeout, headers=self.headers, trust_env=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- streaming ------------------------------------------------------------------

    async def open_stream(
        self,
        start: Start | Mapping[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> TranscriberStream:
        """Connect, send ``start`` and wait for ``ready``.

        ``start`` may be a raw JSON string, forwarded verbatim (what the relay does);
        ``headers`` are added to the client's own for this stream (``X-Forwarded-For``).
        Raises ``TranscriberUnavailable`` when the transcriber cannot be reached and
        ``TranscriberError`` (with the server's code and close code) when it refuses.
        """
        if start is None:
            start = Start(type="start")
        if isinstance(start, Start):
            text = start.model_dump_json(exclude_none=True)
        elif isinstance(start, str):
            text = start
        else:
            text = json.dumps({"type": "start", **start})
        try:
            start_fields = json.loads(text)
        except ValueError:
            start_fields = {}
        if not isinstance(start_fields, dict):
            start_fields = {}

        try:
            ws = await connect(
                self.ws_url,
                additional_headers={**self.headers, **(headers or {})} or None,
                open_timeout=self.open_timeout,
                compression=None,
                proxy=None,
                max_size=16 * 2**20,
                user_agent_header="hubbub-web",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise TranscriberError(
                    "unauthorized", f"transcriber refused: HTTP {status}", CLOSE_POLICY
                ) from exc
            raise TranscriberUnavailable(f"transcriber answered HTTP {status}") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise TranscriberUnavailable(
                f"cannot reach the transcriber at {self.base_url}: {exc}"
            ) from exc

        try:
            await ws.send(text)
            first = await asyncio.wait_for(ws.recv(), self.ready_timeout)
        except TimeoutError as exc:
            await ws.close(CLOSE_INTERNAL, "no ready")
            raise TranscriberError(
                "transcriber_timeout", "the transcriber did not answer start", CLOSE_TRY_AGAIN
            ) from exc
        except ConnectionClosed as exc:
            raise TranscriberUnavailable(f"the transcriber closed the stream: {exc}") from exc

        kind, _ = _peek(first) if isinstance(first, str) else (None, None)
        if kind == "ready":
            return TranscriberStream(ws, first, start_fields, headers)
        if kind == "error":
            err = ErrorMessage.model_validate_json(first)
            # The server closes right after an error; its close code is part of the answer.
            try:
                await asyncio.wait_for(ws.wait_closed(), 2.0)
            except TimeoutError:
                await ws.close()
            code = ws.close_code
            close_code = code if code and code not in ABNORMAL_CLOSE_CODES else CLOSE_INTERNAL
            raise TranscriberError(err.code, err.message, close_code)
        await ws.close(CLOSE_INTERNAL, "unexpected first message")
        raise TranscriberError("bad_message", f"expected ready, got {str(first)[:200]!r}")

    # -- HTTP -----------------------------------------------------------------------

    async def health(self, timeout: float = 2.0) -> Health:
        t0 = time.perf_counter()
        try:
            r = await self._http.get("/health", timeout=timeout)
        except httpx.HTTPError as exc:
            return Health(False, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
        latency = round((time.perf_counter() - t0) * 1000, 1)
        try:
            info = r.json()
        except ValueError:
            info = {}
        if not isinstance(info, dict):
            info = {"body": info}
        ok = r.status_code < 500
        return Health(ok, latency, info, None if ok else f"HTTP {r.status_code}")

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """A call on the transcriber's HTTP API (raises ``TranscriberUnavailable``)."""
        try:
            return await self._http.request(
                method, path, params=params, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise TranscriberUnavailable(f"cannot reach the transcriber: {exc}") from exc

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> httpx.Response:
        return await self.request("GET", path, params)
