"""Dropped connections resume: same session, same clock, every missed final delivered."""

from __future__ import annotations

import itertools
import json
import time

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from hubbub.audio import float_to_pcm16, load_audio
from hubbub.settings import Settings
from hubbub.transcriber.app import create_app

from support.servers import serve


def _ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/v1/stream"


def _drain(ws, until: str | None = None, timeout: float = 60) -> list[dict]:
    out = []
    try:
        while True:
            msg = json.loads(ws.recv(timeout=timeout))
            out.append(msg)
            if msg["type"] == until:
                break
    except (ConnectionClosed, TimeoutError):
        pass
    return out


def test_resume_after_drop_gets_missed_finals_and_same_speakers(transcriber_url, speech_dir):
    audio = load_audio(speech_dir / "Picovoice-falcon/falcon_test.16k.wav")
    pcm = float_to_pcm16(audio)
    half = len(pcm) // 2 // 2 * 2
    start = {"type": "start", "sample_rate": 16000}
    ws = connect(_ws(transcriber_url))
    ws.send(json.dumps(start))
    ready = json.loads(ws.recv(timeout=10))
    sid = ready["session_id"]
    for i in range(0, half, 4000):
        ws.send(pcm[i : min(i + 4000, half)])
    first = _drain(ws, timeout=3)  # whatever arrived before the drop
    last_seq = max((m["seq"] for m in first if m["type"] == "transcript"), default=0)
    seen = {s["id"] for m in first if m["type"] == "transcript" for s in m["finals"]}
    ws.close()  # dropped without "stop": the session waits for us
    time.sleep(1.0)
    with connect(_ws(transcriber_url)) as ws2:
        ws2.send(json.dumps({**start, "session_id": sid, "last_seq": last_seq}))
        again = json.loads(ws2.recv(timeout=10))
        assert again["type"] == "ready" and again["resumed"] is True
        assert again["session_id"] == sid
        catch_up = json.loads(ws2.recv(timeout=10))
        assert catch_up["type"] == "transcript"
        for i in range(half, len(pcm), 4000):
            ws2.send(pcm[i : i + 4000])
        ws2.send(json.dumps({"type": "stop"}))
        rest = [catch_up, *_drain(ws2, until="ended")]
    assert rest[-1]["type"] == "ended"
    later = [s for m in rest if m["type"] == "transcript" for s in m["finals"]]
    assert not seen & {s["id"] for s in later}, "nothing is sent twice"
    updates = [m for m in rest if m["type"] == "transcript"]
    assert all(b["seq"] == a["seq"] + 1 for a, b in itertools.pairwise(updates))
    stored = httpx.get(f"{transcriber_url}/v1/sessions/{sid}").json()["transcript"]["segments"]
    assert {s["id"] for s in stored} == seen | {s["id"] for s in later}
    # One clock and one set of speakers across the drop.
    assert {s["speaker"] for s in stored} == {"S1", "S2", "S3"}
    assert stored[-1]["end"] > len(audio) / 16000 - 2


def test_transcripts_survive_a_restart_and_resume_on_the_same_clock(
    cpu_engine, speech_dir, tmp_path
):
    settings = Settings(engine="cpu", data_dir=str(tmp_path), resume_grace_s=5)
    audio = load_audio(speech_dir / "openai-whisper/jfk.16k.wav")
    pcm = float_to_pcm16(audio)
    start = {"type": "start", "sample_rate": 16000}
    with serve(create_app(settings, engine=cpu_engine)) as url, connect(_ws(url)) as ws:
        ws.send(json.dumps(start))
        sid = json.loads(ws.recv(timeout=10))["session_id"]
        ws.send(pcm)
        ws.send(json.dumps({"type": "stop"}))
        msgs = _drain(ws, until="ended")
    first_text = " ".join(s["text"] for m in msgs if m["type"] == "transcript" for s in m["finals"])
    assert "country" in first_text.lower()
    last_seq = msgs[-1]["seq"]
    with serve(create_app(settings, engine=cpu_engine)) as url:
        got = httpx.get(f"{url}/v1/sessions/{sid}").json()
        assert " ".join(s["text"] for s in got["transcript"]["segments"]) == first_text
        with connect(_ws(url)) as ws:
            ws.send(json.dumps({**start, "session_id": sid, "last_seq": last_seq}))
            assert json.loads(ws.recv(timeout=10))["resumed"] is True
            ws.send(pcm)
            ws.send(json.dumps({"type": "stop"}))
            msgs2 = _drain(ws, until="ended")
        segs = httpx.get(f"{url}/v1/sessions/{sid}").json()["transcript"]["segments"]
    assert [m["seq"] for m in msgs2 if m["type"] == "transcript"][1] == last_seq + 1
    # The second part continues the clock: its words come after the first 11 s.
    assert segs[-1]["start"] >= 11.0
    assert len(segs) >= 2 * len([1 for m in msgs if m["type"] == "transcript" for _ in m["finals"]])
