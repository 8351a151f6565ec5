"""The transcriber service over real sockets: protocol v1, file endpoint, sessions API."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from hubbub.audio import float_to_pcm16
from hubbub.decode import load_audio
from hubbub.evaluation.metrics import wer


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/v1/stream"


def stream_file(url: str, pcm: bytes, frame: int = 3333, **start) -> list[dict]:
    """Send a whole recording in odd-sized frames, then stop; return every message."""
    messages: list[dict] = []
    with connect(ws_url(url), max_size=None) as ws:
        ws.send(json.dumps({"type": "start", "sample_rate": 16000, **start}))
        messages.append(json.loads(ws.recv(timeout=30)))
        for i in range(0, len(pcm), frame):
            ws.send(pcm[i : i + frame])
        ws.send(json.dumps({"type": "stop"}))
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=120)))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1000
    return messages


def test_stream_gives_text_speakers_and_consistent_updates(transcriber_url, speech_dir):
    audio = load_audio(speech_dir / "Picovoice-falcon/falcon_test.flac")
    msgs = stream_file(transcriber_url, float_to_pcm16(audio), max_speakers=4)
    assert msgs[0]["type"] == "ready"
    assert msgs[0]["engine"] == "cpu" and msgs[0]["sample_rate"] == 16000
    assert msgs[-1]["type"] == "ended"
    updates = [m for m in msgs if m["type"] == "transcript"]
    assert [u["seq"] for u in updates] == list(range(1, len(updates) + 1))
    finals = [seg for u in updates for seg in u["finals"]]
    ids = [s["id"] for s in finals]
    assert len(ids) == len(set(ids)), "a final is sent once and never changes"
    assert {s["speaker"] for s in finals} == {"S1", "S2", "S3"}
    assert [s["speaker"] for s in finals][:1] == ["S1"]
    assert all(s["words"] and s["end"] >= s["start"] for s in finals)
    assert msgs[-1]["segments"] == len(finals)
    assert updates[-1]["audio_processed_s"] == pytest.approx(len(audio) / 16000, abs=0.05)
    # Every update reports lag; update size does not grow with the transcript.
    assert all("lag_s" in u and len(u["finals"]) <= 3 for u in updates)


def test_partials_are_replaced_and_text_is_right(transcriber_url, speech_dir):
    audio = load_audio(speech_dir / "MFA/acoustic_corpus.flac")
    msgs = stream_file(transcriber_url, float_to_pcm16(audio), frame=1601)
    updates = [m for m in msgs if m["type"] == "transcript"]
    with_partials = [u for u in updates if u["partials"]]
    assert len(with_partials) >= 5
    # The tail is whole each time: one open utterance -> at most one partial segment.
    assert all(len(u["partials"]) == 1 for u in with_partials)
    assert updates[-1]["partials"] == []
    text = " ".join(s["text"] for u in updates for s in u["finals"])
    ref = (speech_dir / "MFA/acoustic_corpus.txt").read_text()
    assert wer(ref, text).rate < 0.35


def test_resampled_stereo_stream(transcriber_url, speech_dir):
    import numpy as np
    import soxr

    audio = load_audio(speech_dir / "openai-whisper/jfk.flac")
    up = soxr.resample(audio, 16000, 44100)
    stereo = np.stack([up, up], axis=1).reshape(-1)
    msgs = stream_file(transcriber_url, float_to_pcm16(stereo), sample_rate=44100, channels=2)
    text = " ".join(s["text"] for m in msgs if m["type"] == "transcript" for s in m["finals"])
    assert "country" in text.lower()


def _expect_error(url: str, first, code: str, close_code: int, then=None) -> dict:
    with connect(ws_url(url)) as ws:
        ws.send(first)
        if then is not None:
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            ws.send(then)
        msg = json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert msg["type"] == "error" and msg["code"] == code, msg
    assert msg["message"]
    assert info.value.rcvd is not None and info.value.rcvd.code == close_code
    return msg


def test_bad_input_gets_clear_errors_and_server_keeps_serving(transcriber_url, speech_dir):
    _expect_error(transcriber_url, b"\x00\x01" * 100, "no_start", 1002)
    _expect_error(transcriber_url, "not json", "bad_message", 1002)
    _expect_error(transcriber_url, '{"type": "ping"}', "no_start", 1002)
    bad = json.dumps({"type": "start", "sample_rate": 16000, "encoding": "opus"})
    assert "encoding" in _expect_error(transcriber_url, bad, "unsupported_audio", 1003)["message"]
    rate = json.dumps({"type": "start", "sample_rate": 96000})
    _expect_error(transcriber_url, rate, "unsupported_audio", 1003)
    start = json.dumps({"type": "start", "sample_rate": 16000})
    _expect_error(transcriber_url, start, "bad_message", 1002, then="hello, this is not audio")
    _expect_error(transcriber_url, start, "bad_message", 1002, then=start)
    big = b"\x00" * (2 << 20)
    _expect_error(transcriber_url, start, "frame_too_large", 1009, then=big)
    # Still serving: health is fine, nothing leaked, and a good stream works.
    health = httpx.get(transcriber_url + "/health").json()
    assert health["status"] == "ok" and health["sessions"] == 0
    audio = load_audio(speech_dir / "cmusphinx-pocketsphinx/goforward.flac")
    msgs = stream_file(transcriber_url, float_to_pcm16(audio))
    assert "forward" in " ".join(
        s["text"].lower() for m in msgs if m["type"] == "transcript" for s in m["finals"]
    )


def test_ping_and_full_server(transcriber_url):
    start = json.dumps({"type": "start", "sample_rate": 16000})
    open_ws = []
    capacity = httpx.get(transcriber_url + "/health").json()["capacity"]
    assert 1 <= capacity <= 3  # measured, and never above the configured limit
    try:
        for _ in range(capacity):
            ws = connect(ws_url(transcriber_url))
            ws.send(start)
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            open_ws.append(ws)
        open_ws[0].send('{"type": "ping"}')
        assert json.loads(open_ws[0].recv(timeout=10))["type"] == "pong"
        msg = _expect_error(transcriber_url, start, "server_full", 1013)
        assert "capacity" in msg["message"]
    finally:
        for ws in open_ws:
            ws.send('{"type": "stop"}')
            ws.close()


def test_sessions_api_lists_and_exports(transcriber_url, speech_dir):
    audio = load_audio(speech_dir / "openai-whisper/jfk.flac")
    msgs = stream_file(transcriber_url, float_to_pcm16(audio))
    sid = msgs[0]["session_id"]
    listed = httpx.get(transcriber_url + "/v1/sessions").json()["sessions"]
    mine = next(s for s in listed if s["id"] == sid)
    assert mine["status"] == "ended" and mine["segments"] >= 1
    got = httpx.get(f"{transcriber_url}/v1/sessions/{sid}").json()
    assert "country" in " ".join(s["text"] for s in got["transcript"]["segments"]).lower()
    srt = httpx.get(f"{transcriber_url}/v1/sessions/{sid}", params={"format": "srt"}).text
    assert re.search(r"00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n\[S1\]", srt)
    assert httpx.get(f"{transcriber_url}/v1/sessions/nope").status_code == 404

    # Names for speaker labels: merged, cleaned, cleared by "", used by every export.
    names_url = f"{transcriber_url}/v1/sessions/{sid}/speakers"
    r = httpx.put(names_url, json={"S1": "  John\tF.\x00 Kennedy ", "S7": "Nobody"})
    assert r.json()["speaker_names"] == {"S1": "John F. Kennedy", "S7": "Nobody"}
    assert httpx.put(names_url, json={"S7": ""}).json()["speaker_names"] == {
        "S1": "John F. Kennedy"
    }
    txt = httpx.get(f"{transcriber_url}/v1/sessions/{sid}", params={"format": "txt"}).text
    assert re.match(r"\[00:00:\d\d\.\d{3}\] John F\. Kennedy: ", txt)
    for body in (["S1"], {"S1": 7}, {"S1": "x" * 65}, {f"S{i}": "x" for i in range(65)}):
        assert httpx.put(names_url, json=body).status_code == 400, body
    assert httpx.put(names_url, content=b"{").status_code == 400
    assert httpx.put(f"{transcriber_url}/v1/sessions/nope/speakers", json={}).status_code == 404

    bad = httpx.get(f"{transcriber_url}/v1/sessions/{sid}", params={"format": "docx"})
    assert bad.status_code == 400
    assert httpx.delete(f"{transcriber_url}/v1/sessions/{sid}").status_code == 200
    assert httpx.get(f"{transcriber_url}/v1/sessions/{sid}").status_code == 404


def test_metrics_exposed(transcriber_url):
    text = httpx.get(transcriber_url + "/metrics").text
    for name in (
        "hubbub_sessions_active",
        "hubbub_step_seconds",
        "hubbub_lag_seconds",
        "hubbub_final_latency_seconds",
        "hubbub_audio_seconds_total",
    ):
        assert name in text
