"""The OpenAI-compatible file endpoint, driven by the official ``openai`` client."""

from __future__ import annotations

import re

import httpx
import pytest
from openai import OpenAI

from hubbub.evaluation.metrics import wer


@pytest.fixture(scope="module")
def client(transcriber_url) -> OpenAI:
    return OpenAI(base_url=transcriber_url + "/v1", api_key="unused", max_retries=0)


def test_json_and_text(client, speech_dir):
    path = speech_dir / "openai-whisper/jfk.16k.wav"
    ref = (speech_dir / "openai-whisper/jfk.txt").read_text()
    with path.open("rb") as f:
        result = client.audio.transcriptions.create(model="hubbub", file=f)
    assert wer(ref, result.text).rate < 0.3
    with path.open("rb") as f:
        text = client.audio.transcriptions.create(model="hubbub", file=f, response_format="text")
    assert "country" in str(text).lower()


def test_srt_and_vtt(client, speech_dir):
    path = speech_dir / "Picovoice-falcon/falcon_test.16k.wav"
    with path.open("rb") as f:
        srt = str(client.audio.transcriptions.create(model="hubbub", file=f, response_format="srt"))
    assert re.search(r"^1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n\[S1\] ", srt, re.M)
    assert len(set(re.findall(r"\[(S\d)\]", srt))) == 3
    with path.open("rb") as f:
        vtt = str(client.audio.transcriptions.create(model="hubbub", file=f, response_format="vtt"))
    assert vtt.startswith("WEBVTT") and "<v S2>" in vtt


def test_verbose_and_diarized_json(transcriber_url, speech_dir):
    path = speech_dir / "Picovoice-falcon/falcon_test.16k.wav"
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
