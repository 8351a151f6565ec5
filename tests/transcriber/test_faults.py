"""Faults and abuse against the real transcriber: a failing session, fields at extreme
values, dropped streams and capacity, kill -9 and restart, SIGTERM, slow readers, fuzz."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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

from hubbub.audio import float_to_pcm16
from hubbub.client import TranscriberClient
from hubbub.decode import load_audio
from hubbub.engines.cpu import CpuEngine
from hubbub.evaluation.cluster import spawn
from hubbub.evaluation.metrics import wer
from hubbub.protocol import ERROR_CLOSE_CODES, MAX_SEQ, SpeakersUpdate, Start, TranscriptUpdate
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


def _answer(url: str, first: str | bytes) -> tuple[str, int | None]:
    """What the server says to a connection that sends ``first``: a message type or an
    error code, and the close code if it closed."""
    with connect(_ws(url)) as ws:
        ws.send(first)
        msg = json.loads(ws.recv(timeout=10))
        if msg["type"] == "ready":
            ws.send('{"type": "stop"}')
            _collect(ws, timeout=30)
            return "ready", None
        try:
            ws.recv(timeout=10)
        except ConnectionClosed as closed:
            return msg["code"], closed.rcvd.code if closed.rcvd else None
    raise AssertionError("the server neither accepted nor closed")


def _admits_and_holds_nothing(url: str) -> None:
    """The server is not left holding anything: it has no live session, and takes a new
    stream."""
    for _ in range(100):
        if httpx.get(url + "/health").json()["sessions"] == 0:
            break
        time.sleep(0.1)
    assert httpx.get(url + "/health").json()["sessions"] == 0
    assert _answer(url, START) == ("ready", None)


class FaultyEngine(CpuEngine):
    """The real CPU engine, except that sessions asking for 7 speakers fail (injected)."""

    def __init__(self, real: CpuEngine) -> None:
        self.__dict__.update(real.__dict__)

    def step(self, batch):
        if any(item.session.options.max_speakers == 7 for item in batch):
            raise RuntimeError("injected failure")
        return super().step(batch)


def test_a_failing_session_ends_alone(cpu_engine, speech_dir, tmp_path):
    s = Settings(engine="cpu", data_dir=str(tmp_path), max_sessions=4)
    audio = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))
    with serve(create_app(s, engine=FaultyEngine(cpu_engine))) as url:
        with connect(_ws(url)) as good, connect(_ws(url)) as bad:
            good.send(START)
            bad.send(json.dumps({"type": "start", "sample_rate": 16000, "max_speakers": 7}))
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
        _admits_and_holds_nothing(url)


@pytest.fixture(scope="module")
def two_slots(cpu_engine, tmp_path_factory):
    """A server with room for two streams: one stuck session would show at once."""
    s = Settings(
        engine="cpu",
        data_dir=str(tmp_path_factory.mktemp("two")),
        max_sessions=2,
        idle_timeout_s=10,
        resume_grace_s=2,
    )
    with serve(create_app(s, engine=cpu_engine)) as url:
        yield url


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"last_seq": 2**70}, "bad_message"),
        ({"last_seq": MAX_SEQ + 1}, "bad_message"),
        ({"last_seq": -1}, "bad_message"),
        ({"session_id": "a" * 65}, "bad_message"),
        ({"session_id": "../../etc/passwd"}, "bad_message"),
        ({"session_id": "abc", "resume_token": "x" * 32, "last_seq": 2**31 - 1}, "unknown_session"),
        ({"resume_token": "x" * 32}, "bad_message"),
        ({"resume_token": "short"}, "bad_message"),
        ({"language": "x" * 10_000}, "bad_message"),
        ({"max_speakers": 10**9}, "bad_message"),
        ({"sample_rate": 10**18}, "unsupported_audio"),
        ({"channels": 0}, "unsupported_audio"),
        ({"realtime": "maybe"}, "bad_message"),
    ],
)
def test_start_fields_are_bounded(two_slots, fields, code):
    start = json.dumps({"type": "start", "sample_rate": 16000, **fields})
    assert _answer(two_slots, start) == (code, ERROR_CLOSE_CODES[code])
    _admits_and_holds_nothing(two_slots)
    # Twice more: nothing accumulates (two such calls filled a 2-slot server before).
    _answer(two_slots, start)
    _answer(two_slots, start)
    _admits_and_holds_nothing(two_slots)


extreme_int = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**53, 2**63, 2**64, 10**30]),
)
extreme = st.one_of(
    extreme_int,
    st.floats(allow_nan=False),
    st.text(max_size=300),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
start_fields = st.dictionaries(
    st.sampled_from([*list(Start.model_fields), "x_unknown"]), extreme, max_size=6
)
control = st.one_of(
    st.sampled_from(
        [
            '{"type": "ping"}',
            '{"type": "finalize"}',
            '{"type": "stop"}',
            '{"type": "start"}',
            '{"type": 5}',
            "{}",
            "[]",
            "null",
            '{"type": "ping", "x": 1}',
            '{"type": "finalize", "seq": 99999999999999999999999}',
            "[" * 5000,
        ]
    ),
    st.text(max_size=200),
    st.binary(max_size=5000),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(fields=start_fields, messages=st.lists(control, max_size=8))
def test_fuzz_start_and_controls_never_leave_the_server_stuck(two_slots, fields, messages):
    start = json.dumps({**fields, "type": "start"})
    with connect(_ws(two_slots)) as ws:
        ws.send(start)
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] in ("ready", "error")
        if first["type"] == "error":
            assert first["code"] in (
                "bad_message",
                "unsupported_audio",
                "unsupported_language",
                "unknown_session",
            )
        else:
            for m in messages:
                try:
                    ws.send(m)
                except ConnectionClosed:
                    break
            with contextlib.suppress(ConnectionClosed):
                ws.send('{"type": "stop"}')
            msgs = _collect(ws, timeout=30)
            assert msgs and msgs[-1]["type"] in ("ended", "error"), msgs[-3:]
            if msgs[-1]["type"] == "error":
                assert msgs[-1]["code"] in ("bad_message", "frame_too_large")
    _admits_and_holds_nothing(two_slots)


def test_dropped_streams_give_up_their_slot_and_count_for_their_client(cpu_engine, tmp_path):
    """A stream dropped without ``stop`` is parked for a resume: it no longer holds a
    compute slot (so nobody can keep the server full by dropping streams), but it still
    counts toward its client's limit."""
    s = Settings(
        engine="cpu",
        data_dir=str(tmp_path),
        max_sessions=1,
        max_connections_per_client=2,
        resume_grace_s=60,
    )
    with serve(create_app(s, engine=cpu_engine)) as url:
        readies = []
        for _ in range(2):
            ws = connect(_ws(url))
            ws.send(START)
            readies.append(json.loads(ws.recv(timeout=10)))
            ws.close()  # dropped: parked for 60 s
        assert [r["type"] for r in readies] == ["ready", "ready"], "the slot came back"
        assert _answer(url, START)[0] == "too_many_connections", "parked ones count"
        with connect(_ws(url)) as ws:  # resuming one of its own is not a new stream
            r = readies[0]
            resume = {**json.loads(START), "session_id": r["session_id"]}
            ws.send(json.dumps({**resume, "resume_token": r["resume_token"]}))
            assert json.loads(ws.recv(timeout=10))["resumed"] is True
            # Now it holds the only slot: resuming the other is refused, and may retry.
            with connect(_ws(url)) as other:
                r2 = readies[1]
                other.send(
                    json.dumps(
                        {
                            **json.loads(START),
                            "session_id": r2["session_id"],
                            "resume_token": r2["resume_token"],
                        }
                    )
                )
                assert json.loads(other.recv(timeout=10))["code"] == "server_full"
            ws.send('{"type": "stop"}')
            assert _collect(ws)[-1]["type"] == "ended"


def test_silent_uploads_do_not_inflate_measured_capacity(cpu_engine, tmp_path):
    """Capacity is measured on speech: minutes of silence cost the engine little and
    must not make room for streams that speech would not have."""
    s = Settings(engine="cpu", data_dir=str(tmp_path))  # capacity measured, not fixed
    silence = tmp_path / "silence.wav"
    import soundfile as sf

    sf.write(silence, [0.0] * (16000 * 120), 16000)
    with serve(create_app(s, engine=cpu_engine)) as url:
        before = httpx.get(url + "/health").json()["capacity"]
        for _ in range(2):
            with silence.open("rb") as f:
                r = httpx.post(url + "/v1/audio/transcriptions", files={"file": f}, timeout=120)
            assert r.status_code == 200 and r.json()["text"] == ""
        after = httpx.get(url + "/health").json()["capacity"]
    assert after == before == cpu_engine.capacity


def _transcriber(data_dir: Path, port: int, **env: str):
    """``hubbub transcriber`` in a process of its own, until the ``with`` block ends."""
    base = {
        "HUBBUB_ENGINE": "cpu",
        "HUBBUB_DATA_DIR": str(data_dir),
        "HUBBUB_PORT": str(port),
        "HUBBUB_RESUME_GRACE_S": "30",
    }
    return spawn(["transcriber"], {**base, **env}, f"http://127.0.0.1:{port}/health")


async def _stream_through_a_kill(
    url: str, pcm: bytes, kill_at: float, restart
) -> tuple[list[TranscriptUpdate], list[str], float]:
    """Stream ``pcm`` in real time through a ``ResumingStream`` (what ``hubbub stream``
    uses); at ``kill_at`` of the way through call ``restart()`` (kill -9, start again).
    Returns every update, what else came, and how long the stream was away."""
    client = TranscriberClient(url)
    stream = await client.open_resumable(resume_within_s=120)
    updates: list[TranscriptUpdate] = []
    other: list[str] = []
    away = {"s": 0.0}

    async def send() -> None:
        frame = 3200  # 0.1 s
        for i in range(0, len(pcm), frame):
            if i == int(len(pcm) * kill_at) // frame * frame:
                t0 = time.monotonic()
                await asyncio.to_thread(restart)
                away["s"] = time.monotonic() - t0
            await stream.send_audio(pcm[i : i + frame])
            await asyncio.sleep(0.1)
        await stream.stop()

    sender = asyncio.create_task(send())
    async for msg in stream:
        if isinstance(msg, TranscriptUpdate):
            updates.append(msg)
        elif not isinstance(msg, SpeakersUpdate):  # revisions: only speakers change
            other.append(msg.type)
    await sender
    await client.aclose()
    assert stream.resumes >= 1
    return updates, other, away["s"]


def test_kill_9_and_restart_lose_and_repeat_nothing(speech_dir, tmp_path):
    """kill -9 mid-utterance, then a restart: the client (hubbub stream's) resumes, every
    final arrives exactly once with a unique id, the clock runs on, and the utterance
    that was in progress is transcribed from the audio the client kept."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clip = load_audio(speech_dir / "MFA/acoustic_corpus.flac")  # 26.7 s, one speaker
    reference = (speech_dir / "MFA/acoustic_corpus.txt").read_text()
    pcm = float_to_pcm16(clip)
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(_transcriber(tmp_path, port))]

        def restart() -> None:
            procs[-1].kill()  # SIGKILL: no shutdown hook runs
            procs[-1].wait(timeout=10)
            procs.append(stack.enter_context(_transcriber(tmp_path, port)))

        updates, other, away = asyncio.run(_stream_through_a_kill(url, pcm, 0.45, restart))
        finals = [s for u in updates for s in u.finals]
        ids = [s.id for s in finals]
        stored = httpx.get(f"{url}/v1/sessions").json()["sessions"][0]
        t = httpx.get(f"{url}/v1/sessions/{stored['id']}").json()["transcript"]
    assert other == ["ended"]
    assert len(ids) == len(set(ids)), "no final twice, ids unique"
    assert [s["id"] for s in t["segments"]] == sorted(ids, key=ids.index), "seen == stored"
    seqs = [u.seq for u in updates]
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(seqs)), "no seq gap"
    starts = [s.start for s in finals]
    assert starts == sorted(starts), "one clock"
    assert finals[-1].end == pytest.approx(len(clip) / 16000, abs=2.0)
    # The utterance that was open at the kill is there: the whole text stays close to the
    # reference (26.7 s of one speaker; the clip alone scores about 0.1).
    score = wer(reference, " ".join(s.text for s in finals))
    print(f"kill -9 + restart: away {away:.1f} s, {len(finals)} finals, WER {score.rate:.3f}")
    print(" | ".join(f"{s.start:.1f}-{s.end:.1f} {s.text}" for s in finals))
    assert score.rate <= 0.2


def test_sigterm_sends_every_final_and_ended_then_exits(speech_dir, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))
    with _transcriber(tmp_path, port) as proc, connect(_ws(url)) as ws:
        ws.send(START)
        json.loads(ws.recv(timeout=10))
        ws.send(pcm)  # no stop: the audio is still in flight when the server is told to go
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        msgs = _collect(ws, timeout=30)
        told = time.monotonic() - t0
        assert msgs[-1]["type"] == "ended" and msgs[-1]["reason"] == "shutting_down"
        assert "country" in _text(msgs).lower()
        # uvicorn shuts down gracefully, then re-raises the signal (exit -15) as it should.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    print(f"SIGTERM: finals and ended after {told:.2f} s")


def test_a_client_that_never_reads_does_not_stall_others(transcriber_url, speech_dir):
    pcm = float_to_pcm16(load_audio(speech_dir / "MFA/acoustic_corpus.flac"))
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
            short = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))
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


def test_transcriber_refuses_bad_http_gracefully(transcriber_url):
    with pytest.raises(InvalidStatus):
        connect(transcriber_url.replace("http://", "ws://") + "/nope").close()
