"""A scripted stand-in for the transcriber, to test the web relay's mechanics only.

It is a test double, not a transcriber: it speaks protocol v1 on ``WS /v1/stream``
(``ready``, one ``transcript`` per audio frame with a made-up final, ``pong``, ``ended``)
and serves canned ``/health`` and ``/v1/sessions`` answers, so tests can make it refuse
(``server_full``), drop the connection abruptly, and record exactly what it received.
The real service is tested through the relay in tests/test_web.py and tests/test_browser.py.
"""

from __future__ import annotations

import http
import json
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from hubbub.protocol import (
    Ended,
    ErrorMessage,
    Limits,
    Pong,
    Ready,
    SpeakersUpdate,
    TranscriptUpdate,
)
from hubbub.transcript import Segment, Transcript, Word, export

from support.servers import LoopThread, free_port

LIMITS = Limits(max_frame_bytes=1 << 20, max_buffered_s=30, max_session_s=3600, idle_timeout_s=60)


def token_of(session_id: str) -> str:
    """The fake's resume token for a session (any client of the fake may know it)."""
    return f"token-of-{session_id}-0000000"


def canned_transcript(session_id: str) -> Transcript:
    return Transcript(
        session_id=session_id,
        duration=4.0,
        segments=[
            Segment(
                id=f"{session_id}-1",
                speaker="S1",
                start=0.5,
                end=1.5,
                text="hello there",
                words=[
                    Word(text=" hello", start=0.5, end=1.0),
                    Word(text=" there", start=1, end=1.5),
                ],
            ),
            Segment(id=f"{session_id}-2", speaker="S2", start=2.0, end=3.0, text="general kenobi"),
        ],
    )


class FakeTranscriber(LoopThread):
    """``mode``: 'normal', 'full' (refuse every start), 'drop' (abort after the first
    audio frame of a new session; a resumed one carries on, after a catch-up update like
    the real one's), 'forget' (abort likewise, then refuse to resume: unknown_session),
    'quiet' (no ``transcript`` after the first: a server with nothing new to say) or
    'relabel' (after the third final, a ``speakers`` message gives the first to S3)."""

    def __init__(self) -> None:
        self.mode = "normal"
        self.refuse_resumes = 0  # say unknown_session to this many resumes, like other replicas
        self.full_for = 0  # say server_full to this many new starts, like a busy replica
        self.starts: list[dict] = []
        self.headers: list[dict[str, str]] = []  # each stream's handshake headers
        self.controls: list[dict] = []
        self.close_codes: list[int | None] = []
        self.audio: dict[str, bytearray] = defaultdict(bytearray)
        self.finals: dict[str, list[Segment]] = defaultdict(list)  # one per frame, seq order
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._sessions = 0

    # -- WS /v1/stream ------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        try:
            start = json.loads(await ws.recv())
            self.starts.append(start)
            if self.mode == "full" or self.full_for > 0:
                self.full_for -= 1
                await ws.send(
                    ErrorMessage(code="server_full", message="fake: full").model_dump_json()
                )
                await ws.close(1013, "server_full")
                return
            sid = start.get("session_id")
            if sid is not None and (self.mode == "forget" or self.refuse_resumes > 0):
                self.refuse_resumes -= self.mode != "forget"
                error = ErrorMessage(code="unknown_session", message=f"fake: no {sid}")
                await ws.send(error.model_dump_json())
                await ws.close(1008, "unknown_session")
                return
            resumed = sid is not None and sid in self.audio
            if resumed and start.get("resume_token") != token_of(sid):
                error = ErrorMessage(code="unknown_session", message=f"fake: not yours {sid}")
                await ws.send(error.model_dump_json())
                await ws.close(1008, "unknown_session")
                return
            if not resumed:
                self._sessions += 1
                sid = f"fake{self._sessions}"
                self.audio[sid] = bytearray()
            received = len(self.audio[sid]) / 32000
            ready = Ready(
                session_id=sid,
                engine="fake",
                sample_rate=16000,
                limits=LIMITS,
                resumed=resumed,
                resume_token=None if resumed else token_of(sid),
                resume_from_s=received,
            )
            await ws.send(ready.model_dump_json())
            seq = len(self.finals[sid])
            if resumed:  # like the real one: the finals after last_seq, the current seq
                catch_up = TranscriptUpdate(
                    seq=seq,
                    finals=self.finals[sid][start.get("last_seq") or 0 :],
                    audio_received_s=received,
                    audio_processed_s=received,
                    audio_committed_s=received,
                    lag_s=0.0,
                )
                await ws.send(catch_up.model_dump_json())
            async for msg in ws:
                if isinstance(msg, bytes):
                    audio = self.audio[sid]
                    t0 = len(audio) / 32000
                    audio.extend(msg)
                    seq += 1
                    seg = Segment(
                        id=f"{sid}-{seq}",
                        speaker=f"S{seq % 2 + 1}",
                        start=t0,
                        end=len(audio) / 32000,
                        text=f"chunk {seq}",
                    )
                    self.finals[sid].append(seg)
                    upd = TranscriptUpdate(
                        seq=seq,
                        finals=[seg],
                        audio_received_s=len(audio) / 32000,
                        audio_processed_s=len(audio) / 32000,
                        audio_committed_s=len(audio) / 32000,
                        lag_s=0.0,
                    )
                    if self.mode != "quiet" or seq == 1:
                        await ws.send(upd.model_dump_json())
                    if self.mode == "relabel" and seq == 3:  # a second look at chunk 1
                        revised = {f"{sid}-1": "S3"}
                        await ws.send(SpeakersUpdate(seq=seq, relabel=revised).model_dump_json())
                    if self.mode in ("drop", "forget") and not resumed:
                        ws.transport.abort()
                        return
                    continue
                control = json.loads(msg)
                self.controls.append(control)
                if control["type"] == "ping":
                    await ws.send(Pong().model_dump_json())
                elif control["type"] == "stop":
                    ended = Ended(
                        session_id=sid,
                        seq=seq,
                        audio_processed_s=len(self.audio[sid]) / 32000,
                        segments=seq,
                    )
                    await ws.send(ended.model_dump_json())
                    await ws.close(1000)
                    return
        except ConnectionClosed:
            pass
        finally:
            self.close_codes.append(ws.close_code)

    # -- HTTP -------------------------------------------------------------------------------

    def _http(self, connection: ServerConnection, request):
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        url = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/protocol.json":
            return _json(connection, {"stream_path": "/v1/stream"})
        if url.path == "/health":
            return _json(connection, {"status": "ok", "engine": "fake", "sessions": 0})
        if url.path == "/v1/sessions":
            row = {"id": "fake1", "created": 1.7e9, "audio_s": 4.0, "segments": 2, "speakers": 2}
            return _json(connection, {"sessions": [row], "query": query})
        if url.path.startswith("/v1/sessions/"):
            sid = url.path.rsplit("/", 1)[1]
            if sid == "missing":
                return _json(connection, {"detail": "no session"}, http.HTTPStatus.NOT_FOUND)
            t = canned_transcript(sid)
            fmt = query.get("format")
            if fmt is None:
                return _json(connection, {"session": {"id": sid}, "transcript": t.model_dump()})
            resp = connection.respond(http.HTTPStatus.OK, export(t, fmt))  # type: ignore[arg-type]
            resp.headers["Content-Disposition"] = f'attachment; filename="{sid}.{fmt}"'
            return resp
        return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")

    # -- lifecycle --------------------------------------------------------------------------

    async def _server(self):
        return serve(
            self._handler, "127.0.0.1", self.port, process_request=self._http, compression=None
        )


def _json(connection: ServerConnection, obj: object, status=http.HTTPStatus.OK):
    resp = connection.respond(status, json.dumps(obj))
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = "application/json"
    return resp
