"""Revised speakers through the transcriber: the ``speakers`` message, the store, exports,
and a resumed client that missed the revision. The engine is a scripted one (the engine
contract, exactly) so that the revision comes when the test wants it."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from hubbub.engines.base import ChunkInput, Engine, EngineSession, EngineUpdate, SessionOptions
from hubbub.settings import Settings
from hubbub.transcriber.app import create_app
from hubbub.transcript import Segment

from support.servers import serve

CHUNK = 1600  # 0.1 s
START = {"type": "start", "sample_rate": 16000}


@dataclass
class _Session(EngineSession):
    steps: int = 0


class RevisingEngine(Engine):
    """A final per chunk, speaker S<n>; at the 4th, a second look puts the first two and
    the newest under S9."""

    name = "revising"
    chunk_samples = CHUNK

    def open_session(self, session_id: str, options: SessionOptions) -> EngineSession:
        return _Session(id=session_id, options=options)

    def close_session(self, session: EngineSession) -> None:
        pass

    def step(self, batch: Sequence[ChunkInput]) -> list[EngineUpdate]:
        out = []
        for item in batch:
            s = item.session
            assert isinstance(s, _Session)
            start = s.audio_s
            s.samples_in += len(item.audio)
            if not len(item.audio):
                out.append(EngineUpdate(s, committed_s=s.audio_s))
                continue
            s.steps += 1
            seg = Segment(
                id=s.next_segment_id(),
                speaker=f"S{s.steps}",
                start=start,
                end=s.audio_s,
                text=f"chunk {s.steps}",
            )
            relabel = {}
            if s.steps == 4:
                relabel = {f"{s.id}-1": "S9", f"{s.id}-2": "S9", seg.id: "S9"}
            out.append(EngineUpdate(s, [seg], committed_s=s.audio_s, relabel=relabel))
        return out


def _messages(ws, until: str, timeout: float = 10) -> list[dict]:
    out = []
    try:
        while True:
            out.append(json.loads(ws.recv(timeout=timeout)))
            if out[-1]["type"] == until:
                return out
    except (ConnectionClosed, TimeoutError):
        return out


def test_a_revision_is_sent_stored_exported_and_caught_up(tmp_path):
    settings = Settings(data_dir=str(tmp_path), max_sessions=2, resume_grace_s=30)
    with serve(create_app(settings, engine=RevisingEngine())) as url:
        ws_url = url.replace("http", "ws") + "/v1/stream"
        with connect(ws_url) as ws:
            ws.send(json.dumps(START))
            ready = json.loads(ws.recv(timeout=10))
            sid = ready["session_id"]
            for _ in range(5):
                ws.send(b"\x01\x00" * CHUNK)
                time.sleep(0.05)
            ws.send('{"type": "stop"}')
            msgs = _messages(ws, "ended")
        updates = [m for m in msgs if m["type"] == "transcript"]
        finals = {s["id"]: s["speaker"] for u in updates for s in u["finals"]}
        assert finals[f"{sid}-4"] == "S9", "a final revised as it is made goes out revised"
        revision = next(m for m in msgs if m["type"] == "speakers")
        before = msgs[msgs.index(revision) - 1]
        assert before["type"] == "transcript" and revision["seq"] == before["seq"]
        assert revision["relabel"] == {f"{sid}-1": "S9", f"{sid}-2": "S9"}
        seqs = [u["seq"] for u in updates]
        assert seqs == list(range(1, len(seqs) + 1)), "the revision takes no number"

        stored = httpx.get(f"{url}/v1/sessions/{sid}").json()["transcript"]["segments"]
        assert [s["speaker"] for s in stored] == ["S9", "S9", "S3", "S9", "S5"]
        httpx.put(f"{url}/v1/sessions/{sid}/speakers", json={"S9": "Ada"})
        srt = httpx.get(f"{url}/v1/sessions/{sid}", params={"format": "srt"}).text
        # S9's first two finals follow each other: one cue
        assert srt.count("[Ada]") == 2 and "[Ada] chunk 1 chunk 2" in srt

        # A client that saw only the first two updates resumes after the revision: it gets
        # the finals it missed as they are now, and the new speakers of those it had.
        resume = {**START, "session_id": sid, "resume_token": ready["resume_token"]}
        with connect(ws_url) as ws:
            ws.send(json.dumps({**resume, "last_seq": 2}))
            again = _messages(ws, "ended")
        assert [m["type"] for m in again] == ["ready", "transcript", "speakers", "ended"]
        assert [s["speaker"] for s in again[1]["finals"]] == ["S3", "S9", "S5"]
        assert again[2]["relabel"] == {f"{sid}-1": "S9", f"{sid}-2": "S9"}
