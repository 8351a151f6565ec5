"""The transcriber service: a complete FastAPI app on its own.

``WS /v1/stream`` (live, protocol v1), ``POST /v1/audio/transcriptions`` (OpenAI-
compatible), ``GET/DELETE /v1/sessions[/{id}]`` (stored transcripts and exports),
``PUT /v1/sessions/{id}/speakers`` (names for speaker labels),
``/health`` and ``/metrics`` (Prometheus).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from hubbub import __version__
from hubbub.engines.base import Engine
from hubbub.engines.factory import create_engine
from hubbub.security import require_key
from hubbub.settings import Settings
from hubbub.transcriber import files
from hubbub.transcriber.live import handle_stream
from hubbub.transcriber.service import Service
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


async def shutdown(svc: Service, timeout_s: float = 30.0) -> None:
    """SIGTERM: flush every live session's audio into stored finals, then stop."""
    sessions = list(svc.live.values())
    for session in sessions:
        session.flush(final=True)
    if sessions:
        waits = [asyncio.create_task(s.done.wait()) for s in sessions]
        _, pending = await asyncio.wait(waits, timeout=timeout_s)
        for task in pending:
            task.cancel()
    svc.scheduler.stop()
    svc.store.close()


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Models load (and warm up) at start, never on the first connection.
        eng = engine or create_engine(settings)
        eng.warmup()
        svc = Service.build(settings, eng)
        svc.scheduler.start()
        app.state.service = svc
        log.info("transcriber ready: engine=%s capacity=%d", eng.name, svc.scheduler.max_sessions)
        try:
            yield
        finally:
            await shutdown(svc)

    app = FastAPI(title="hubbub transcriber", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    keyed = [Depends(require_key)]
    app.include_router(files.router, dependencies=keyed)

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await handle_stream(ws, ws.app.state.service)

    @app.get("/health")
    async def health(request: Request) -> dict:
        svc: Service = request.app.state.service
        return {
            "status": "ok",
            "engine": svc.engine.name,
            "sessions": svc.scheduler.active,
            "capacity": svc.scheduler.max_sessions,
            "max_lag_s": round(svc.scheduler.max_lag_s(), 3),
            "version": __version__,
        }

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(request.app.state.service.metrics.render(), media_type="text/plain")

    @app.get("/v1/sessions", dependencies=keyed)
    async def list_sessions(request: Request, limit: int = Query(100, ge=1, le=1000)) -> dict:
        svc: Service = request.app.state.service
        return {"sessions": [s.as_dict() for s in svc.store.list(limit)]}

    @app.get("/v1/sessions/{session_id}", dependencies=keyed)
    async def get_session(
        request: Request, session_id: str, format: str | None = Query(None)
    ) -> Response:
        svc: Service = request.app.state.service
        t = svc.store.transcript(session_id)
        if t is None:
            raise HTTPException(404, f"no session {session_id!r}")
        if format is None:
            info = svc.store.info(session_id)
            assert info is not None
            return JSONResponse({"session": info.as_dict(), "transcript": t.model_dump()})
        if format not in EXPORT_FORMATS:
            raise HTTPException(400, f"format must be one of {', '.join(EXPORT_FORMATS)}")
        fmt: ExportFormat = format  # type: ignore[assignment]
        return PlainTextResponse(
            export(t, fmt, file_id=session_id),
            media_type=MEDIA_TYPES[fmt],
            headers={"Content-Disposition": f'attachment; filename="{session_id}.{fmt}"'},
        )

    @app.put("/v1/sessions/{session_id}/speakers", dependencies=keyed)
    async def name_speakers(request: Request, session_id: str) -> dict:
        """Give speaker labels names (an empty name clears one); exports use them."""
        store = request.app.state.service.store
        try:
            names = speaker_names(await request.json())
            merged = store.set_speaker_names(session_id, names, MAX_SPEAKER_NAMES)
        except ValueError as exc:  # JSONDecodeError is a ValueError too
            raise HTTPException(400, str(exc)) from None
        if merged is None:
            raise HTTPException(404, f"no session {session_id!r}")
        return {"session_id": session_id, "speaker_names": merged}

    @app.delete("/v1/sessions/{session_id}", dependencies=keyed)
    async def delete_session(request: Request, session_id: str) -> dict:
        if not request.app.state.service.store.delete(session_id):
            raise HTTPException(404, f"no session {session_id!r}")
        return {"deleted": session_id}

    return app
