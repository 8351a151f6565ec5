"""Who may reach what, on real servers: tenants and their sessions, hosts (DNS rebinding),
forwarded client addresses, and bodies that are too big or too deep."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.requests import HTTPConnection
from websockets.sync.client import connect

from hubbub.audio import float_to_pcm16
from hubbub.decode import load_audio
from hubbub.security import Keyring, client_address, host_allowed, read_keys_file
from hubbub.settings import Settings
from hubbub.transcriber.app import create_app
from hubbub.web.app import create_app as create_web_app

from support.servers import serve

START = {"type": "start", "sample_rate": 16000}
KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-0123456789"}


def _ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/v1/stream"


def _session(url: str, key: str, pcm: bytes) -> dict:
    """A short session of ``key``'s tenant; its ready message."""
    with connect(_ws(url), additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        ws.send(json.dumps(START))
        ready = json.loads(ws.recv(timeout=10))
        ws.send(pcm)
        ws.send('{"type": "stop"}')
        while json.loads(ws.recv(timeout=60))["type"] != "ended":
            pass
    return ready


def test_tenants_see_only_their_own_sessions(cpu_engine, speech_dir, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# tenant key [admin]\nops ops-key-0123456789 admin\n")
    settings = Settings(
        engine="cpu", data_dir=str(tmp_path), api_keys=KEYS, api_keys_file=keys_file
    )
    pcm = float_to_pcm16(load_audio(speech_dir / "openai-whisper/jfk.flac"))[:64000]
    with serve(create_app(settings, engine=cpu_engine)) as url:
        a = _session(url, KEYS["alice"], pcm)
        b = _session(url, KEYS["bob"], pcm)

        def get(path: str, key: str, method: str = "GET", **kw) -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.request(method, url + path, headers=headers, **kw)

        listed = {s["id"] for s in get("/v1/sessions", KEYS["alice"]).json()["sessions"]}
        assert listed == {a["session_id"]}
        every = {s["id"] for s in get("/v1/sessions", "ops-key-0123456789").json()["sessions"]}
        assert every == {a["session_id"], b["session_id"]}, "an admin tenant sees all"
        theirs = f"/v1/sessions/{b['session_id']}"
        for method, path, kw in [
            ("GET", theirs, {}),
            ("GET", theirs + "?format=srt", {}),
            ("PUT", theirs + "/speakers", {"json": {"S1": "Mallory"}}),
            ("DELETE", theirs, {}),
        ]:
            r = get(path, KEYS["alice"], method, **kw)
            assert r.status_code == 404, (method, path)  # as if it did not exist
        assert get(theirs, KEYS["bob"]).status_code == 200
        # Even with bob's resume token, alice cannot take bob's session.
        stolen = {**START, "session_id": b["session_id"], "resume_token": b["resume_token"]}
        with connect(_ws(url), additional_headers={"X-API-Key": KEYS["alice"]}) as ws:
            ws.send(json.dumps(stolen))
            assert json.loads(ws.recv(timeout=10))["code"] == "unknown_session"
        assert get(theirs, KEYS["bob"], "DELETE").status_code == 200
        assert httpx.get(url + "/v1/sessions").status_code == 401
        # With keys, the API's description is not served to anyone.
        assert httpx.get(url + "/docs").status_code == 404
        assert get("/openapi.json", KEYS["alice"]).status_code == 404


def test_keys_files_and_keyrings_refuse_mistakes(tmp_path):
    bad = tmp_path / "keys"
    bad.write_text("alice\n")
    with pytest.raises(ValueError, match="tenant key"):
        read_keys_file(bad)
    with pytest.raises(ValueError, match="unique"):
        Keyring({"a": ("same", False), "b": ("same", False)})
    assert not Keyring({}).enabled


def test_hosts_other_than_ours_are_refused(cpu_engine, tmp_path):
    """A page on rebind.evil.example whose name now points at 127.0.0.1 sends that Host:
    neither HTTP nor a WebSocket is served to it. Our own names and IPs are."""
    assert host_allowed("localhost", []) and host_allowed("127.0.0.1", [])
    assert host_allowed("[::1]", []) and host_allowed("app.localhost", [])
    assert not host_allowed("rebind.evil.example", [])
    assert host_allowed("x.example.com", ["*.example.com"]) and host_allowed("a.b", ["*"])
    settings = Settings(engine="cpu", data_dir=str(tmp_path), allowed_hosts=["hubbub.lan"])
    evil = {"Host": "rebind.evil.example", "Origin": "http://rebind.evil.example"}
    with serve(create_app(settings, engine=cpu_engine)) as url:
        for path in ("/health", "/v1/sessions", "/metrics"):
            assert httpx.get(url + path, headers=evil).status_code == 400, path
        upgrade = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        refused = httpx.get(url + "/v1/stream", headers={**upgrade, **evil})
        assert refused.status_code == 403
        assert httpx.get(url + "/v1/stream", headers=upgrade).status_code == 101
        assert httpx.get(url + "/health", headers={"Host": "hubbub.lan"}).status_code == 200
    with serve(create_web_app(settings)) as url:
        assert httpx.get(url + "/", headers=evil).status_code == 400
        assert httpx.get(url + "/").status_code == 200


def _conn(peer: str, forwarded: str | None) -> HTTPConnection:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return HTTPConnection({"type": "http", "client": (peer, 1), "headers": headers})


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    none = Settings()
    assert client_address(none, _conn("10.0.0.5", "1.2.3.4")) == "10.0.0.5"
    proxies = Settings(trusted_proxies=["10.0.0.0/8", "127.0.0.1"])
    # The nearest hop that is not a trusted proxy, not the leftmost (a client's own say).
    assert client_address(proxies, _conn("10.0.0.5", "6.6.6.6, 1.2.3.4")) == "1.2.3.4"
    assert client_address(proxies, _conn("10.0.0.5", "1.2.3.4, 10.9.9.9")) == "1.2.3.4"
    assert client_address(proxies, _conn("8.8.8.8", "1.2.3.4")) == "8.8.8.8"
    assert client_address(proxies, _conn("10.0.0.5", "garbage, 1.2.3.4")) == "1.2.3.4"
    assert client_address(proxies, _conn("10.0.0.5", None)) == "10.0.0.5"


def test_forged_forwarded_for_does_not_lift_the_per_client_limit(cpu_engine, tmp_path):
    settings = Settings(
        engine="cpu", data_dir=str(tmp_path), max_connections_per_client=2, max_sessions=8
    )
    with serve(create_app(settings, engine=cpu_engine)) as url:
        sockets, codes = [], []
        for i in range(4):
            ws = connect(_ws(url), additional_headers={"X-Forwarded-For": f"10.1.1.{i}"})
            ws.send(json.dumps(START))
            msg = json.loads(ws.recv(timeout=10))
            codes.append(msg.get("code", msg["type"]))
            sockets.append(ws)
        for ws in sockets:
            ws.close()
    assert codes == ["ready", "ready", "too_many_connections", "too_many_connections"]


@pytest.mark.parametrize("service", ["transcriber", "web"])
def test_json_bodies_are_bounded_and_checked(cpu_engine, tmp_path, service):
    settings = Settings(engine="cpu", data_dir=str(tmp_path))
    with serve(create_app(settings, engine=cpu_engine)) as tr:
        if service == "web":
            ctx = serve(create_web_app(settings.model_copy(update={"transcriber_url": tr})))
            base, prefix = ctx.__enter__(), "/api"
        else:
            ctx, base, prefix = None, tr, "/v1"
        try:
            with connect(_ws(tr)) as ws:
                ws.send(json.dumps(START))
                sid = json.loads(ws.recv(timeout=10))["session_id"]
                ws.send('{"type": "stop"}')
            path = f"{base}{prefix}/sessions/{sid}/speakers"
            huge = json.dumps({"S1": "x" * (1 << 20)})
            r = httpx.put(path, content=huge, headers={"content-type": "application/json"})
            assert r.status_code == 413
            chunks = (b"x" * 65536 for _ in range(64))  # no length given: counted as it comes
            assert httpx.put(path, content=chunks).status_code == 413
            deep = "[" * 100_000 + "]" * 100_000
            assert httpx.put(path, content=deep[:60000] + deep[-60000:]).status_code in (400, 413)
            assert httpx.put(path, content="[" * 40 + "]" * 40).status_code == 400
            assert httpx.put(path, content="{not json").status_code == 400
            ok = httpx.put(path, json={"S1": "Ada"})
            assert ok.status_code == 200 and ok.json()["speaker_names"] == {"S1": "Ada"}
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
