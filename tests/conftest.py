"""Shared fixtures: the recorded speech the tests carry (tests/data) and one CPU engine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
SPEECH = Path(os.environ.get("HUBBUB_SPEECH_DATA", DATA / "speech"))
# ``postgresql``: every service the tests start stores in PostgreSQL, not SQLite.
STORE = os.environ.get("HUBBUB_TEST_STORE", "sqlite")


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    assert (SPEECH / "manifest.json").is_file(), f"recorded speech missing at {SPEECH}"
    return SPEECH


@pytest.fixture(scope="session")
def regressions_dir() -> Path:
    return DATA / "regressions"


@pytest.fixture(scope="session")
def manifest(speech_dir: Path) -> list[dict]:
    return json.loads((speech_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def cpu_engine():
    from hubbub.engines.cpu import CpuEngine

    engine = CpuEngine()
    engine.warmup()
    return engine


@pytest.fixture(scope="session")
def transcriber_url(cpu_engine, tmp_path_factory):
    """A real transcriber service (uvicorn on a free port) on the shared CPU engine."""
    from hubbub.settings import Settings
    from hubbub.transcriber.app import create_app

    from support.servers import serve

    settings = Settings(
        engine="cpu",
        data_dir=str(tmp_path_factory.mktemp("store")),
        max_sessions=3,
        idle_timeout_s=20,
        trusted_proxies=["127.0.0.1"],  # web app tests relay through it from loopback
    )
    with serve(create_app(settings, engine=cpu_engine)) as url:
        yield url


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session's tests (Debian's package)."""
    from hubbub.evaluation.cluster import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _store_backend(request, monkeypatch):
    """With HUBBUB_TEST_STORE=postgresql, each test's services (in this process or
    started from it) store in a fresh database on the real PostgreSQL server: the suite
    passes on both backends."""
    if STORE == "postgresql":
        url = request.getfixturevalue("postgres").new_database()
        monkeypatch.setenv("HUBBUB_DATABASE_URL", url)
