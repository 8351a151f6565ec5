"""Shared fixtures: the real speech data beside the repo and one CPU engine per run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
SPEECH = Path(os.environ.get("HUBBUB_SPEECH_DATA", REPO.parent / "shared" / "data" / "speech"))


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    assert SPEECH.is_dir(), f"real speech data missing at {SPEECH}"
    return SPEECH


@pytest.fixture(scope="session")
def manifest(speech_dir: Path) -> list[dict]:
    return json.loads((speech_dir / "manifest.json").read_text())


@pytest.fixture(scope="session")
def cpu_engine():
    from hubbub.engines.cpu import CpuEngine

    engine = CpuEngine()
    engine.warmup()
    return engine
