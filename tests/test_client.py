"""hubbub.client against real sockets: a scripted transcriber (support/fake_transcriber.py)
for the mechanics, and the replay log that lets a stream survive a restarted server."""

from __future__ import annotations

import asyncio

import pytest

from hubbub.client import ReplayLog, TranscriberClient, TranscriberError, TranscriberUnavailable

from support.fake_transcriber import FakeTranscriber, token_of
from support.servers import free_port


@pytest.fixture
def fake():
    with FakeTranscriber().running() as f:
        yield f


async def _stream_url(url: str) -> str:
    client = TranscriberClient(url)
    try:
        return await client.stream_url()
    finally:
        await client.aclose()


def test_urls_of_a_transcriber_or_a_web_app(fake):
    # A base URL asks the server where it streams; a stream URL is taken as it is.
    assert asyncio.run(_stream_url(fake.url)) == fake.url.replace("http", "ws") + "/v1/stream"
    assert asyncio.run(_stream_url("ws://h:1/prefix/ws")) == "ws://h:1/prefix/ws"
    assert asyncio.run(_stream_url("https://x.example/tr/v1/stream")) == (
        "wss://x.example/tr/v1/stream"
    )
    with pytest.raises(ValueError):
        TranscriberClient("ftp://h")


def test_client_streams_and_knows_how_to_resume(fake):
    async def main():
        client = TranscriberClient(fake.url)
        stream = await client.open_stream({"max_speakers": 2})
        assert stream.ready.engine == "fake" and stream.session_id == "fake1"
        await stream.send_audio(b"\x01\x00" * 1600)
        await stream.send_audio(b"\x02\x00" * 800)
        await stream.ping()
        await stream.stop()
        msgs = [m async for m in stream]
        await client.aclose()
        return stream, msgs

    stream, msgs = asyncio.run(main())
    assert [m.type for m in msgs] == ["transcript", "transcript", "pong", "ended"]
    assert msgs[1].finals[0].text == "chunk 2" and msgs[1].audio_received_s == 0.15
    assert stream.last_seq == 2 and stream.ended and stream.close_code == 1000
    assert stream.committed_s == 0.15
    assert fake.starts == [{"type": "start", "max_speakers": 2}]
    assert stream.resume_start() == {
        "type": "start",
        "max_speakers": 2,
        "session_id": "fake1",
        "resume_token": token_of("fake1"),
        "last_seq": 2,
    }


def test_client_unreachable_and_refused(fake):
    async def main():
        down = TranscriberClient(f"http://127.0.0.1:{free_port()}", open_timeout=2)
        with pytest.raises(TranscriberUnavailable) as unreachable:
            await down.open_stream()
        health = await down.health()
        await down.aclose()

        fake.mode = "full"
        client = TranscriberClient(fake.url)
        with pytest.raises(TranscriberError) as full:
            await client.open_stream()
        ok = await client.health()
        await client.aclose()
        return unreachable.value, health, full.value, ok

    unreachable, health, full, ok = asyncio.run(main())
    assert (unreachable.code, unreachable.close_code) == ("transcriber_unavailable", 1013)
    assert unreachable.retryable and full.retryable
    assert not health.reachable and health.error
    assert (full.code, full.close_code) == ("server_full", 1013)
    assert ok.reachable and ok.info["engine"] == "fake" and ok.latency_ms is not None


def test_a_stream_refused_by_a_full_server_is_opened_when_room_appears(fake):
    """``hubbub stream`` and the relay open with ``open_within_s``: a replica that is full
    for now is tried again with backoff; one still full when the window ends is an error."""

    async def main():
        client = TranscriberClient(fake.url)
        fake.full_for = 2
        stream = await client.open_resumable(open_within_s=10)
        session = stream.session_id
        await stream.stop()
        async for _ in stream:
            pass
        fake.mode = "full"
        with pytest.raises(TranscriberError) as still_full:
            await client.open_resumable(open_within_s=0.5)
        await client.aclose()
        return session, still_full.value

    session, still_full = asyncio.run(main())
    assert session == "fake1" and still_full.code == "server_full"
    assert len(fake.starts) >= 5  # three to open the first, then at least two more


def test_resuming_stream_replays_exactly_what_the_server_lacks(fake):
    """The fake drops the connection after the first frame; the stream resumes with the
    session's token and sends each byte the fake did not get, once."""
    fake.mode = "drop"
    pcm = bytes(range(256)) * 50

    async def main():
        client = TranscriberClient(fake.url)
        stream = await client.open_resumable(resume_within_s=5)
        for i in range(0, len(pcm), 3200):
            await stream.send_audio(pcm[i : i + 3200])
        await stream.stop()
        msgs = [m async for m in stream]
        await client.aclose()
        return stream, msgs

    stream, msgs = asyncio.run(main())
    assert stream.resumes == 1 and stream.lost is None
    assert msgs[-1].type == "ended"
    texts = [s.text for m in msgs if m.type == "transcript" for s in m.finals]
    assert len(texts) == len(set(texts)), "each final once"
    assert bytes(fake.audio["fake1"]) == pcm, "every byte once, in order"
    assert fake.starts[-1]["resume_token"] == token_of("fake1")


def test_resuming_stream_gives_up_with_a_reason(fake):
    fake.mode = "forget"  # drops, then knows no session to resume

    async def main():
        client = TranscriberClient(fake.url)
        stream = await client.open_resumable(resume_within_s=1)
        await stream.send_audio(b"\x00\x00" * 1600)
        msgs = [m async for m in stream]
        await client.aclose()
        return stream, msgs

    stream, msgs = asyncio.run(main())
    assert msgs[-1].type == "error" and msgs[-1].code == "transcriber_lost"
    assert "unknown_session" in (stream.lost or "")


def test_replay_log_keeps_what_is_unsettled_and_replays_from_any_point():
    log = ReplayLog(16000, 1, start_s=10.0, max_s=2.0)
    second = b"\x01\x00" * 16000  # 1 s
    log.audio(second)  # 10-11 s
    log.control('{"type":"finalize"}', "finalize")  # at 11 s
    log.control('{"type":"ping"}', "ping")  # not kept: nobody would answer it later
    log.audio(second)  # 11-12 s
    assert log.since(10.5) == [second[16000:], '{"type":"finalize"}', second]
    assert log.since(11.0) == ['{"type":"finalize"}', second]
    assert log.since(11.25) == [second[8000:]]
    log.settle(11.0)  # the server stored everything before 11 s
    assert log.held_s == 1.0 and log.since(11.0) == ['{"type":"finalize"}', second]
    log.audio(second)  # 12-13 s
    log.audio(second)  # 13-14 s: past the 2 s bound, the oldest goes
    assert log.held_s == 2.0
    assert log.since(11.5) is None, "no longer held: the caller must say so"
    assert log.since(12.0) == [second, second]
