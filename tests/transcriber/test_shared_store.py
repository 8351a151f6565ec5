"""Two transcriber replicas on one PostgreSQL store (a real server): what one stores, the
other lists, exports, renames and deletes."""

from __future__ import annotations

import httpx

from hubbub.settings import Settings
from hubbub.transcriber.app import create_app

from support.servers import serve


def test_replicas_share_one_history(cpu_engine, postgres, speech_dir, tmp_path):
    url = postgres.new_database()

    def replica(name: str):
        settings = Settings(engine="cpu", data_dir=str(tmp_path / name), database_url=url)
        return serve(create_app(settings, engine=cpu_engine))

    with replica("a") as a, replica("b") as b:
        with (speech_dir / "openai-whisper/jfk.flac").open("rb") as f:
            r = httpx.post(
                a + "/v1/audio/transcriptions",
                files={"file": ("jfk.flac", f, "audio/flac")},
                data={"model": "hubbub", "response_format": "verbose_json"},
                timeout=120,
            )
        assert r.status_code == 200, r.text
        listed = httpx.get(b + "/v1/sessions").json()["sessions"]
        assert len(listed) == 1 and listed[0]["source"] == "file"
        sid = listed[0]["id"]
        assert listed[0]["status"] == "ended" and listed[0]["segments"] >= 1

        srt_a = httpx.get(f"{a}/v1/sessions/{sid}", params={"format": "srt"}).text
        srt_b = httpx.get(f"{b}/v1/sessions/{sid}", params={"format": "srt"}).text
        assert srt_a == srt_b and "country" in srt_b.lower()

        r = httpx.put(f"{b}/v1/sessions/{sid}/speakers", json={"S1": "John"})
        assert r.status_code == 200, r.text
        assert "[John]" in httpx.get(f"{a}/v1/sessions/{sid}", params={"format": "srt"}).text

        assert httpx.delete(f"{b}/v1/sessions/{sid}").status_code in (200, 204)
        assert httpx.get(f"{a}/v1/sessions/{sid}").status_code == 404
        assert httpx.get(a + "/v1/sessions").json()["sessions"] == []
