"""The relay survives its upstream being cut: a real transcriber behind a TCP proxy that
severs every connection mid-stream (as a load balancer's timeout or a restart would), and a
browser-side client that must see one unbroken stream with nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from hubbub.client import TranscriberClient
from hubbub.evaluation.cluster import spawn
from hubbub.evaluation.metrics import wer
from hubbub.protocol import SpeakersUpdate, TranscriptUpdate
from hubbub.settings import Settings
from hubbub.web.app import create_app

from support.servers import free_port, serve
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
    from hubbub.audio import float_to_pcm16
    from hubbub.decode import load_audio

    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))
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


def test_two_relays_on_one_session_never_fight(transcriber_url, speech_dir):
    """The same session relayed twice (a page that came back through another web app
    replica while the first still held its upstream): the newer takes it over, the older
    tells its browser ``taken_over`` and stops, and nobody resumes anybody."""
    from hubbub.audio import float_to_pcm16
    from hubbub.decode import load_audio

    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))
    with (
        serve(create_app(Settings(transcriber_url=transcriber_url))) as web_a,
        serve(create_app(Settings(transcriber_url=transcriber_url))) as web_b,
        connect(web_a.replace("http://", "ws://") + "/ws") as first,
    ):
        first.send(json.dumps(START))
        ready = json.loads(first.recv(timeout=30))
        first.send(pcm[:64000])
        with connect(web_b.replace("http://", "ws://") + "/ws") as second:
            resume = {"session_id": ready["session_id"], "resume_token": ready["resume_token"]}
            second.send(json.dumps({**START, **resume}))
            assert json.loads(second.recv(timeout=30))["resumed"] is True
            told = []
            try:
                while True:
                    told.append(json.loads(first.recv(timeout=10)))
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            assert told[-1]["type"] == "error" and told[-1]["code"] == "taken_over"
            assert code == 1008
            time.sleep(2)  # a fight would show as resumes by now (thousands, before)
            for web in (web_a, web_b):
                assert httpx.get(web + "/status").json()["relay"]["resumed_total"] == 0
            second.send(pcm[64000:])
            second.send(json.dumps({"type": "stop"}))
            msgs = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    msgs.append(json.loads(second.recv(timeout=60)))
    assert msgs[-1]["type"] == "ended"
    assert (
        "country"
        in " ".join(
            s["text"] for m in msgs if m["type"] == "transcript" for s in m["finals"]
        ).lower()
    )


def _transcriber(data_dir, port: int):
    env = {
        "HUBBUB_ENGINE": "cpu",
        "HUBBUB_DATA_DIR": str(data_dir),
        "HUBBUB_PORT": str(port),
        "HUBBUB_TRUSTED_PROXIES": '["127.0.0.1"]',
    }
    return spawn(["transcriber"], env, f"http://127.0.0.1:{port}/health")


@pytest.mark.slow
def test_a_dead_transcriber_is_told_within_seconds(speech_dir, tmp_path):
    """kill -9 and no restart: the relay cannot resume, and says so to the browser
    within its resume window, rather than showing 'live' while audio goes nowhere."""
    port = free_port()
    with (
        _transcriber(tmp_path, port) as proc,
        serve(create_app(Settings(transcriber_url=f"http://127.0.0.1:{port}"))) as web,
        connect(web.replace("http://", "ws://") + "/ws") as ws,
    ):
        ws.send(json.dumps(START))
        json.loads(ws.recv(timeout=30))
        ws.send(b"\x00\x00" * 16000)
        proc.kill()
        t0 = time.monotonic()
        msgs = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                msgs.append(json.loads(ws.recv(timeout=30)))
        told = time.monotonic() - t0
    assert msgs[-1]["code"] == "transcriber_lost"
    print(f"dead transcriber: browser told after {told:.1f} s")
    assert told < 10


@pytest.mark.slow
def test_kill_9_and_restart_through_the_relay_lose_and_repeat_nothing(speech_dir, tmp_path):
    """A client of the web app (the page's logic, in hubbub.client) streams in real time;
    the transcriber is killed and started again. Every final once, unique ids, one
    clock, the utterance in progress recovered."""
    from hubbub.audio import float_to_pcm16
    from hubbub.decode import load_audio

    port = free_port()
    clip = load_audio(speech_dir / "MFA/acoustic_corpus.flac")
    reference = (speech_dir / "MFA/acoustic_corpus.txt").read_text()
    pcm = float_to_pcm16(clip)
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(_transcriber(tmp_path, port))]
        web = stack.enter_context(
            serve(create_app(Settings(transcriber_url=f"http://127.0.0.1:{port}")))
        )

        def restart() -> None:
            procs[-1].kill()
            procs[-1].wait(timeout=10)
            procs.append(stack.enter_context(_transcriber(tmp_path, port)))

        finals, other, resumes = asyncio.run(_stream_with_restart(web, pcm, restart))
        # Whoever noticed first resumed: the relay (a quick restart), or the client.
        resumes += httpx.get(web + "/status").json()["relay"]["resumed_total"]
    assert resumes >= 1
    ids = [s.id for s in finals]
    assert other == ["ended"]
    assert len(ids) == len(set(ids))
    starts = [s.start for s in finals]
    assert starts == sorted(starts)
    score = wer(reference, " ".join(s.text for s in finals))
    print(f"through the relay, kill -9 + restart: {len(finals)} finals, WER {score.rate:.3f}")
    assert score.rate <= 0.2


async def _stream_with_restart(web: str, pcm: bytes, restart):
    client = TranscriberClient(web)
    stream = await client.open_resumable(resume_within_s=120)
    finals, other = [], []

    async def send() -> None:
        for i in range(0, len(pcm), FRAME):
            if i == len(pcm) // 2 // FRAME * FRAME:
                await asyncio.to_thread(restart)
            await stream.send_audio(pcm[i : i + FRAME])
            await asyncio.sleep(0.1)
        await stream.stop()

    sender = asyncio.create_task(send())
    async for msg in stream:
        if isinstance(msg, TranscriptUpdate):
            finals += msg.finals
        elif not isinstance(msg, SpeakersUpdate):
            other.append(msg.type)
    await sender
    await client.aclose()
    return finals, other, stream.resumes
