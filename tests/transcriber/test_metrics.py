"""The transcriber's /metrics: what Prometheus scrapes after real streams."""

from __future__ import annotations

import json
import re

import httpx
from websockets.sync.client import connect

from hubbub.audio import float_to_pcm16
from hubbub.decode import load_audio


def _value(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert found, name
    return float(found.group(1))


def test_metrics_count_sessions_audio_finals_steps_and_refusals(transcriber_url, speech_dir):
    before = httpx.get(transcriber_url + "/metrics").text
    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))
    ws_url = transcriber_url.replace("http", "ws") + "/v1/stream"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "start"}))
        ws.recv(timeout=10)
        ws.send(pcm)
        ws.send('{"type": "stop"}')
        while json.loads(ws.recv(timeout=60))["type"] != "ended":
            pass
    with connect(ws_url) as ws:
        ws.send('{"type": "start", "session_id": "nope", "resume_token": "' + "x" * 32 + '"}')
        ws.recv(timeout=10)
    after = httpx.get(transcriber_url + "/metrics").text
    for name, grew_by in [
        ('hubbub_sessions_total{kind="live"}', 1),
        ("hubbub_final_segments_total", 1),
        ("hubbub_step_seconds_count", 10),
        ('hubbub_session_errors_total{code="unknown_session"}', 1),
    ]:
        was = _value(before, name) if name.split("{")[0] in before and name in before else 0.0
        assert _value(after, name) >= was + grew_by, name
    assert _value(after, "hubbub_audio_seconds_total") >= 10.5
    assert _value(after, "hubbub_sessions_active") == 0
