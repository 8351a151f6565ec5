"""Relay one browser WebSocket to one upstream transcriber stream, both ways, untouched.

The browser speaks protocol v1 like any client: its ``start`` opens the upstream stream,
then binary PCM and JSON control frames go up and the transcriber's frames come down as
they are (each parsed once, by hubbub.client, to follow seq and settled audio). The relay
only decides what happens when one side goes away:

- the browser disconnects: close the upstream with 1001 (going away), without ``stop``, so
  the transcriber parks the session for a resume;
- the transcriber ends the stream (``ended``) or refuses it (``error``, ``taken_over``
  among them): pass that on and close the browser with the same code, never fight back;
- the upstream is cut mid-stream: resume it for a few seconds, replaying the audio the
  transcriber had not settled (hubbub.client.ResumingStream), so the browser notices
  nothing; if that fails, tell the browser ``transcriber_lost`` at once: the page keeps its
  own audio and resumes through a new connection when the transcriber is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect

from hubbub.client import ResumingStream, TranscriberClient, TranscriberError
from hubbub.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    TRANSCRIBER_LOST,
    ErrorMessage,
    close_code,
)

log = logging.getLogger("hubbub.web")

START_TIMEOUT_S = 30.0  # a browser that connects must say ``start`` within this
RESUME_WITHIN_S = 5.0  # then the page is told, and resumes through a new connection


@dataclass
class RelayStats:
    connections: int = 0  # live browser sockets
    streams_total: int = 0  # upstream streams opened
    refused_total: int = 0  # start refused (unreachable, full, bad start)
    bytes_up: int = 0  # PCM bytes relayed to the transcriber
    messages_down: int = 0  # frames relayed to browsers
    resumed_total: int = 0  # upstream streams resumed after a cut


async def send_error(ws: WebSocket, code: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(ErrorMessage(code=code, message=message).model_dump_json())
    with contextlib.suppress(Exception):
        await ws.close(close_code(code))


async def refuse(ws: WebSocket, code: str, message: str, stats: RelayStats) -> None:
    """Accept only to say why not (browsers see no reason on a refused handshake)."""
    stats.refused_total += 1
    await ws.accept()
    await send_error(ws, code, message)


async def _browser_to_transcriber(ws: WebSocket, stream: ResumingStream, stats: RelayStats) -> None:
    """Pump until the browser goes."""
    while True:
        try:
            msg = await ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if msg["type"] == "websocket.disconnect":
            return
        if (data := msg.get("bytes")) is not None:
            await stream.send_audio(data)
            stats.bytes_up += len(data)
        elif (text := msg.get("text")) is not None:
            await stream.send_control(text)


async def _transcriber_to_browser(ws: WebSocket, stream: ResumingStream, stats: RelayStats) -> bool:
    """Pump until the upstream is over (True) or the browser is gone (False)."""
    async for raw, _ in stream.frames():
        try:
            if isinstance(raw, bytes):
                await ws.send_bytes(raw)
            else:
                await ws.send_text(raw)
        except Exception:
            return False
        stats.messages_down += 1
    return True


async def relay(
    ws: WebSocket,
    client: TranscriberClient,
    stats: RelayStats,
    headers: dict[str, str] | None = None,
    open_within_s: float = 0.0,
) -> None:
    """Serve one browser socket for its whole life (``headers`` go upstream with it); a
    refusal that may pass (a full transcriber) is tried again for ``open_within_s``."""
    await ws.accept()
    stats.connections += 1
    stream: ResumingStream | None = None
    try:
        try:
            first = await asyncio.wait_for(ws.receive(), START_TIMEOUT_S)
        except TimeoutError:
            await send_error(ws, "no_start", "no start message")
            return
        if first["type"] == "websocket.disconnect":
            return
        if first.get("text") is None:
            stats.refused_total += 1
            await send_error(ws, "no_start", "the first message must be a JSON start")
            return

        def resumed() -> None:
            stats.resumed_total += 1

        try:
            stream = await client.open_resumable(
                first["text"],
                headers,
                open_within_s=open_within_s,
                resume_within_s=RESUME_WITHIN_S,
                on_resume=resumed,
            )
        except TranscriberError as exc:
            stats.refused_total += 1
            log.info("stream refused: %s", exc)
            await send_error(ws, exc.code, exc.message)
            return
        stats.streams_total += 1
        await ws.send_text(stream.ready_raw)
        stats.messages_down += 1

        up = asyncio.create_task(_browser_to_transcriber(ws, stream, stats))
        down = asyncio.create_task(_transcriber_to_browser(ws, stream, stats))
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        browser_gone = up in done or (down in done and not down.result())
        if browser_gone:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            await stream.close(CLOSE_GOING_AWAY, "client went away")
            return
        up.cancel()
        await asyncio.gather(up, return_exceptions=True)
        await _close_like_upstream(ws, stream)
    finally:
        stats.connections -= 1
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.close(CLOSE_GOING_AWAY)


async def _close_like_upstream(ws: WebSocket, stream: ResumingStream) -> None:
    """The upstream is over: the browser ends the same way (its last word was relayed)."""
    if stream.lost is not None:
        await send_error(ws, TRANSCRIBER_LOST, stream.lost)
        return
    if stream.error is not None:
        code = close_code(stream.error.code)
    else:
        code = stream.close_code or CLOSE_NORMAL
    with contextlib.suppress(Exception):
        await ws.close(code if code not in (1005, 1006) else CLOSE_PROTOCOL_ERROR)
