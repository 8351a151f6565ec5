"""Real uvicorn servers on free localhost ports, for tests."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Self

import httpx
import uvicorn

from hubbub.evaluation.cluster import free_port

__all__ = ["LoopThread", "free_port", "serve"]  # free_port: for ports with nothing on them


@contextlib.contextmanager
def serve(app, port: int | None = None, health: str = "/health") -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread, as ``hubbub transcriber`` / ``web`` run it
    (a transcriber drains its sessions on shutdown); yield its base URL once /health
    answers."""
    from hubbub.cli.serve import Server
    from hubbub.transcriber.app import drain

    # Without a port asked for, uvicorn binds port 0 and the system picks one: a port
    # found free and bound later may be taken in between (by a client socket, say).
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port or 0, log_level="warning", ws="auto", proxy_headers=False
    )

    async def drain_if_transcriber() -> None:
        if getattr(app.state, "service", None) is not None:
            await drain(app.state.service)

    server = Server(config, drain_if_transcriber)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"server on port {port or 'any'} did not start")
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    while True:
        try:
            if httpx.get(url + health, timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"server on {url} did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class LoopThread:
    """An asyncio server of a test's own, run on an event loop in a background thread.

    Subclasses implement ``_server()``, returning the (async context manager) server once
    it listens; ``running()`` serves until the ``with`` block ends.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Future | None = None

    async def _server(self) -> contextlib.AbstractAsyncContextManager:
        raise NotImplementedError

    async def _main(self, started: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with await self._server():
            started.set()
            await self._stop

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        started = threading.Event()
        thread = threading.Thread(target=asyncio.run, args=(self._main(started),), daemon=True)
        thread.start()
        assert started.wait(10), f"{type(self).__name__} did not start"
        try:
            yield self
        finally:
            assert self._loop is not None and self._stop is not None
            self._loop.call_soon_threadsafe(self._stop.set_result, None)
            thread.join(10)
