"""One connection to a transcriber or a web app: ``TranscriberClient`` and its streams.

The server's URL may be a transcriber's or a web app's: each says where it streams in
``/protocol.json``. ``open_stream`` connects, sends ``start`` and waits for ``ready``;
the ``TranscriberStream`` it returns sends audio and control messages and yields what the
server says, following ``seq``, settled audio, ``ended`` and ``error`` as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from hubbub.protocol import (
    ABNORMAL_CLOSE_CODES,
    BUSY_CODES,
    CLOSE_INTERNAL,
    CLOSE_POLICY,
    RETRYABLE_CODES,
    TRANSCRIBER_TIMEOUT,
    TRANSCRIBER_UNAVAILABLE,
    Ended,
    ErrorMessage,
    Finalize,
    Ping,
    Pong,
    Ready,
    SpeakersUpdate,
    Start,
    Stop,
    TranscriptUpdate,
    close_code,
)

if TYPE_CHECKING:
    from hubbub.client.resuming import ResumingStream

log = logging.getLogger(__name__)

ServerMessage = Annotated[
    Ready | TranscriptUpdate | SpeakersUpdate | Pong | ErrorMessage | Ended,
    Field(discriminator="type"),
]
server_message: TypeAdapter[Any] = TypeAdapter(ServerMessage)
DEFAULT_STREAM_PATH = "/v1/stream"
STREAM_PATHS = ("/v1/stream", "/ws")


class TranscriberError(Exception):
    """The server refused a stream (an ``error`` message) or could not be reached."""

    def __init__(self, code: str, message: str, close: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = close or close_code(code)

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES


class TranscriberUnavailable(TranscriberError):
    def __init__(self, message: str) -> None:
        super().__init__(TRANSCRIBER_UNAVAILABLE, message)


def parse(raw: str | bytes) -> dict[str, Any]:
    if isinstance(raw, bytes):
        return {}
    try:
        obj = json.loads(raw)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def control_text(message: BaseModel | Mapping[str, Any] | str) -> str:
    if isinstance(message, BaseModel):
        return message.model_dump_json(exclude_none=True)
    return message if isinstance(message, str) else json.dumps(dict(message))


def _start_text(start: Start | Mapping[str, Any] | str | None) -> tuple[str, dict[str, Any]]:
    """The ``start`` as sent (a str is forwarded verbatim: the relay's case) and its fields."""
    if start is None:
        start = Start(type="start")
    if isinstance(start, Start):
        text = start.model_dump_json(exclude_none=True)
    elif isinstance(start, str):
        text = start
    else:
        text = json.dumps({"type": "start", **start})
    return text, parse(text)


class TranscriberStream:
    """One connection: send PCM and control messages, read what the server says.

    ``frames()`` yields each server frame untouched with its parsed fields (what a relay
    forwards); iterating the stream yields typed protocol messages. Either way the
    stream follows ``last_seq``, ``committed_s``, ``ended`` and ``error``.
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
        self.resume_token: str | None = self.ready.resume_token or start.get("resume_token")
        self.last_seq: int | None = start.get("last_seq") if self.ready.resumed else None
        self.committed_s = self.ready.resume_from_s
        self.ended: Ended | None = None
        self.error: ErrorMessage | None = None

    @property
    def session_id(self) -> str:
        return self.ready.session_id

    @property
    def close_code(self) -> int | None:
        """The close code once the server has closed (1006 when it just dropped)."""
        return self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self._ws.close_reason

    @property
    def broken(self) -> bool:
        """Closed without the server's last word (no ``ended``, no ``error``)."""
        return self.ended is None and self.error is None

    def resume_start(self) -> dict[str, Any]:
        """The ``start`` message that resumes this stream's session on a new connection."""
        start = {**self.start, "type": "start", "session_id": self.session_id}
        if self.resume_token:
            start["resume_token"] = self.resume_token
        if self.last_seq is not None:
            start["last_seq"] = self.last_seq
        else:
            start.pop("last_seq", None)
        return start

    # -- client -> server -----------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        """Send ``pcm_s16le`` bytes (any size up to the ``max_frame_bytes`` limit)."""
        await self._ws.send(pcm)

    async def send_control(self, message: BaseModel | Mapping[str, Any] | str) -> None:
        """Send a JSON control message; a ``str`` is sent verbatim (a relay's case)."""
        await self._ws.send(control_text(message))

    async def finalize(self) -> None:
        await self.send_control(Finalize(type="finalize"))

    async def stop(self) -> None:
        await self.send_control(Stop(type="stop"))

    async def ping(self) -> None:
        await self.send_control(Ping(type="ping"))

    # -- server -> client -----------------------------------------------------------

    def _note(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "transcript":
            if isinstance(seq := msg.get("seq"), int):
                self.last_seq = seq
            if isinstance(c := msg.get("audio_committed_s"), int | float):
                self.committed_s = max(self.committed_s, float(c))
        elif kind == "ended":
            with contextlib.suppress(ValidationError):
                self.ended = Ended.model_validate(msg)
        elif kind == "error":
            try:
                self.error = ErrorMessage.model_validate(msg)
            except ValidationError:
                self.error = ErrorMessage(code="bad_message", message=str(msg)[:200])

    async def frames(self) -> AsyncIterator[tuple[str | bytes, dict[str, Any]]]:
        """Server frames as they arrive (parsed once), until the connection closes."""
        while True:
            try:
                raw = await self._ws.recv()
            except ConnectionClosed:
                return
            msg = parse(raw)
            self._note(msg)
            yield raw, msg

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for _, msg in self.frames():
            if msg:
                yield server_message.validate_python(msg)

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
    """Talks to one transcriber (or web app) base URL; cheap to keep for an app's life."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        open_timeout: float = 5.0,
        ready_timeout: float = 30.0,
        http_timeout: float = 10.0,
        keepalive_s: float | None = 2.5,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        scheme = {"http": "http", "https": "https", "ws": "http", "wss": "https"}.get(parts.scheme)
        if scheme is None or not parts.netloc:
            raise ValueError(f"URL must be http(s)://host[:port][/prefix], got {base_url!r}")
        path = parts.path
        self._stream_path = next((p for p in STREAM_PATHS if path.endswith(p)), None)
        if self._stream_path is not None:
            path = path[: -len(self._stream_path)]
        self.base_url = urlunsplit((scheme, parts.netloc, path, "", ""))
        self.open_timeout = open_timeout
        self.ready_timeout = ready_timeout
        # A dead peer is noticed within about twice this (WebSocket ping, pong awaited).
        self.keepalive_s = keepalive_s
        self.headers = dict(headers or {})
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        # Service-to-service: no proxies from the environment, no compression for PCM.
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=http_timeout, headers=self.headers, trust_env=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> TranscriberClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def stream_url(self) -> str:
        """The WebSocket URL: a transcriber's ``/v1/stream``, a web app's ``/ws``."""
        if self._stream_path is None:
            path = DEFAULT_STREAM_PATH
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = await self._http.get("/protocol.json", timeout=self.open_timeout)
                if r.status_code == 200 and isinstance(found := r.json().get("stream_path"), str):
                    path = found if found in STREAM_PATHS else path
            self._stream_path = path
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + self._stream_path, "", ""))

    # -- streaming ------------------------------------------------------------------

    async def open_stream(
        self,
        start: Start | Mapping[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> TranscriberStream:
        """Connect, send ``start`` and wait for ``ready``.

        ``start`` may be a raw JSON string, forwarded verbatim (what the relay does);
        ``headers`` are added to the client's own for this stream (``X-Forwarded-For``).
        Raises ``TranscriberUnavailable`` when the server cannot be reached and
        ``TranscriberError`` (with the server's code and close code) when it refuses.
        """
        text, fields = _start_text(start)
        url = await self.stream_url()
        try:
            ws = await connect(
                url,
                additional_headers={**self.headers, **(headers or {})} or None,
                open_timeout=self.open_timeout,
                ping_interval=self.keepalive_s,
                ping_timeout=self.keepalive_s,
                compression=None,
                proxy=None,
                max_size=16 * 2**20,
                user_agent_header="hubbub-client",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise TranscriberError(
                    "unauthorized", f"the server refused: HTTP {status}", CLOSE_POLICY
                ) from exc
            raise TranscriberUnavailable(f"the server answered HTTP {status}") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise TranscriberUnavailable(f"cannot reach {url}: {exc}") from exc

        try:
            await ws.send(text)
            first = await asyncio.wait_for(ws.recv(), self.ready_timeout)
        except TimeoutError as exc:
            await ws.close(CLOSE_INTERNAL, "no ready")
            raise TranscriberError(TRANSCRIBER_TIMEOUT, "no answer to start") from exc
        except ConnectionClosed as exc:
            raise TranscriberUnavailable(f"the server closed the stream: {exc}") from exc

        msg = parse(first)
        if msg.get("type") == "ready":
            assert isinstance(first, str)
            return TranscriberStream(ws, first, fields, headers)
        if msg.get("type") == "error":
            err = ErrorMessage.model_validate(msg)
            # The server closes right after an error; its close code is part of the answer.
            try:
                await asyncio.wait_for(ws.wait_closed(), 2.0)
            except TimeoutError:
                await ws.close()
            code = ws.close_code
            closed = code if code and code not in ABNORMAL_CLOSE_CODES else None
            raise TranscriberError(err.code, err.message, closed)
        await ws.close(CLOSE_INTERNAL, "unexpected first message")
        raise TranscriberError("bad_message", f"expected ready, got {str(first)[:200]!r}")

    async def open_resumable(
        self,
        start: Start | Mapping[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        open_within_s: float = 0.0,
        **options: Any,
    ) -> ResumingStream:
        """A stream that resumes its session across cuts and restarts (ResumingStream).

        A refusal from a replica that is full or restarting is tried again with backoff
        for ``open_within_s``: behind a load balancer, another replica may have room.
        """
        from hubbub.client.resuming import ResumingStream

        deadline = time.monotonic() + open_within_s
        delay = 0.2
        while True:
            try:
                stream = await self.open_stream(start, headers)
                break
            except TranscriberError as exc:
                left = deadline - time.monotonic()
                if exc.code not in BUSY_CODES or left <= 0:
                    raise
                log.info("stream refused (%s): trying again", exc.code)
                # Jittered, so that clients refused together do not return together.
                await asyncio.sleep(min(left, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, 2.0)
        return ResumingStream(self, stream, **options)

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
        """A call on the server's HTTP API (raises ``TranscriberUnavailable``)."""
        try:
            return await self._http.request(
                method, path, params=params, content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise TranscriberUnavailable(f"cannot reach the server: {exc}") from exc

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> httpx.Response:
        return await self.request("GET", path, params)
