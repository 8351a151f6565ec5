"""Faults and abuse: keys, origins, a failing session, crashes, SIGTERM, slow readers, fuzz."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from hubbub.audio import float_to_pcm16, load_audio
from hubbub.engines.cpu import CpuEngine
from hubbub.loadtest import spawn
from hubbub.settings import Settings
from hubbub.transcriber.app import create_app

from support.servers import free_port, serve

START = json.dumps({"type": "start", "sample_rate": 16000})


def _ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/v1/stream"


def _collect(ws, timeout: float = 120) -> list[dict]:
    out = []
    try:
        while True:
            out.append(json.loads(ws.recv(timeout=timeout)))
            if out[-1]["type"] in ("ended", "error"):
                break
    except (ConnectionClosed, TimeoutError):
        pass
    return out


def _text(msgs: list[dict]) -> str:
    return " ".join(s["text"] for m in msgs if m["type"] == "transcript" for s in m["finals"])


def _refused(url: str, headers: dict) -> tuple[str, int]:
    """The error code and close code of a WebSocket the server refuses at once."""
    ws = connect(url, additional_headers=headers)
    code = json.loads(ws.recv(timeout=10))["code"]
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    return code, closed.value.rcvd.code


def test_api_key_and_origin(cpu_engine, tmp_path):
    s = Settings(engine="cpu", data_dir=str(tmp_path), api_key="s3cret")
    with serve(create_app(s, engine=cpu_engine)) as url:
        assert httpx.get(url + "/health").status_code == 200  # probes need no key
        assert httpx.get(url + "/v1/sessions").status_code == 401
        ok = httpx.get(url + "/v1/sessions", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(url + "/v1/sessions", headers={"X-API-Key": "nope"}).status_code == 401
        assert _refused(_ws(url), {}) == ("unauthorized", 1008)
        with connect(_ws(url) + "?token=s3cret") as ws:
            ws.send(START)
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            ws.send('{"type": "stop"}')
        evil = {"Origin": "http://evil.example"}
        assert _refused(_ws(url) + "?token=s3cret", evil) == ("forbidden_origin", 1008)
        own = {"Origin": url}
        with connect(_ws(url) + "?token=s3cret", additional_headers=own) as ws:
            ws.send(START)
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            ws.send('{"type": "stop"}')


class FaultyEngine(CpuEngine):
    """The real CPU engine, except that sessions named boom-* fail (fault injection)."""

    def __init__(self, real: CpuEngine) -> None:
        self.__dict__.update(real.__dict__)

    def step(self, batch):
        if any(item.session.id.startswith("boom") for item in batch):
            raise RuntimeError("injected failure")
        return super().step(batch)


def test_a_failing_session_ends_alone(cpu_engine, speech_dir, tmp_path):
    s = Settings(engine="cpu", data_dir=str(tmp_path), max_sessions=4)
    audio = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.16k.wav"))
    with serve(create_app(s, engine=FaultyEngine(cpu_engine))) as url:
        good, bad = connect(_ws(url)), connect(_ws(url))
        good.send(START)
        bad.send(json.dumps({"type": "start", "sample_rate": 16000, "session_id": "boom-1"}))
        assert json.loads(good.recv(timeout=10))["type"] == "ready"
        assert json.loads(bad.recv(timeout=10))["type"] == "ready"
        for i in range(0, len(audio), 8000):
            with contextlib.suppress(ConnectionClosed):  # the failed one is closed early
                bad.send(audio[i : i + 8000])
            good.send(audio[i : i + 8000])
        good.send('{"type": "stop"}')
        bad_msgs, good_msgs = _collect(bad), _collect(good)
        assert bad_msgs[-1]["type"] == "error" and bad_msgs[-1]["code"] == "engine_error"
        assert good_msgs[-1]["type"] == "ended"
        assert "country" in _text(good_msgs).lower()
        assert httpx.get(url + "/health").json()["sessions"] == 0


def _transcriber(data_dir: Path, port: int):
    """``hubbub transcriber`` in a process of its own, until the ``with`` block ends."""
    env = {
        "HUBBUB_ENGINE": "cpu",
        "HUBBUB_DATA_DIR": str(data_dir),
        "HUBBUB_PORT": str(port),
        "HUBBUB_RESUME_GRACE_S": "30",
    }
    return spawn(["transcriber"], env, f"http://127.0.0.1:{port}/health")


def test_kill_9_keeps_finals_and_the_client_resumes(speech_dir, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pcm = float_to_pcm16(load_audio(speech_dir / "Picovoice-falcon/falcon_test.16k.wav"))
    with _transcriber(tmp_path, port) as proc:
        ws = connect(_ws(url))
        ws.send(START)
        sid = json.loads(ws.recv(timeout=10))["session_id"]
        ws.send(pcm[: len(pcm) * 3 // 4 // 2 * 2])
        seen, last_seq = [], 0
        while not seen:  # wait for a final to be stored and sent
            msg = json.loads(ws.recv(timeout=60))
            if msg["type"] == "transcript":
                last_seq = msg["seq"]
                seen += msg["finals"]
        proc.kill()  # SIGKILL: no shutdown hook runs
        proc.wait(timeout=10)
    with _transcriber(tmp_path, port):
        stored = httpx.get(f"{url}/v1/sessions/{sid}").json()["transcript"]["segments"]
        assert {s["id"] for s in seen} <= {s["id"] for s in stored}
        with connect(_ws(url)) as ws:
            ws.send(
                json.dumps(
                    {"type": "start", "sample_rate": 16000, "session_id": sid, "last_seq": last_seq}
                )
            )
            assert json.loads(ws.recv(timeout=10))["resumed"] is True
            ws.send(pcm[len(pcm) * 3 // 4 // 2 * 2 :])
            ws.send('{"type": "stop"}')
            assert _collect(ws)[-1]["type"] == "ended"


def test_sigterm_flushes_pending_finals(speech_dir, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.16k.wav"))
    with _transcriber(tmp_path, port) as proc:
        ws = connect(_ws(url))
        ws.send(START)
        sid = json.loads(ws.recv(timeout=10))["session_id"]
        ws.send(pcm)  # no stop: the audio is still in flight when the server is told to go
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal (exit -15) as it should.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    with _transcriber(tmp_path, port):
        stored = httpx.get(f"{url}/v1/sessions/{sid}").json()["transcript"]["segments"]
        assert "country" in " ".join(s["text"] for s in stored).lower()


def test_a_client_that_never_reads_does_not_stall_others(transcriber_url, speech_dir):
    pcm = float_to_pcm16(load_audio(speech_dir / "MFA/acoustic_corpus.16k.wav"))
    slow = connect(_ws(transcriber_url), max_queue=1)
    slow.send(START)
    stop = threading.Event()

    def never_read() -> None:
        # Audio at the pace of speech (0.25 s every 0.25 s); updates are never read.
        for i in range(0, len(pcm), 8000):
            if stop.wait(0.25):
                return
            slow.send(pcm[i : i + 8000])

    t = threading.Thread(target=never_read, daemon=True)
    t.start()
    try:
        with connect(_ws(transcriber_url)) as ws:
            ws.send(START)
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            short = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.16k.wav"))
            ws.send(short)
            ws.send('{"type": "stop"}')
            msgs = _collect(ws, timeout=60)
        assert msgs[-1]["type"] == "ended"
        assert "country" in _text(msgs).lower()
    finally:
        stop.set()
        t.join(timeout=10)
        slow.send('{"type": "stop"}')
        slow.close()


control = st.one_of(
    st.sampled_from(
        [
            '{"type": "ping"}',
            '{"type": "finalize"}',
            '{"type": "start"}',
            '{"type": 5}',
            "{}",
            "[]",
            "null",
            '{"type": "ping", "x": 1}',
        ]
    ),
    st.text(max_size=200),
)
frames = st.binary(max_size=5000)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(control, frames), max_size=12))
def test_fuzz_messages_never_break_the_server(transcriber_url, messages):
    with connect(_ws(transcriber_url)) as ws:
        ws.send(START)
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        closed = False
        for m in messages:
            try:
                ws.send(m)
            except ConnectionClosed:
                closed = True
                break
        if not closed:
            with contextlib.suppress(ConnectionClosed):
                ws.send('{"type": "stop"}')
        msgs = _collect(ws, timeout=30)
    assert msgs, "the server always answers"
    assert msgs[-1]["type"] in ("ended", "error")
    if msgs[-1]["type"] == "error":
        assert msgs[-1]["code"] in ("bad_message", "frame_too_large")
    for _ in range(50):
        if httpx.get(transcriber_url + "/health").json()["sessions"] == 0:
            break
        time.sleep(0.1)
    assert httpx.get(transcriber_url + "/health").json()["sessions"] == 0


def test_transcriber_refuses_bad_http_gracefully(transcriber_url):
    with pytest.raises(InvalidStatus):
        connect(transcriber_url.replace("http://", "ws://") + "/nope").close()
