"""The OpenAI-compatible file endpoint, driven by the official ``openai`` client."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from openai import OpenAI

from hubbub.evaluation.cluster import spawn
from hubbub.evaluation.metrics import wer
from hubbub.settings import Settings
from hubbub.transcriber.app import create_app

from support.servers import free_port, serve


@pytest.fixture(scope="module")
def client(transcriber_url) -> OpenAI:
    return OpenAI(base_url=transcriber_url + "/v1", api_key="unused", max_retries=0)


def test_json_and_text(client, speech_dir):
    path = speech_dir / "openai-whisper/jfk.flac"
    ref = (speech_dir / "openai-whisper/jfk.txt").read_text()
    with path.open("rb") as f:
        result = client.audio.transcriptions.create(model="hubbub", file=f)
    assert wer(ref, result.text).rate < 0.3
    with path.open("rb") as f:
        text = client.audio.transcriptions.create(model="hubbub", file=f, response_format="text")
    assert "country" in str(text).lower()


def test_srt_and_vtt(client, speech_dir):
    path = speech_dir / "Picovoice-falcon/falcon_test.flac"
    with path.open("rb") as f:
        srt = str(client.audio.transcriptions.create(model="hubbub", file=f, response_format="srt"))
    assert re.search(r"^1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n\[S1\] ", srt, re.M)
    assert len(set(re.findall(r"\[(S\d)\]", srt))) == 3
    with path.open("rb") as f:
        vtt = str(client.audio.transcriptions.create(model="hubbub", file=f, response_format="vtt"))
    assert vtt.startswith("WEBVTT") and "<v S2>" in vtt


def test_verbose_and_diarized_json(transcriber_url, speech_dir):
    path = speech_dir / "Picovoice-falcon/falcon_test.flac"
    for fmt in ("verbose_json", "diarized_json"):
        with path.open("rb") as f:
            r = httpx.post(
                transcriber_url + "/v1/audio/transcriptions",
                files={"file": ("falcon.wav", f, "audio/wav")},
                data={"model": "hubbub", "response_format": fmt},
                timeout=120,
            )
        assert r.status_code == 200, r.text
        body = r.json()
        assert {s["speaker"] for s in body["segments"]} == {"S1", "S2", "S3"}
        assert body["duration"] == pytest.approx(18.58, abs=0.05)


def test_corrupt_and_empty_uploads(transcriber_url):
    for name, payload in [("x.wav", b"RIFF\x00\x00garbage" * 50), ("empty.mp3", b"")]:
        r = httpx.post(
            transcriber_url + "/v1/audio/transcriptions",
            files={"file": (name, payload)},
            data={"model": "hubbub"},
            timeout=30,
        )
        assert r.status_code == 400, r.text
        assert name in r.json()["detail"]


def test_bad_form_fields_are_a_400(transcriber_url, speech_dir):
    path = speech_dir / "openai-whisper/jfk.flac"
    for data in ({"max_speakers": "0"}, {"language": "x" * 300}, {"response_format": "exe"}):
        with path.open("rb") as f:
            r = httpx.post(
                transcriber_url + "/v1/audio/transcriptions",
                files={"file": f},
                data=data,
                timeout=30,
            )
        assert r.status_code == 400, (data, r.text)
    r = httpx.post(transcriber_url + "/v1/audio/transcriptions", data={"x": "1"}, timeout=30)
    assert r.status_code == 400


def _raw_request(url: str, head: str, body: bytes = b"") -> tuple[int, float]:
    """Send a request's head (and a first bit of body) on a raw socket; the status line
    that comes back and how long it took. A server that waits for a body never answers."""
    host, port = url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        status = sock.recv(200).split(b"\r\n", 1)[0]
    return int(status.split()[1]), time.monotonic() - t0


def test_uploads_are_refused_before_their_body_is_read(cpu_engine, tmp_path):
    """The key is checked before a byte of the body is read, and a declared size past
    the limit is refused at once: nothing is spooled for a request that will fail."""
    s = Settings(engine="cpu", data_dir=str(tmp_path), api_key="k" * 20, max_upload_mb=1)
    with serve(create_app(s, engine=cpu_engine)) as url:
        head = (
            "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            "Content-Length: 629145600\r\n{auth}\r\n"
        )
        assert _raw_request(url, head.format(auth=""))[0] == 401  # 600 MiB never sent
        auth = f"Authorization: Bearer {'k' * 20}\r\n"
        assert _raw_request(url, head.format(auth=auth))[0] == 413
        # No length declared: the body is counted as it comes, and refused once past.
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        chunks = (part if i == 0 else b"x" * 65536 for i in range(40))
        r = httpx.post(
            url + "/v1/audio/transcriptions",
            content=chunks,
            headers={
                "Authorization": f"Bearer {'k' * 20}",
                "Content-Type": "multipart/form-data; boundary=b",
            },
        )
        assert r.status_code == 413


def _bomb(path: Path, seconds: int) -> None:
    """A tiny FLAC that decodes to a lot: silence, 8 channels at 96 kHz."""
    with sf.SoundFile(path, "w", 96_000, 8, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((96_000, 8), np.int16)
        for _ in range(seconds):
            f.write(block)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_a_decompression_bomb_does_not_grow_memory(tmp_path):
    """A 300 s, 8-channel, 96 kHz silent FLAC is a few hundred KB; decoded whole it was a
    gigabyte. Decoded a block at a time, the transcriber's peak memory hardly moves, and a
    file claiming more than the session limit is refused from its header alone."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bomb = tmp_path / "bomb.flac"
    _bomb(bomb, 300)
    assert bomb.stat().st_size < 500_000
    env = {
        "HUBBUB_ENGINE": "cpu",
        "HUBBUB_DATA_DIR": str(tmp_path),
        "HUBBUB_PORT": str(port),
        "HUBBUB_MAX_SESSION_S": "600",
    }
    with spawn(["transcriber"], env, f"{url}/health") as proc:
        # Warm every path a real upload takes (decoding, the engine, the store) first.
        small = tmp_path / "small.flac"
        _bomb(small, 2)
        with small.open("rb") as f:
            assert (
                httpx.post(url + "/v1/audio/transcriptions", files={"file": f}).status_code == 200
            )
        before = _peak_rss_mb(proc.pid)
        with bomb.open("rb") as f:
            r = httpx.post(url + "/v1/audio/transcriptions", files={"file": f}, timeout=300)
        assert r.status_code == 200 and r.json()["text"] == ""
        grown = _peak_rss_mb(proc.pid) - before
        print(f"decompression bomb: peak RSS {before:.0f} MB -> +{grown:.0f} MB")
        assert grown <= 100
    long = tmp_path / "long.flac"
    _bomb(long, 700)
    with spawn(["transcriber"], env, f"{url}/health"):
        t0 = time.monotonic()
        with long.open("rb") as f:
            r = httpx.post(url + "/v1/audio/transcriptions", files={"file": f}, timeout=60)
        assert r.status_code == 413 and "longer than 600 s" in r.json()["detail"]
        print(f"700 s claimed by the header: 413 after {time.monotonic() - t0:.2f} s")
