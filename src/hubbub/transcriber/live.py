"""``WS /v1/stream``: one connection of protocol v1 (hubbub.protocol), new or resuming.

A connection is checked (origin, key, the client's stream limit), reads ``start``, and
is attached to a session: a new one, a live one it resumes (its id and resume token),
or a stored one continued after a restart. Then audio and control messages go to the
session (transcriber/sessions.py) until ``stop``, an error, or a disconnect (which
parks the session for a resume). Whatever goes wrong, the session is parked or ended:
it is never left holding a slot with nobody to end it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from hubbub.audio import AudioError
from hubbub.protocol import (
    Ended,
    Finalize,
    Ping,
    Pong,
    Ready,
    SpeakersUpdate,
    Start,
    Stop,
    TranscriptUpdate,
    client_message,
)
from hubbub.security import (
    Identity,
    client_address,
    new_resume_token,
    token_ok,
    websocket_refusal,
)
from hubbub.transcriber.scheduler import SchedulerFull
from hubbub.transcriber.service import Service
from hubbub.transcriber.sessions import LiveSession, SessionError, close_with_error
from hubbub.transcriber.store import SessionInfo

log = logging.getLogger(__name__)
HANDOVER_S = 5.0  # how long a replica waits for another to hand a session over
CLAIM_POLL_S = 0.1


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"][1:]) or "message"
    return f"{where}: {err['msg']}"


def parse_start(raw: str) -> Start:
    try:
        msg = client_message.validate_json(raw)
    except ValidationError as exc:
        fields = {str(e["loc"][1]) for e in exc.errors() if len(e["loc"]) > 1}
        code = "unsupported_audio" if fields & {"encoding", "sample_rate", "channels"} else None
        raise SessionError(code or "bad_message", _first_error(exc)) from exc
    if not isinstance(msg, Start):
        raise SessionError("no_start", f"the first message must be 'start', got {msg.type!r}")
    if msg.resume_token is not None and msg.session_id is None:
        raise SessionError("bad_message", "resume_token goes with the session_id it resumes")
    return msg


async def handle_stream(ws: WebSocket, svc: Service) -> None:
    await ws.accept()
    who = websocket_refusal(svc.settings, svc.keyring, ws)
    if isinstance(who, tuple):
        await _refuse(ws, svc, *who)
        return
    if svc.draining:
        await _refuse(ws, svc, "shutting_down", "the server is restarting; retry shortly")
        return
    client = client_address(svc.settings, ws)
    if svc.handshakes[client] >= svc.settings.max_connections_per_client:
        await _refuse(ws, svc, "too_many_connections", "too many connections opening at once")
        return
    await _connection(ws, svc, who, client)


async def _refuse(ws: WebSocket, svc: Service, code: str, message: str) -> None:
    svc.metrics.sessions_refused.labels(code).inc()
    await close_with_error(ws, code, message)


async def _connection(ws: WebSocket, svc: Service, who: Identity, client: str) -> None:
    session: LiveSession | None = None
    try:
        svc.handshakes[client] += 1
        try:
            start = await _read_start(ws, svc)
            session = await _open(ws, svc, start, who, client)
        finally:
            svc.handshakes[client] -= 1
            if svc.handshakes[client] <= 0:
                del svc.handshakes[client]
        if session is None:
            return  # an ended session was replayed to its owner
        await _receive(ws, session, svc)
    except SessionError as exc:
        svc.metrics.errors.labels(exc.code).inc()
        if session is not None and session.detach(ws):
            session.finish("stop")  # what was sent before the error is still transcribed
        await close_with_error(ws, exc.code, exc.message)
        return
    except (WebSocketDisconnect, TimeoutError):
        if session is not None and session.ws is ws:
            session.park(svc.settings.resume_grace_s)
        return
    except Exception as exc:
        log.exception("stream connection failed")
        svc.metrics.errors.labels("internal_error").inc()
        if session is not None and session.ws is ws:
            session.park(svc.settings.resume_grace_s)  # its owner may resume it
        await close_with_error(ws, "internal_error", f"{exc.__class__.__name__}; retry")
        return
    # ``stop``: the pump finishes the flush, says ``ended`` and closes the socket.
    await session.done.wait()


async def _read_start(ws: WebSocket, svc: Service) -> Start:
    msg = await asyncio.wait_for(ws.receive(), timeout=svc.settings.idle_timeout_s)
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    if msg.get("text") is None:
        raise SessionError("no_start", "the first message must be a JSON 'start' message")
    return parse_start(msg["text"])


async def _open(
    ws: WebSocket, svc: Service, start: Start, who: Identity, client: str
) -> LiveSession | None:
    """Attach ``ws`` to its session and greet it; None when the session had ended."""
    try:
        if start.session_id is None:
            _check_load(svc, client)
            session, token = _new(svc, start, who, client)
            session.attach(ws, client)
            await _greet(session, start, resumed=False, token=token)
            return session
        session = svc.live.get(start.session_id)
        if session is not None and not session.owned_by(who, start.resume_token):
            raise _unknown(start.session_id)
        if session is not None and session.state == "ending" and session.end_reason != "stop":
            # Its grace period just ran out: let it settle, then continue it from the store.
            await asyncio.wait_for(session.done.wait(), svc.settings.idle_timeout_s)
            session = None
        if session is not None:
            session.attach(ws, client, start)
            await _greet(session, start, resumed=True)
            return session
        info = _stored(svc, who, start)
        if info.status == "ended":
            await _replay_ended(ws, svc, info, start)
            return None
        _check_load(svc, client)
        await _claim(svc, info.id)
        try:
            # As its last owner left it: it may have stored more since we first looked.
            session = _continued(svc, start, client, _stored(svc, who, start))
        except BaseException:
            svc.store.release(info.id, svc.replica, "interrupted")
            raise
        session.attach(ws, client)
        await _greet(session, start, resumed=True)
        return session
    except AudioError as exc:
        raise SessionError("unsupported_audio", str(exc)) from exc
    except SchedulerFull as exc:
        svc.metrics.sessions_refused.labels("server_full").inc()
        raise SessionError("server_full", f"server is at capacity ({exc}); retry later") from exc


def _stored(svc: Service, who: Identity, start: Start) -> SessionInfo:
    """The stored session a resume names, if its token and tenant fit."""
    assert start.session_id is not None
    info = svc.store.info(start.session_id)
    if info is None or not (
        who.may_see(info.tenant) and token_ok(start.resume_token, info.token_hash)
    ):
        raise _unknown(start.session_id)
    return info


async def _claim(svc: Service, session_id: str) -> None:
    """Own a stored session: at once when no other replica's lease holds it; else ask its
    owner to hand it over, and wait for that or for its lease to lapse (a replica that
    died), a little over one lease at most."""
    lease_s = svc.settings.lease_s
    deadline = time.monotonic() + lease_s + HANDOVER_S
    asked = False
    while not svc.store.claim(session_id, svc.replica, lease_s):
        if not asked:
            svc.store.want(session_id, svc.replica)
            asked = True
        if time.monotonic() > deadline:
            raise SessionError(
                "session_busy", "another replica still holds this session; retry shortly"
            )
        await asyncio.sleep(CLAIM_POLL_S)


def _check_load(svc: Service, client: str) -> None:
    limit = svc.settings.max_connections_per_client
    if svc.client_load(client) >= limit:
        svc.metrics.sessions_refused.labels("too_many_connections").inc()
        raise SessionError("too_many_connections", f"at most {limit} streams per client")


def _unknown(session_id: str) -> SessionError:
    # The same answer whether the id exists or not: an id alone reveals nothing.
    return SessionError("unknown_session", f"no session {session_id!r} to resume with that token")


def _new(svc: Service, start: Start, who: Identity, client: str) -> tuple[LiveSession, str]:
    token, hashed = new_resume_token()
    session = LiveSession(
        svc, svc.new_session_id(), start, owner=who, client=client, token_hash=hashed
    )
    session.open()  # SchedulerFull: nothing was created
    svc.live[session.id] = session
    svc.store.create(
        session.id,
        svc.engine.name,
        "live",
        session.tenant,
        hashed,
        owner=svc.replica,
        lease_s=svc.settings.lease_s,
    )
    svc.metrics.sessions_total.labels("live").inc()
    return session, token


def _continued(svc: Service, start: Start, client: str, info: SessionInfo) -> LiveSession:
    """A stored session whose engine state is gone (a restart): a new engine session on
    the old clock, numbering on from the stored finals."""
    session = LiveSession(
        svc,
        info.id,
        start,
        owner=Identity(info.tenant),
        client=client,
        token_hash=info.token_hash,
        offset_s=info.committed_s,
        seq=max(info.last_seq, start.last_seq or 0),
        segment_base=info.segments,
        engine_state=svc.store.engine_state(info.id),
    )
    session.open()
    svc.live[session.id] = session
    svc.store.set_status(session.id, "live")
    return session


async def _greet(
    session: LiveSession, start: Start, *, resumed: bool, token: str | None = None
) -> None:
    """``ready`` (and for a resume, one catch-up update), with no update in between."""
    svc = session.svc
    async with session.lock:
        ready = Ready(
            session_id=session.id,
            engine=svc.engine.name,
            sample_rate=start.sample_rate,
            resumed=resumed,
            resume_token=token,
            resume_from_s=round(session.resume_from_s, 6) if resumed else 0.0,
            limits=svc.limits,
        )
        await session.send(ready)
        if resumed:
            for message in session.catch_up(start.last_seq or 0):
                await session.send(message)


async def _replay_ended(ws: WebSocket, svc: Service, info: SessionInfo, start: Start) -> None:
    """A session that ended with ``stop``: its owner gets what it missed, then ``ended``."""
    missed = [seg for _, seg in svc.store.finals_after(info.id, start.last_seq or 0)]
    seq = max(info.last_seq, start.last_seq or 0)
    revised = svc.store.relabels_after(info.id, start.last_seq or 0)
    speakers = [SpeakersUpdate(seq=seq, relabel=revised)] if revised else []
    for message in (
        Ready(
            session_id=info.id,
            engine=info.engine,
            sample_rate=start.sample_rate,
            resumed=True,
            resume_from_s=info.audio_s,
            limits=svc.limits,
        ),
        TranscriptUpdate(
            seq=seq,
            finals=missed,
            audio_received_s=info.audio_s,
            audio_processed_s=info.audio_s,
            audio_committed_s=info.audio_s,
            lag_s=0.0,
        ),
        *speakers,
        Ended(session_id=info.id, seq=seq, audio_processed_s=info.audio_s, segments=info.segments),
    ):
        await ws.send_text(message.model_dump_json())
    await ws.close()


async def _receive(ws: WebSocket, session: LiveSession, svc: Service) -> None:
    idle = svc.settings.idle_timeout_s
    while True:
        try:
            msg = await asyncio.wait_for(ws.receive(), timeout=idle)
        except TimeoutError as exc:
            raise SessionError("idle_timeout", f"nothing received for {idle:.0f} s") from exc
        if msg["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(msg.get("code", 1000))
        if session.ws is not ws:
            # A newer connection took the session over: what is still queued on this one
            # was resent there (after its catch-up), so it must not count twice.
            raise WebSocketDisconnect(1000)
        if msg.get("bytes") is not None:
            if session.state == "ending":
                raise SessionError("bad_message", "audio after 'stop'")
            session.audio(msg["bytes"])
            continue
        try:
            control = client_message.validate_json(msg.get("text") or "")
        except ValidationError as exc:
            raise SessionError(
                "bad_message", f"expected binary audio or a control message: {_first_error(exc)}"
            ) from exc
        if isinstance(control, Ping):
            await session.send(Pong())
        elif isinstance(control, Finalize):
            session.finalize()
        elif isinstance(control, Stop):
            session.finish("stop")
            return
        else:
            raise SessionError("bad_message", "'start' was already sent")
