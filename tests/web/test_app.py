"""The web app over real sockets: the transcriber client, the /ws relay, the API proxy,
health and the static UI. Relay mechanics (refusals, drops, close codes) run against a
scripted stand-in (support/fake_transcriber.py); the last tests relay to the real
transcriber service."""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from hubbub.settings import Settings
from hubbub.web.app import create_app, find_ui_file

from support.fake_transcriber import FakeTranscriber
from support.servers import free_port, serve

START = {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1}


@pytest.fixture
def fake():
    with FakeTranscriber().running() as f:
        yield f


@pytest.fixture
def web(fake):
    with serve(create_app(Settings(transcriber_url=fake.url))) as url:
        yield url


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/ws"


def recv_json(ws, timeout: float = 10) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def drain(ws, timeout: float = 10) -> tuple[list[dict], int | None]:
    """Every message until the server closes, and its close code."""
    msgs = []
    try:
        while True:
            msgs.append(recv_json(ws, timeout))
    except ConnectionClosed as closed:
        return msgs, closed.rcvd.code if closed.rcvd else None


def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def connections(url: str) -> int:
    return httpx.get(url + "/health").json()["connections"]


# -- the relay ---------------------------------------------------------------------------------


def test_relay_passes_audio_and_json_both_ways_untouched(web, fake):
    start = {**START, "language": "en", "x_future_field": [1, 2]}
    pcm = np.random.default_rng(0).integers(-32768, 32767, 48_000, dtype=np.int16).tobytes()
    with connect(ws_url(web)) as ws:
        ws.send(json.dumps(start))
        ready = recv_json(ws)
        assert ready["type"] == "ready" and ready["session_id"] == "fake1"
        assert connections(web) == 1
        frames = [pcm[i : i + 3201] for i in range(0, len(pcm), 3201)]  # odd sizes too
        for frame in frames:
            ws.send(frame)
        ws.send(json.dumps({"type": "ping"}))
        ws.send(json.dumps({"type": "stop"}))
        msgs, code = drain(ws)
    assert fake.starts == [start], "start reaches the transcriber verbatim"
    assert hashlib.sha256(fake.audio["fake1"]).digest() == hashlib.sha256(pcm).digest()
    updates = [m for m in msgs if m["type"] == "transcript"]
    assert [u["seq"] for u in updates] == list(range(1, len(frames) + 1))
    assert [m["type"] for m in msgs[-2:]] == ["pong", "ended"]
    assert code == 1000
    assert [c["type"] for c in fake.controls] == ["ping", "stop"]
    wait_for(lambda: connections(web) == 0)
    status = httpx.get(web + "/status").json()
    assert status["relay"]["bytes_up"] == len(pcm) and status["relay"]["streams_total"] == 1
    assert status["transcriber"]["health"]["engine"] == "fake"


def test_browser_leaving_closes_upstream_without_stop(web, fake):
    with connect(ws_url(web)) as ws:
        ws.send(json.dumps(START))
        recv_json(ws)
        ws.send(b"\x00\x00" * 1600)
        recv_json(ws)
    wait_for(lambda: fake.close_codes == [1001])  # going away: resumable, not ended
    assert fake.controls == []
    wait_for(lambda: connections(web) == 0)


def test_a_full_transcriber_is_tried_again_before_the_browser_is_told(fake):
    """Behind a load balancer another replica may have room: the relay tries a refused
    start again with backoff, and passes ``server_full`` on only when its time is up."""
    fake.full_for = 2
    settings = Settings(transcriber_url=fake.url, open_within_s=5)
    with serve(create_app(settings)) as url, connect(ws_url(url)) as ws:
        ws.send(json.dumps(START))
        assert recv_json(ws)["type"] == "ready"
        ws.send(json.dumps({"type": "stop"}))
        msgs, code = drain(ws)
    assert len(fake.starts) == 3 and msgs[-1]["type"] == "ended" and code == 1000

    fake.mode = "full"
    settings = Settings(transcriber_url=fake.url, open_within_s=1.0)
    with serve(create_app(settings)) as url, connect(ws_url(url)) as ws:
        began = time.monotonic()
        ws.send(json.dumps(START))
        msgs, code = drain(ws)
    assert msgs == [{"type": "error", "code": "server_full", "message": "fake: full"}]
    assert code == 1013 and time.monotonic() - began >= 1.0 and len(fake.starts) >= 5


def test_full_server_and_unreachable_transcriber_give_error_then_close(fake):
    fake.mode = "full"
    at_once = Settings(transcriber_url=fake.url, open_within_s=0)
    with serve(create_app(at_once)) as url, connect(ws_url(url)) as ws:
        ws.send(json.dumps(START))
        msgs, code = drain(ws)
    assert msgs == [{"type": "error", "code": "server_full", "message": "fake: full"}]
    assert code == 1013

    nowhere = Settings(transcriber_url=f"http://127.0.0.1:{free_port()}", open_within_s=0)
    with serve(create_app(nowhere)) as url:
        health = httpx.get(url + "/health").json()
        assert health["status"] == "degraded" and health["transcriber"]["reachable"] is False
        with connect(ws_url(url)) as ws:
            ws.send(json.dumps(START))
            msgs, code = drain(ws)
        assert [m["code"] for m in msgs] == ["transcriber_unavailable"] and code == 1013
        with connect(ws_url(url)) as ws:
            ws.send(b"\x00\x00")  # audio before start: refused without touching upstream
            msgs, code = drain(ws)
        assert [m["code"] for m in msgs] == ["no_start"] and code == 1002
        wait_for(lambda: connections(url) == 0)


def stream_through_a_drop(web: str, frames: list[bytes]) -> tuple[str, list[dict], int | None]:
    """Start, send ``frames`` and ``stop`` without waiting: the fake drops the upstream
    after the first frame, wherever the relay is in sending the rest."""
    with connect(ws_url(web)) as ws:
        ws.send(json.dumps(START))
        sid = recv_json(ws)["session_id"]
        for frame in frames:
            ws.send(frame)
        ws.send(json.dumps({"type": "stop"}))
        msgs, code = drain(ws)
    return sid, msgs, code


def final_texts(msgs: list[dict]) -> list[str]:
    return [s["text"] for m in msgs if m["type"] == "transcript" for s in m["finals"]]


def test_upstream_drop_is_resumed_by_the_relay(web, fake):
    """The upstream drops after the first frame: the relay resumes the session (session id +
    last seq), swallows the second ready, replays what was not received, and carries on."""
    fake.mode = "drop"
    pcm = bytes(range(256)) * 25
    sid, msgs, code = stream_through_a_drop(web, [pcm[:3200], pcm[3200:]])
    assert msgs[-1]["type"] == "ended" and code == 1000
    assert "ready" not in [m["type"] for m in msgs], "the resumed ready is swallowed"
    assert final_texts(msgs) == ["chunk 1", "chunk 2"], "each final once, in order"
    seqs = [m["seq"] for m in msgs]
    assert seqs == sorted(seqs) and seqs[-1] == 2
    assert fake.starts[-1]["session_id"] == sid and fake.starts[-1].get("last_seq") in (None, 1)
    assert bytes(fake.audio[sid]) == pcm, "every byte once, in order"
    assert httpx.get(web + "/status").json()["relay"]["resumed_total"] == 1


def test_resume_tries_again_when_it_reaches_a_replica_without_the_session(web, fake):
    fake.mode = "drop"
    fake.refuse_resumes = 3  # as if the balancer sent the first tries to other replicas
    sid, msgs, code = stream_through_a_drop(web, [b"\x00\x00" * 1600] * 2)
    assert msgs[-1]["type"] == "ended" and code == 1000
    assert final_texts(msgs) == ["chunk 1", "chunk 2"]
    assert len(fake.starts) == 5 and fake.audio[sid] == b"\x00" * 6400


def test_upstream_lost_for_good_is_reported_and_resume_start_is_relayed(web, fake, monkeypatch):
    monkeypatch.setattr("hubbub.web.relay.RESUME_WITHIN_S", 1.0)
    fake.mode = "forget"  # drops, then knows no session to resume
    with connect(ws_url(web)) as ws:
        ws.send(json.dumps(START))
        ready = recv_json(ws)
        sid, token = ready["session_id"], ready["resume_token"]
        ws.send(b"\x00\x00" * 1600)
        t0 = time.monotonic()
        msgs, code = drain(ws)
        told_after = time.monotonic() - t0
    assert [m["type"] for m in msgs][-1:] == ["error"] and len(msgs) <= 2
    assert msgs[-1]["code"] == "transcriber_lost" and code == 1011
    assert "unknown_session" in msgs[-1]["message"]
    assert told_after < 5, "the page hears at once, and resumes on its own"
    # The client comes back with its session id, token and last seq; the relay passes
    # them on.
    fake.mode = "normal"
    with connect(ws_url(web)) as ws:
        ws.send(json.dumps({**START, "session_id": sid, "resume_token": token, "last_seq": 1}))
        ready = recv_json(ws)
        assert recv_json(ws)["seq"] == 1, "the catch-up"
        ws.send(b"\x00\x00" * 1600)
        assert recv_json(ws)["seq"] == 2
    assert ready["resumed"] is True and fake.starts[-1]["last_seq"] == 1


def test_api_key_cookie_and_origin(fake):
    """With a key, /ws, /api and /status want it (header, the page's cookie, or ?token= on
    a WebSocket) and the relay presents the caller's key upstream; the page is opened once
    with ?token= and goes on without it in its address; a foreign Origin is refused."""
    settings = Settings(transcriber_url=fake.url, api_key="s3cret")
    with serve(create_app(settings)) as url:
        assert httpx.get(url + "/health").json() == {"status": "ok"}, "no details without key"
        assert httpx.get(url + "/").status_code == 200, "the page itself is public"
        assert httpx.get(url + "/api/sessions").status_code == 401
        assert httpx.get(url + "/status").status_code == 401
        assert httpx.get(url + "/docs").status_code == 404
        assert httpx.get(url + "/openapi.json").status_code == 404
        auth = {"Authorization": "Bearer s3cret"}
        assert httpx.get(url + "/api/sessions", headers=auth).status_code == 200
        assert "connections" in httpx.get(url + "/health", headers=auth).json()

        opened = httpx.get(url + "/?token=s3cret&x=1")
        assert opened.status_code == 303 and opened.headers["location"] == "/?x=1"
        cookie = opened.headers["set-cookie"]
        assert "hubbub_key=s3cret" in cookie and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        jar = {"hubbub_key": "s3cret"}
        assert httpx.get(url + "/api/sessions", cookies=jar).status_code == 200
        wrong = httpx.get(url + "/?token=nope")
        assert wrong.status_code == 303 and "set-cookie" not in wrong.headers

        with connect(ws_url(url)) as ws:  # refused before any start
            msgs, code = drain(ws)
        assert [m["code"] for m in msgs] == ["unauthorized"] and code == 1008
        with connect(ws_url(url) + "?token=s3cret", origin="http://evil.example") as ws:
            msgs, code = drain(ws)
        assert [m["code"] for m in msgs] == ["forbidden_origin"] and code == 1008

        host = url.removeprefix("http://")
        headers = {"Cookie": "hubbub_key=s3cret"}
        with connect(ws_url(url), origin=f"http://{host}", additional_headers=headers) as ws:
            ws.send(json.dumps(START))
            assert recv_json(ws)["type"] == "ready"
            ws.send(json.dumps({"type": "stop"}))
            drain(ws)
        assert fake.headers[-1]["authorization"] == "Bearer s3cret"
        assert fake.headers[-1]["x-forwarded-for"] == "127.0.0.1"
        assert httpx.get(url + "/status", headers=auth).json()["relay"]["refused_total"] == 2


# -- HTTP: sessions proxy, health, UI -----------------------------------------------------------


def test_sessions_proxy_and_exports(web):
    r = httpx.get(web + "/api/sessions", params={"limit": 5})
    assert r.status_code == 200 and r.json()["query"] == {"limit": "5"}
    r = httpx.get(web + "/api/sessions/abc", params={"format": "srt"})
    assert r.status_code == 200 and "[S1] hello there" in r.text
    assert r.headers["content-disposition"] == 'attachment; filename="abc.srt"'
    assert httpx.get(web + "/api/sessions/abc").json()["transcript"]["session_id"] == "abc"
    assert httpx.get(web + "/api/sessions/missing").status_code == 404
    assert httpx.get(web + "/api/sessions/a%2F..%2Fx").status_code == 404


def test_sessions_proxy_without_transcriber():
    with serve(create_app(Settings(transcriber_url=f"http://127.0.0.1:{free_port()}"))) as url:
        r = httpx.get(url + "/api/sessions")
    assert r.status_code == 502 and r.json()["error"]["code"] == "transcriber_unavailable"


def test_ui_files_and_no_path_traversal(tmp_path: Path):
    front = tmp_path / "frontend"
    (front / "sub").mkdir(parents=True)
    (front / "index.html").write_text("<h1>custom</h1>")
    (front / "sub" / "x.css").write_text("b{}")
    (tmp_path / "secret.txt").write_text("secret")
    (front / "link.txt").symlink_to(tmp_path / "secret.txt")
    (front / ".env").write_text("secret=1")  # a frontend folder may hold more than the UI
    (front / ".git").mkdir()
    (front / ".git" / "config").write_text("secret")

    with serve(create_app(Settings(transcriber_url="http://127.0.0.1:9"))) as url:
        r = httpx.get(url + "/")
        assert r.status_code == 200 and "<title>hubbub" in r.text
        js = httpx.get(url + "/app.js")
        assert js.headers["content-type"].startswith("text/javascript")
        assert httpx.get(url + "/audio-worklet.js").status_code == 200
        assert httpx.get(url + "/style.css").headers["content-type"].startswith("text/css")

    with serve(create_app(Settings(frontend_dir=front))) as url:
        assert httpx.get(url + "/").text == "<h1>custom</h1>"
        assert httpx.get(url + "/sub/x.css").text == "b{}"
        assert httpx.get(url + "/app.js").status_code == 200, "built-in files fill gaps"
        for bad in (
            "/link.txt",
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/sub/%2e%2e/%2e%2e/secret.txt",
            "/..%2fsecret.txt",
            "/nope.js",
            "/.env",
            "/.git/config",
            "/sub/../.env",
        ):
            r = httpx.get(url + bad)
            assert r.status_code == 404, bad
            assert "secret" not in r.text
    dirs = [front.resolve()]
    assert find_ui_file(dirs, "../secret.txt") is None
    assert find_ui_file(dirs, "sub/..") is None
    assert find_ui_file(dirs, "sub\\..\\..\\secret.txt") is None
    assert find_ui_file(dirs, "") == front.resolve() / "index.html"


# -- against the real transcriber ---------------------------------------------------------------


@pytest.mark.slow
def test_relay_to_real_transcriber(transcriber_url, speech_dir):
    from hubbub.audio import float_to_pcm16
    from hubbub.decode import load_audio

    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))
    with serve(create_app(Settings(transcriber_url=transcriber_url))) as web:
        with connect(ws_url(web)) as ws:
            ws.send(json.dumps({**START, "max_speakers": 2}))
            ready = recv_json(ws, 30)
            for i in range(0, len(pcm), 3200):
                ws.send(pcm[i : i + 3200])
            ws.send(json.dumps({"type": "stop"}))
            msgs, code = drain(ws, 120)
        assert ready["type"] == "ready" and ready["engine"] == "cpu" and code == 1000
        assert msgs[-1]["type"] == "ended"
        text = " ".join(s["text"] for m in msgs if m["type"] == "transcript" for s in m["finals"])
        assert "country" in text.lower()

        sid = ready["session_id"]
        listed = httpx.get(web + "/api/sessions").json()["sessions"]
        assert sid in [s["id"] for s in listed]
        srt = httpx.get(web + f"/api/sessions/{sid}", params={"format": "srt"})
        assert srt.status_code == 200 and "-->" in srt.text and "[S1]" in srt.text

        # Naming a speaker (as the page does) is stored with the session: exports use it.
        named = httpx.put(web + f"/api/sessions/{sid}/speakers", json={"S1": "JFK"})
        assert named.json() == {"session_id": sid, "speaker_names": {"S1": "JFK"}}
        srt = httpx.get(web + f"/api/sessions/{sid}", params={"format": "srt"}).text
        assert "[JFK]" in srt and "[S1]" not in srt
        got = httpx.get(web + f"/api/sessions/{sid}").json()["transcript"]
        assert got["speaker_names"] == {"S1": "JFK"}
        bad = httpx.put(web + f"/api/sessions/{sid}/speakers", content=b"not json")
        assert bad.status_code == 400
        assert httpx.put(web + "/api/sessions/nope/speakers", json={"S1": "x"}).status_code == 404
        assert httpx.delete(web + f"/api/sessions/{sid}").json() == {"deleted": sid}
        assert httpx.get(web + f"/api/sessions/{sid}").status_code == 404
        wait_for(lambda: connections(web) == 0)


@pytest.mark.slow
def test_relay_overhead_is_small(transcriber_url):
    """Round trips (ping -> pong) direct to the transcriber and through the relay."""

    def rtts(url: str, n: int = 200) -> list[float]:
        with connect(url) as ws:
            ws.send(json.dumps(START))
            recv_json(ws, 30)
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                ws.send('{"type":"ping"}')
                assert recv_json(ws)["type"] == "pong"
                out.append(time.perf_counter() - t0)
            ws.send(json.dumps({"type": "stop"}))
            drain(ws, 30)
        return out

    with serve(create_app(Settings(transcriber_url=transcriber_url))) as web:
        direct = statistics.median(rtts(transcriber_url.replace("http", "ws") + "/v1/stream"))
        relayed = statistics.median(rtts(ws_url(web)))
    print(f"ping rtt median: direct {direct * 1e3:.2f} ms, relayed {relayed * 1e3:.2f} ms")
    assert relayed - direct < 0.02
