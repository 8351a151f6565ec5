"""Dropped connections resume: same session, same clock, every missed final delivered once,
and only for whoever holds the session's resume token."""

from __future__ import annotations

import itertools
import json
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from hubbub.audio import float_to_pcm16
from hubbub.decode import load_audio
from hubbub.settings import Settings
from hubbub.transcriber.app import create_app

from support.servers import serve

START = {"type": "start", "sample_rate": 16000}


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


def _refusal(url: str, start: dict) -> tuple[str, int]:
    with connect(_ws(url)) as ws:
        ws.send(json.dumps(start))
        msg = json.loads(ws.recv(timeout=10))
        try:
            ws.recv(timeout=10)
        except ConnectionClosed as closed:
            return msg.get("code", msg["type"]), closed.rcvd.code
    raise AssertionError("not closed")


def test_resume_after_drop_gets_missed_finals_and_same_speakers(transcriber_url, speech_dir):
    audio = load_audio(speech_dir / "Picovoice-falcon/falcon_test.flac")
    pcm = float_to_pcm16(audio)
    half = len(pcm) // 2 // 2 * 2
    ws = connect(_ws(transcriber_url))
    ws.send(json.dumps(START))
    ready = json.loads(ws.recv(timeout=10))
    sid, token = ready["session_id"], ready["resume_token"]
    assert len(token) >= 22  # >= 128 bits, url-safe
    for i in range(0, half, 4000):
        ws.send(pcm[i : min(i + 4000, half)])
    first = _drain(ws, timeout=3)  # whatever arrived before the drop
    last_seq = max((m["seq"] for m in first if m["type"] == "transcript"), default=0)
    seen = {s["id"] for m in first if m["type"] == "transcript" for s in m["finals"]}
    ws.close()  # dropped without "stop": the session waits for us
    time.sleep(1.0)
    resume = {**START, "session_id": sid, "last_seq": last_seq}
    # The id alone, or a wrong token, finds nothing: the same answer as a made-up id.
    assert _refusal(transcriber_url, resume) == ("unknown_session", 1008)
    wrong = {**resume, "resume_token": "x" * 32}
    assert _refusal(transcriber_url, wrong) == ("unknown_session", 1008)
    made_up = {**resume, "session_id": "nosuchsession", "resume_token": token}
    assert _refusal(transcriber_url, made_up) == ("unknown_session", 1008)
    with connect(_ws(transcriber_url)) as ws2:
        ws2.send(json.dumps({**resume, "resume_token": token}))
        again = json.loads(ws2.recv(timeout=10))
        assert again["type"] == "ready" and again["resumed"] is True
        assert again["session_id"] == sid and again["resume_token"] is None  # shown once
        assert again["resume_from_s"] == pytest.approx(half / 2 / 16000, abs=1e-6)  # all sent
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


def test_a_second_connection_takes_over_and_the_first_is_told(transcriber_url, speech_dir):
    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))
    with connect(_ws(transcriber_url)) as first:
        first.send(json.dumps(START))
        ready = json.loads(first.recv(timeout=10))
        first.send(pcm[:64000])
        with connect(_ws(transcriber_url)) as second:
            resume = {"session_id": ready["session_id"], "resume_token": ready["resume_token"]}
            second.send(json.dumps({**START, **resume}))
            assert json.loads(second.recv(timeout=10))["resumed"] is True
            told = _drain(first, until="error", timeout=10)
            assert told[-1] == {
                "type": "error",
                "code": "taken_over",
                "message": "another connection resumed this session",
            }
            with pytest.raises(ConnectionClosed) as closed:
                first.recv(timeout=10)
            assert closed.value.rcvd.code == 1008
            second.send(pcm[64000:])
            second.send(json.dumps({"type": "stop"}))
            msgs = _drain(second, until="ended")
    assert msgs[-1]["type"] == "ended"
    text = " ".join(s["text"] for m in msgs if m["type"] == "transcript" for s in m["finals"])
    assert "country" in text.lower()


def test_a_stopped_session_replays_to_its_owner_but_takes_no_more_audio(
    transcriber_url, speech_dir
):
    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))
    with connect(_ws(transcriber_url)) as ws:
        ws.send(json.dumps(START))
        ready = json.loads(ws.recv(timeout=10))
        ws.send(pcm)
        ws.send(json.dumps({"type": "stop"}))
        msgs = _drain(ws, until="ended")
    finals = [s for m in msgs if m["type"] == "transcript" for s in m["finals"]]
    revised = {k: v for m in msgs if m["type"] == "speakers" for k, v in m["relabel"].items()}
    now = [{**s, "speaker": revised.get(s["id"], s["speaker"])} for s in finals]
    resume = {**START, "session_id": ready["session_id"], "resume_token": ready["resume_token"]}
    with connect(_ws(transcriber_url)) as ws:
        ws.send(json.dumps({**resume, "last_seq": 0}))
        again = _drain(ws, until="ended")
    assert [m["type"] for m in again] == ["ready", "transcript", "ended"]
    assert again[1]["finals"] == now, "every final, with its speaker as now stored"
    info = httpx.get(f"{transcriber_url}/v1/sessions/{ready['session_id']}").json()
    assert info["session"]["status"] == "ended"


def test_a_restart_continues_the_session_on_its_clock_with_new_ids(
    cpu_engine, speech_dir, tmp_path
):
    """The server goes away mid-utterance (here: it shuts down); the client comes back
    with what the server had not settled, and the session goes on as one."""
    settings = Settings(engine="cpu", data_dir=str(tmp_path), resume_grace_s=5)
    audio = load_audio(speech_dir / "openai-whisper/jfk.flac")
    pcm = float_to_pcm16(audio)
    cut = len(pcm) // 2 // 2 * 2
    server = serve(create_app(settings, engine=cpu_engine))
    url = server.__enter__()
    with connect(_ws(url)) as ws:
        ws.send(json.dumps(START))
        ready = json.loads(ws.recv(timeout=10))
        ws.send(pcm[:cut])
        time.sleep(1.0)
        stopping = threading.Thread(target=server.__exit__, args=(None, None, None))
        stopping.start()
        first = _drain(ws, until="ended")
    stopping.join(30)
    # The shutdown turned the audio into finals and said so.
    assert first[-1]["type"] == "ended" and first[-1]["reason"] == "shutting_down"
    updates = [m for m in first if m["type"] == "transcript"]
    settled = updates[-1]["audio_committed_s"]
    assert settled == pytest.approx(cut / 2 / 16000, abs=1e-6)  # all of it is stored now
    resume = {
        **START,
        "session_id": ready["session_id"],
        "resume_token": ready["resume_token"],
        "last_seq": updates[-1]["seq"],
    }
    with serve(create_app(settings, engine=cpu_engine)) as url, connect(_ws(url)) as ws:
        ws.send(json.dumps(resume))
        again = json.loads(ws.recv(timeout=10))
        assert again["resumed"] is True and again["resume_from_s"] == settled
        ws.send(pcm[round(settled * 16000) * 2 :])
        ws.send(json.dumps({"type": "stop"}))
        rest = _drain(ws, until="ended")
        segs = httpx.get(f"{url}/v1/sessions/{ready['session_id']}").json()["transcript"]
    # The catch-up carries the last seq seen; numbering goes on from there, no gap.
    seqs = [m["seq"] for m in rest if m["type"] == "transcript"]
    last = updates[-1]["seq"]
    assert seqs == list(range(last, last + len(seqs)))
    ids = [s["id"] for s in segs["segments"]]
    assert len(ids) == len(set(ids)), "segment ids stay unique across the restart"
    # The second half's words lie after the first half, on the one clock.
    later = [s for m in rest if m["type"] == "transcript" for s in m["finals"]]
    assert later and min(s["start"] for s in later) >= settled - 0.05
    assert "country" in " ".join(s["text"] for s in segs["segments"]).lower()
