"""Relay one browser WebSocket to one upstream transcriber stream, both ways, untouched.

The browser speaks protocol v1 like any client: its ``start`` opens the upstream stream
(``TranscriberClient.open_stream``), then binary PCM and JSON control frames go up and
the transcriber's frames come down as they are. The relay only decides what happens when
one side goes away:

- the browser disconnects: close the upstream with 1001 (going away), without ``stop``, so
  the transcriber keeps the session for a resume;
- the transcriber closes (after ``ended`` or an ``error``): close the browser with the
  same code;
- the transcriber connection is cut mid-stream: reconnect and resume the session, replaying
  the audio it missed (web/resume.py), so the browser sees one unbroken stream;
- the transcriber cannot be reached, or the session cannot be resumed: send an ``error``
  with a code, then close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect

from hubbub.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    ERROR_CLOSE_CODES,
    ErrorMessage,
)
from hubbub.web.client import (
    ABNORMAL_CLOSE_CODES,
    TRANSCRIBER_LOST,
    TranscriberClient,
    TranscriberError,
)
from hubbub.web.resume import ResumingStream

log = logging.getLogger("hubbub.web")

START_TIMEOUT_S = 30.0  # a browser that connects must say ``start`` within this


@dataclass
class RelayStats:
    connections: int = 0  # live browser sockets
    streams_total: int = 0  # upstream streams opened
    refused_total: int = 0  # start refused (unreachable, full, bad start)
    bytes_up: int = 0  # PCM bytes relayed to the transcriber
    messages_down: int = 0  # frames relayed to browsers
    resumed_total: int = 0  # upstream streams resumed after a cut


async def _send_error(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(ErrorMessage(code=code, message=message).model_dump_json())
    with contextlib.suppress(Exception):
        await ws.close(close_code)


async def _browser_to_transcriber(ws: WebSocket, stream: ResumingStream, stats: RelayStats) -> str:
    """Pump until the browser goes ('browser') or the upstream refuses a send ('upstream')."""
    while True:
        try:
            msg = await ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return "browser"
        if msg["type"] == "websocket.disconnect":
            return "browser"
        try:
            if (data := msg.get("bytes")) is not None:
                await stream.send_audio(data)
                stats.bytes_up += len(data)
            elif (text := msg.get("text")) is not None:
                await stream.send_control(text)
        except Exception:  # the upstream is closing: the other pump reports why
            return "upstream"


async def _transcriber_to_browser(ws: WebSocket, stream: ResumingStream, stats: RelayStats) -> str:
    """Pump until the upstream closes ('upstream') or the browser is gone ('browser')."""
    async for raw in stream.raw_messages():
        try:
            if isinstance(raw, bytes):
                await ws.send_bytes(raw)
            else:
                await ws.send_text(raw)
        except Exception:
            return "browser"
        stats.messages_down += 1
    return "upstream"


async def refuse(ws: WebSocket, code: str, message: str, stats: RelayStats) -> None:
    """Accept only to say why not (browsers see no reason on a refused handshake)."""
    stats.refused_total += 1
    await ws.accept()
    await _send_error(ws, code, message, ERROR_CLOSE_CODES.get(code, CLOSE_POLICY))


async def relay(
    ws: WebSocket,
    client: TranscriberClient,
    stats: RelayStats,
    headers: dict[str, str] | None = None,
) -> None:
    """Serve one browser socket for its whole life (``headers`` go upstream with it)."""
    await ws.accept()
    stats.connections += 1
    stream: ResumingStream | None = None
    try:
        try:
            first = await asyncio.wait_for(ws.receive(), START_TIMEOUT_S)
        except TimeoutError:
            await _send_error(ws, "no_start", "no start message", CLOSE_PROTOCOL_ERROR)
            return
        if first["type"] == "websocket.disconnect":
            return
        if first.get("text") is None:
            stats.refused_total += 1
            await _send_error(
                ws, "no_start", "the first message must be a JSON start", CLOSE_PROTOCOL_ERROR
            )
            return
        try:
            upstream = await client.open_stream(first["text"], headers=headers)
        except TranscriberError as exc:
            stats.refused_total += 1
            log.info("stream refused: %s", exc)
            await _send_error(ws, exc.code, exc.message, exc.close_code)
            return
        stats.streams_total += 1

        def resumed() -> None:
            stats.resumed_total += 1

        stream = ResumingStream(client, upstream, on_resume=resumed)
        await ws.send_text(stream.ready_raw)
        stats.messages_down += 1

        up = asyncio.create_task(_browser_to_transcriber(ws, stream, stats))
        down = asyncio.create_task(_transcriber_to_browser(ws, stream, stats))
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        first_done = up if up in done else down
        gone = first_done.result()

        if gone == "browser":
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            await stream.close(CLOSE_GOING_AWAY, "client went away")
            return

        # The upstream closed: let the down pump deliver what it still holds.
        if not down.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(down), 5.0)
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        if stream.lost is not None:
            await _send_error(ws, TRANSCRIBER_LOST, stream.lost, CLOSE_INTERNAL)
            return
        code = stream.close_code
        if code is None or code in ABNORMAL_CLOSE_CODES:
            if not stream.ended:
                await _send_error(
                    ws, TRANSCRIBER_LOST, "the transcriber connection dropped", CLOSE_INTERNAL
                )
                return
            code = CLOSE_NORMAL
        with contextlib.suppress(Exception):
            await ws.close(code, stream.close_reason or "")
    finally:
        stats.connections -= 1
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.close(CLOSE_GOING_AWAY)
