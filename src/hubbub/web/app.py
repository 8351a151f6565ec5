"""The web app: the UI, a thin relay to the transcriber, and a proxy for its session API.

``GET /`` the page (built in, or ``settings.frontend_dir``); ``WS /ws`` one browser stream
relayed to one upstream transcriber stream (web/relay.py); ``GET /api/sessions[/{id}]``,
``PUT /api/sessions/{id}/speakers`` and ``DELETE /api/sessions/{id}`` the transcriber's
stored transcripts, exports and speaker names; ``GET /status``, ``GET /health`` and
``GET /protocol.json``.

The web app checks its own door (host, origin, key) and passes the caller's key and
address on: the transcriber decides which tenant a session belongs to and holds each
client's stream limit, in one place.
"""

from __future__ import annotations

import mimetypes
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.requests import HTTPConnection

import hubbub
from hubbub import protocol
from hubbub.client import TranscriberClient, TranscriberUnavailable
from hubbub.limits import read_body
from hubbub.security import (
    KEY_COOKIE,
    HostGuard,
    Identity,
    Keyring,
    client_address,
    require_identity,
    websocket_refusal,
)
from hubbub.settings import Settings
from hubbub.web.relay import RelayStats, refuse, relay

STATIC_DIR = Path(__file__).parent / "static"
# Headers of a transcriber response worth passing on to the browser.
PASS_HEADERS = ("content-type", "content-disposition")
SessionPath = Annotated[str, PathParam(pattern=protocol.SESSION_ID_PATTERN)]
Caller = Annotated[Identity, Depends(require_identity)]

mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")


def ui_dirs(settings: Settings) -> list[Path]:
    """Where UI files are looked up, first match wins: the frontend folder, then built-in."""
    frontend = settings.frontend_dir
    if frontend is None and Path("frontend").is_dir():
        frontend = Path("frontend")
    dirs = [frontend.resolve()] if frontend is not None and frontend.is_dir() else []
    return [*dirs, STATIC_DIR.resolve()]


def find_ui_file(dirs: list[Path], path: str) -> Path | None:
    """Resolve a URL path to a file inside one of ``dirs``, never outside them, and never
    a hidden file (``.env``, ``.git/``): a frontend folder may hold more than the UI."""
    parts = [p for p in path.split("/") if p]
    if any(p.startswith(".") or "\\" in p or "\0" in p for p in parts):
        return None
    for root in dirs:
        candidate = root.joinpath(*parts).resolve() if parts else root / "index.html"
        if candidate.is_dir():
            candidate = candidate / "index.html"
        if candidate.is_file() and candidate.is_relative_to(root):
            return candidate
    return None


def upstream_headers(settings: Settings, conn: HTTPConnection, who: Identity) -> dict[str, str]:
    """What the transcriber needs to know of a browser: its key and its address."""
    headers = {"X-Forwarded-For": client_address(settings, conn)}
    if who.key:
        headers["Authorization"] = f"Bearer {who.key}"
    return headers


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    keyring = Keyring.from_settings(settings)
    client = TranscriberClient(settings.transcriber_url)
    stats = RelayStats()
    dirs = ui_dirs(settings)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await client.aclose()

    docs = not keyring.enabled
    app = FastAPI(
        title="hubbub web",
        version=hubbub.__version__,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.add_middleware(HostGuard, allowed=settings.allowed_hosts)
    app.state.settings = settings
    app.state.keyring = keyring
    app.state.client = client
    app.state.stats = stats

    @app.get("/health")
    async def health(request: Request) -> dict:
        """For probes: up or degraded; details only for callers with the key."""
        h = await client.health()
        body: dict = {"status": "ok" if h.reachable else "degraded"}
        if keyring.identify(request) is not None:
            body["connections"] = stats.connections
            body["transcriber"] = {"reachable": h.reachable, "latency_ms": h.latency_ms}
        return body

    @app.get("/protocol.json")
    async def protocol_codes() -> dict:
        return {**protocol.describe(), "stream_path": "/ws"}

    @app.get("/status")
    async def status(caller: Caller) -> dict:
        h = await client.health()
        return {
            "service": "hubbub-web",
            "version": hubbub.__version__,
            "uptime_s": round(time.time() - started, 1),
            "relay": vars(stats),
            "ui": str(dirs[0]) if len(dirs) > 1 else "built-in",
            "transcriber": {
                "url": client.base_url,
                "reachable": h.reachable,
                "latency_ms": h.latency_ms,
                "error": h.error,
                "health": h.info,
            },
        }

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        who = websocket_refusal(settings, keyring, websocket)
        if isinstance(who, tuple):
            await refuse(websocket, *who, stats)
            return
        headers = upstream_headers(settings, websocket, who)
        await relay(websocket, client, stats, headers, settings.open_within_s)

    async def upstream(
        request: Request, who: Identity, path: str, method: str = "GET", body: bytes | None = None
    ) -> Response:
        """Forward a call (and its body, as it came) to the transcriber's API."""
        headers = upstream_headers(settings, request, who)
        if body is not None:
            headers["content-type"] = "application/json"
        params = dict(request.query_params)
        params.pop("token", None)
        try:
            r = await client.request(method, path, params=params, body=body, headers=headers)
        except TranscriberUnavailable as exc:
            return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, 502)
        passed = {k: r.headers[k] for k in PASS_HEADERS if k in r.headers}
        return Response(r.content, r.status_code, headers=passed)

    @app.get("/api/sessions")
    async def sessions(request: Request, caller: Caller) -> Response:
        return await upstream(request, caller, "/v1/sessions")

    @app.get("/api/sessions/{session_id}")
    async def session(request: Request, caller: Caller, session_id: SessionPath) -> Response:
        return await upstream(request, caller, f"/v1/sessions/{session_id}")

    @app.put("/api/sessions/{session_id}/speakers")
    async def name_speakers(request: Request, caller: Caller, session_id: SessionPath) -> Response:
        # Read within bounds here; the transcriber checks what it says (its 400 comes back).
        body = await read_body(request)
        return await upstream(request, caller, f"/v1/sessions/{session_id}/speakers", "PUT", body)

    @app.delete("/api/sessions/{session_id}")
    async def delete_session(request: Request, caller: Caller, session_id: SessionPath) -> Response:
        return await upstream(request, caller, f"/v1/sessions/{session_id}", "DELETE")

    @app.get("/{path:path}", include_in_schema=False)
    async def ui(request: Request, path: str) -> Response:
        token = request.query_params.get("token")
        if token is not None:
            return _take_key(request, token)
        file = find_ui_file(dirs, path)
        if file is None:
            raise HTTPException(404, "not found")
        headers = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
        return FileResponse(file, headers=headers)

    def _take_key(request: Request, token: str) -> Response:
        """``/?token=KEY``: keep the key in a cookie the page cannot read, and go on to the
        same page without it in the address (history, bookmarks, Referer)."""
        params = {k: v for k, v in request.query_params.items() if k != "token"}
        target = request.url.path + (f"?{urlencode(params)}" if params else "")
        response = RedirectResponse(target, status_code=303)
        if keyring.enabled and keyring.identify(request) is not None:
            secure = request.url.scheme == "https" or (
                request.headers.get("x-forwarded-proto") == "https"
            )
            response.set_cookie(
                KEY_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/"
            )
        return response

    return app
