"""``hubbub serve`` (both services), ``hubbub transcriber`` and ``hubbub web``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console

from hubbub.cli.common import settings_from
from hubbub.settings import Settings

console = Console(stderr=True)


LOOPBACK = ["127.0.0.1", "::1"]


def _config(app: Any, host: str, port: int, s: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        ws="auto",
        lifespan="on",
        # X-Forwarded-For is ours to judge (settings.trusted_proxies): uvicorn's own
        # handling would believe any loopback peer.
        proxy_headers=False,
        # A frame past the limit is refused by the WebSocket layer before it is buffered.
        ws_max_size=s.max_frame_bytes + (64 << 10),
        # A client that vanished without a close is noticed within ~10 s and parked.
        ws_ping_interval=5.0,
        ws_ping_timeout=5.0,
    )


class Server(uvicorn.Server):
    """uvicorn, except that on SIGTERM/Ctrl-C the app gets to drain first: the
    transcriber turns every live session's audio into finals and tells each client
    (``ended``, reason ``shutting_down``) before connections are closed."""

    def __init__(
        self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        super().__init__(config)
        self.drain = drain

    async def shutdown(self, sockets: Any = None) -> None:
        if self.drain is not None:
            with contextlib.suppress(Exception):
                await self.drain()
        await super().shutdown(sockets)


def transcriber_server(s: Settings, host: str, port: int) -> Server:
    from hubbub.transcriber.app import create_app, drain

    app = create_app(s)
    return Server(_config(app, host, port, s), lambda: drain(app.state.service))


def transcriber(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765)")] = None,
    engine: Annotated[str | None, typer.Option(help="auto|cpu|nemo")] = None,
    model: Annotated[str | None, typer.Option(help="Whisper model name or CT2 dir")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where transcripts are stored")] = None,
    max_sessions: Annotated[int | None, typer.Option(help="Live sessions admitted")] = None,
) -> None:
    """Run the transcriber service alone (streaming WS, file API, sessions, metrics)."""
    s = settings_from(
        host=host,
        port=port,
        engine=engine,
        model=model,
        data_dir=data_dir,
        max_sessions=max_sessions,
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    console.print(f"transcriber on http://{s.host}:{s.port} (engine {s.engine})")
    transcriber_server(s, s.host, s.port).run()


def web(
    transcriber_url: Annotated[str | None, typer.Option(help="Base URL of the transcriber")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000)")] = None,
) -> None:
    """Run the web app alone: the UI, and a relay to a transcriber elsewhere."""
    from hubbub.web.app import create_app

    s = settings_from(transcriber_url=transcriber_url, web_host=host, web_port=port)
    console.print(f"web app on http://{s.web_host}:{s.web_port} -> {s.transcriber_url}")
    Server(_config(create_app(s), s.web_host, s.web_port, s)).run()


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address of the web app")] = None,
    port: Annotated[int | None, typer.Option(help="Web app port (default 8000)")] = None,
    transcriber_port: Annotated[int | None, typer.Option(help="Transcriber port")] = None,
    engine: Annotated[str | None, typer.Option(help="auto|cpu|nemo")] = None,
    model: Annotated[str | None, typer.Option(help="Whisper model name or CT2 dir")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where transcripts are stored")] = None,
    two_processes: Annotated[
        bool, typer.Option(help="Run the transcriber in a process of its own")
    ] = False,
) -> None:
    """Run both services on this machine and print the URL to open."""
    s = settings_from(
        web_host=host,
        web_port=port,
        port=transcriber_port,
        engine=engine,
        model=model,
        data_dir=data_dir,
    )
    s = s.model_copy(update={"transcriber_url": f"http://127.0.0.1:{s.port}"})
    started = time.monotonic()
    if two_processes:
        _serve_two_processes(s, started)
    else:
        asyncio.run(_serve_one_process(s, started))


def _for_transcriber(s: Settings) -> Settings:
    """The transcriber behind our own web app: it believes the web app (on loopback)
    about which browser each stream is for."""
    return s.model_copy(update={"trusted_proxies": [*s.trusted_proxies, *LOOPBACK]})


async def _serve_one_process(s: Settings, started: float) -> None:
    from hubbub.web.app import create_app as web_app

    servers = [
        transcriber_server(_for_transcriber(s), "127.0.0.1", s.port),
        Server(_config(web_app(s), s.web_host, s.web_port, s)),
    ]
    # Each server installs its own signal handlers; the last one wins, so one watcher
    # passes a Ctrl-C / SIGTERM seen by either server on to both.
    tasks = [asyncio.create_task(srv.serve()) for srv in servers]
    while not all(srv.started for srv in servers):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    else:
        _announce(s, started)
    while not any(srv.should_exit for srv in servers) and not any(t.done() for t in tasks):
        await asyncio.sleep(0.2)
    # The transcriber first: its goodbyes (every final, then ``ended``) go out through
    # the web app's relays before those close.
    for srv, task in zip(servers, tasks, strict=True):
        srv.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), 30)
    await asyncio.gather(*tasks, return_exceptions=True)


def _serve_two_processes(s: Settings, started: float) -> None:
    from hubbub.web.app import create_app as web_app

    env = {
        **os.environ,
        "HUBBUB_PORT": str(s.port),
        "HUBBUB_HOST": "127.0.0.1",
        "HUBBUB_ENGINE": s.engine,
        "HUBBUB_CPU__MODEL": s.cpu.model,
        "HUBBUB_DATA_DIR": s.data_dir,
        "HUBBUB_TRUSTED_PROXIES": json.dumps(_for_transcriber(s).trusted_proxies),
    }
    proc = subprocess.Popen([sys.executable, "-m", "hubbub", "transcriber"], env=env)
    try:
        import httpx

        while proc.poll() is None:
            try:
                if httpx.get(f"{s.transcriber_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        if proc.poll() is not None:
            raise typer.Exit(1)
        server = Server(_config(web_app(s), s.web_host, s.web_port, s))
        asyncio.run(_serve_and_announce(server, s, started))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _serve_and_announce(server: uvicorn.Server, s: Settings, started: float) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        _announce(s, started)
    await task


def _announce(s: Settings, started: float) -> None:
    host = "localhost" if s.web_host in ("127.0.0.1", "0.0.0.0") else s.web_host
    console.print(
        f"[bold green]hubbub is ready[/] in {time.monotonic() - started:.1f} s: "
        f"open [bold]http://{host}:{s.web_port}[/]  (transcriber {s.transcriber_url}, "
        f"engine {s.engine}; Ctrl-C to stop)",
        highlight=False,
    )
