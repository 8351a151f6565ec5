"""The relay survives its upstream being cut: a real transcriber behind a TCP proxy that
severs every connection mid-stream (as a load balancer's timeout or a restart would), and a
browser-side client that must see one unbroken stream with nothing lost."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import connect

from hubbub.evaluation.metrics import wer
from hubbub.settings import Settings
from hubbub.web.app import create_app

from support.servers import serve
from support.tcp_proxy import TcpProxy

START = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1}
FRAME = 3200  # 100 ms


def stream_clip(url: str, pcm: bytes, on_frame=lambda i: None) -> tuple[dict, list[dict], int]:
    """Stream at ~4x real time through ``/ws``; every message after ``ready``, close code."""
    with connect(url.replace("http://", "ws://") + "/ws") as ws:
        ws.send(json.dumps({**START, "max_speakers": 2}))
        ready = json.loads(ws.recv(timeout=30))
        for i in range(0, len(pcm), FRAME):
            on_frame(i // FRAME)
            ws.send(pcm[i : i + FRAME])
            time.sleep(0.025)
        ws.send(json.dumps({"type": "stop"}))
        msgs = []
        try:
            while True:
                msgs.append(json.loads(ws.recv(timeout=60)))
        except Exception as closed:  # ConnectionClosed after "ended"
            code = getattr(getattr(closed, "rcvd", None), "code", None)
    return ready, msgs, code


@pytest.mark.slow
def test_relay_resumes_after_the_upstream_is_cut_twice(transcriber_url, speech_dir):
    from hubbub.audio import float_to_pcm16, load_audio

    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.16k.wav"))
    reference = (speech_dir / "openai-whisper/jfk.txt").read_text()
    n_frames = -(-len(pcm) // FRAME)
    cuts = {n_frames // 3, 2 * n_frames // 3}
    port = urlsplit(transcriber_url).port
    assert port is not None
    proxy = TcpProxy(port)

    def cut(i: int) -> None:
        if i in cuts:
            assert proxy.sever() >= 1

    with proxy.running(), serve(create_app(Settings(transcriber_url=proxy.url))) as web:
        ready, msgs, code = stream_clip(web, pcm, cut)
        status = httpx.get(web + "/status").json()
        stored = httpx.get(web + f"/api/sessions/{ready['session_id']}").json()

    assert ready["type"] == "ready" and not ready["resumed"]
    kinds = [m["type"] for m in msgs]
    assert "ready" not in kinds and "error" not in kinds, kinds
    assert kinds[-1] == "ended" and code == 1000
    assert status["relay"]["resumed_total"] == 2 and proxy.severed >= 2

    # Every byte reached the transcriber exactly once: its clock is the clip's length.
    assert msgs[-1]["audio_processed_s"] == pytest.approx(len(pcm) / 32000, abs=0.002)
    updates = [m for m in msgs if m["type"] == "transcript"]
    seqs = [u["seq"] for u in updates]
    assert seqs == sorted(seqs) and len(set(seqs)) >= len(seqs) - 2, "catch-ups may repeat"
    seen = [s for u in updates for s in u["finals"]]
    assert len({s["id"] for s in seen}) == len(seen), "no final twice"
    # What the client saw is what the transcriber stored: nothing lost in between.
    assert [s["id"] for s in seen] == [s["id"] for s in stored["transcript"]["segments"]]
    text = " ".join(s["text"] for s in seen)
    assert wer(reference, text).rate < 0.25, text
