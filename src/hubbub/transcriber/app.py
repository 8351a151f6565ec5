"""The transcriber service: a complete FastAPI app on its own.

``WS /v1/stream`` (live, protocol v1), ``POST /v1/audio/transcriptions`` (OpenAI-
compatible), ``GET/DELETE /v1/sessions[/{id}]`` (stored transcripts and exports),
``PUT /v1/sessions/{id}/speakers`` (names for speaker labels), ``/health``,
``/metrics`` (Prometheus) and ``/protocol.json`` (the error codes, for clients).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from hubbub import __version__, protocol
from hubbub.engines.base import Engine
from hubbub.engines.factory import create_engine
from hubbub.limits import read_json
from hubbub.security import HostGuard, Identity, Keyring, require_identity
from hubbub.settings import Settings
from hubbub.transcriber import files
from hubbub.transcriber.live import handle_stream
from hubbub.transcriber.service import Service
from hubbub.transcriber.store import SessionInfo
from hubbub.transcript import EXPORT_FORMATS, ExportFormat, export

log = logging.getLogger(__name__)
MAX_SPEAKER_NAMES = 64
MAX_NAME_CHARS = 64
MEDIA_TYPES = {
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "rttm": "text/plain; charset=utf-8",
}
SessionPath = Annotated[str, Path(pattern=protocol.SESSION_ID_PATTERN)]
Caller = Annotated[Identity, Depends(require_identity)]


def service(request: Request) -> Service:
    return request.app.state.service


Svc = Annotated[Service, Depends(service)]


def speaker_names(body: object) -> dict[str, str]:
    """Validate a ``{"S1": "Alice", ...}`` body (ValueError says what is wrong)."""
    if not isinstance(body, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in body.items()
    ):
        raise ValueError('expected a JSON object of speaker label -> name, e.g. {"S1": "Alice"}')
    if len(body) > MAX_SPEAKER_NAMES:
        raise ValueError(f"at most {MAX_SPEAKER_NAMES} names at once")
    names = {}
    for label, name in body.items():
        # Control characters (tabs, newlines, NUL) would break the text exports' lines.
        clean = " ".join("".join(ch if ch.isprintable() else " " for ch in name).split())
        if not label or len(label) > MAX_NAME_CHARS or len(clean) > MAX_NAME_CHARS:
            raise ValueError(f"labels and names hold 1 to {MAX_NAME_CHARS} characters")
        names[label] = clean
    return names


async def drain(svc: Service, timeout_s: float = 10.0) -> None:
    """Shutting down: every live session's audio becomes stored finals, and each
    connected client gets them and ``ended`` (reason ``shutting_down``) before we go."""
    svc.draining = True
    sessions = list(svc.live.values())
    for session in sessions:
        session.finish("shutting_down")
    if sessions:
        waits = [asyncio.create_task(s.done.wait()) for s in sessions]
        _, pending = await asyncio.wait(waits, timeout=timeout_s)
        for task in pending:
            task.cancel()


def _session_of(svc: Service, caller: Identity, session_id: str) -> SessionInfo:
    """The caller's session, or 404 (the same for another tenant's: ids reveal nothing)."""
    info = svc.store.info(session_id)
    if info is None or not caller.may_see(info.tenant):
        raise HTTPException(404, f"no session {session_id!r}")
    return info


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or Settings()
    keyring = Keyring.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Models load (and warm up) at start, never on the first connection.
        eng = engine or create_engine(settings)
        eng.warmup()
        svc = Service.build(settings, eng)
        svc.scheduler.start()
        leases = asyncio.create_task(svc.keep_leases(), name="leases")
        app.state.service = svc
        log.info(
            "transcriber %s ready: engine=%s capacity=%d",
            svc.replica,
            eng.name,
            svc.scheduler.max_sessions,
        )
        try:
            yield
        finally:
            await drain(svc)
            leases.cancel()
            svc.scheduler.stop()
            svc.store.close()

    # With keys, the API's description is for key holders only: it is not served.
    docs = not keyring.enabled
    app = FastAPI(
        title="hubbub transcriber",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.add_middleware(HostGuard, allowed=settings.allowed_hosts)
    app.state.settings = settings
    app.state.keyring = keyring
    app.include_router(files.router)

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await handle_stream(ws, ws.app.state.service)

    @app.get("/health")
    async def health(svc: Svc) -> dict:
        return {
            "status": "ok",
            "engine": svc.engine.name,
            "sessions": svc.scheduler.active,
            "capacity": svc.scheduler.max_sessions,
            "max_lag_s": round(svc.scheduler.max_lag_s(), 3),
            "version": __version__,
        }

    @app.get("/protocol.json")
    async def protocol_codes() -> dict:
        return {**protocol.describe(), "stream_path": "/v1/stream"}

    @app.get("/metrics")
    async def metrics(svc: Svc) -> Response:
        return Response(svc.metrics.render(), media_type="text/plain")

    @app.get("/v1/sessions")
    async def list_sessions(
        svc: Svc, caller: Caller, limit: int = Query(100, ge=1, le=1000)
    ) -> dict:
        tenant = None if caller.admin else caller.tenant
        return {"sessions": [s.as_dict() for s in svc.store.list(limit, tenant=tenant)]}

    @app.get("/v1/sessions/{session_id}")
    async def get_session(
        svc: Svc, caller: Caller, session_id: SessionPath, format: str | None = Query(None)
    ) -> Response:
        info = _session_of(svc, caller, session_id)
        t = svc.store.transcript(session_id)
        if t is None:
            raise HTTPException(404, f"no session {session_id!r}")
        if format is None:
            return JSONResponse({"session": info.as_dict(), "transcript": t.model_dump()})
        if format not in EXPORT_FORMATS:
            raise HTTPException(400, f"format must be one of {', '.join(EXPORT_FORMATS)}")
        fmt: ExportFormat = format  # type: ignore[assignment]
        return PlainTextResponse(
            export(t, fmt, file_id=session_id),
            media_type=MEDIA_TYPES[fmt],
            headers={"Content-Disposition": f'attachment; filename="{session_id}.{fmt}"'},
        )

    @app.put("/v1/sessions/{session_id}/speakers")
    async def name_speakers(
        request: Request, svc: Svc, caller: Caller, session_id: SessionPath
    ) -> dict:
        """Give speaker labels names (an empty name clears one); exports use them."""
        _session_of(svc, caller, session_id)
        body = await read_json(request)
        try:
            merged = svc.store.set_speaker_names(session_id, speaker_names(body), MAX_SPEAKER_NAMES)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if merged is None:
            raise HTTPException(404, f"no session {session_id!r}")
        return {"session_id": session_id, "speaker_names": merged}

    @app.delete("/v1/sessions/{session_id}")
    async def delete_session(svc: Svc, caller: Caller, session_id: SessionPath) -> dict:
        _session_of(svc, caller, session_id)
        if session_id in svc.live:
            raise HTTPException(409, f"session {session_id!r} is live: stop it first")
        if not svc.store.delete(session_id):
            raise HTTPException(404, f"no session {session_id!r}")
        return {"deleted": session_id}

    return app
