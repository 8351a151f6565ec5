"""The web app: the UI, a thin relay to the transcriber, and a proxy for its session API.

``GET /`` the page (built in, or ``settings.frontend_dir``); ``WS /ws`` one browser stream
relayed to one upstream transcriber stream (web/relay.py); ``GET /api/sessions[/{id}]``
and ``PUT /api/sessions/{id}/speakers`` the transcriber's stored transcripts, exports and
speaker names; ``GET /status`` and ``GET /health``.
"""

from __future__ import annotations

import mimetypes
import re
import time
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response

import hubbub
from hubbub.security import require_key, websocket_refusal
from hubbub.settings import Settings
from hubbub.web.client import TRANSCRIBER_UNAVAILABLE, TranscriberClient, TranscriberUnavailable
from hubbub.web.relay import RelayStats, refuse, relay

STATIC_DIR = Path(__file__).parent / "static"
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Headers of a transcriber response worth passing on to the browser.
PASS_HEADERS = ("content-type", "content-disposition")

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
    """Resolve a URL path to a file inside one of ``dirs``, never outside them."""
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
        return None
    for root in dirs:
        candidate = root.joinpath(*parts).resolve() if parts else root / "index.html"
        if candidate.is_dir():
            candidate = candidate / "index.html"
        if candidate.is_file() and candidate.is_relative_to(root):
            return candidate
    return None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # One key for the deployment: what clients must present is what we present upstream.
    api_key = settings.api_key
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    client = TranscriberClient(settings.transcriber_url, headers=headers)
    stats = RelayStats()
    dirs = ui_dirs(settings)
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await client.aclose()

    app = FastAPI(title="hubbub web", version=hubbub.__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.client = client
    app.state.stats = stats

    @app.get("/health")
    async def health() -> dict:
        h = await client.health()
        return {
            "status": "ok" if h.reachable else "degraded",
            "connections": stats.connections,
            "transcriber": {
                "url": client.base_url,
                "reachable": h.reachable,
                "latency_ms": h.latency_ms,
                "error": h.error,
            },
        }

    @app.get("/status", dependencies=[Depends(require_key)])
    async def status() -> dict:
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

    per_client: Counter[str] = Counter()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        refusal = websocket_refusal(settings, websocket)
        if refusal is not None:
            await refuse(websocket, *refusal, stats)
            return
        peer = websocket.client.host if websocket.client else "?"
        limit = settings.max_connections_per_client
        if per_client[peer] >= limit:
            await refuse(websocket, "too_many_connections", f"at most {limit} streams", stats)
            return
        per_client[peer] += 1
        try:
            # The transcriber sees the web app as its client; this says whose stream it is.
            await relay(websocket, client, stats, headers={"X-Forwarded-For": peer})
        finally:
            per_client[peer] -= 1
            if per_client[peer] <= 0:
                del per_client[peer]

    async def upstream(
        path: str, params: dict[str, str], method: str = "GET", request: Request | None = None
    ) -> Response:
        """Forward a call (and ``request``'s body, as it came) to the transcriber's API."""
        body = await request.body() if request is not None else None
        kind = {"content-type": "application/json"} if body is not None else None
        try:
            r = await client.request(method, path, params=params, body=body, headers=kind)
        except TranscriberUnavailable as exc:
            return JSONResponse(
                {"error": {"code": TRANSCRIBER_UNAVAILABLE, "message": exc.message}}, 502
            )
        headers = {k: r.headers[k] for k in PASS_HEADERS if k in r.headers}
        return Response(r.content, r.status_code, headers=headers)

    @app.get("/api/sessions", dependencies=[Depends(require_key)])
    async def sessions(request: Request) -> Response:
        return await upstream("/v1/sessions", dict(request.query_params))

    @app.get("/api/sessions/{session_id}", dependencies=[Depends(require_key)])
    async def session(session_id: str, request: Request) -> Response:
        if not SESSION_ID.match(session_id):
            raise HTTPException(404, "no such session")
        return await upstream(f"/v1/sessions/{session_id}", dict(request.query_params))

    @app.put("/api/sessions/{session_id}/speakers", dependencies=[Depends(require_key)])
    async def name_speakers(session_id: str, request: Request) -> Response:
        if not SESSION_ID.match(session_id):
            raise HTTPException(404, "no such session")
        # The transcriber checks the body; its 400 comes back as it is.
        return await upstream(f"/v1/sessions/{session_id}/speakers", {}, "PUT", request)

    @app.delete("/api/sessions/{session_id}", dependencies=[Depends(require_key)])
    async def delete_session(session_id: str) -> Response:
        if not SESSION_ID.match(session_id):
            raise HTTPException(404, "no such session")
        return await upstream(f"/v1/sessions/{session_id}", {}, method="DELETE")

    @app.get("/{path:path}", include_in_schema=False)
    async def ui(path: str) -> Response:
        file = find_ui_file(dirs, path)
        if file is None:
            raise HTTPException(404, "not found")
        headers = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
        return FileResponse(file, headers=headers)

    return app
