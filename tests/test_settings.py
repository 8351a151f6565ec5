"""Settings reach the code they steer: every engine knob from its environment variable to
the engine that uses it, and a few of them shown changing what the engine does."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal, get_args, get_origin

import numpy as np
import pytest
from pydantic import ValidationError
from websockets.sync.client import connect

from hubbub.decode import load_audio
from hubbub.engines.base import ChunkInput, SessionOptions, UnsupportedOptions
from hubbub.engines.cpu import CpuEngine, CpuEngineConfig
from hubbub.engines.cpu.config import UtteranceConfig
from hubbub.engines.factory import create_engine
from hubbub.engines.nemo.config import NemoEngineConfig
from hubbub.recordings import transcribe_many
from hubbub.settings import Settings
from hubbub.transcriber.app import create_app

from support.servers import serve

SRC = Path(__file__).resolve().parents[1] / "src" / "hubbub" / "engines"


SPECIAL = {
    "latency": "160ms",
    "precision": "fp32",
    "device": "cpu",
    "model": "some-model",
    "diar_model": "diar.nemo",
    "asr_model": "asr.nemo",
    "compute_type": "float32",
    "max_speakers": 2,
}


def _other_value(config, name: str, field):
    """A valid value other than the default, for any engine knob."""
    default = field.default
    if name in SPECIAL:
        return SPECIAL[name]
    if get_origin(field.annotation) is Literal:
        return next(v for v in get_args(field.annotation) if v != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    for value in (default * 0.5 if default else 0.25, default + 1.0):
        try:
            config.model_validate({name: value})
            return value
        except ValidationError:
            continue
    raise AssertionError(f"no other value for {name}")


def _knobs(model, prefix: str):
    for name, field in model.model_fields.items():
        if isinstance(field.default, bool | int | float | str):
            yield name, f"{prefix}{name.upper()}", field


@pytest.mark.parametrize(
    ("config", "prefix", "attr"),
    [
        (CpuEngineConfig, "HUBBUB_CPU__", "cpu"),
        (UtteranceConfig, "HUBBUB_CPU__UTTERANCES__", "cpu.utterances"),
        (NemoEngineConfig, "HUBBUB_NEMO__", "nemo"),
    ],
)
def test_every_engine_knob_comes_from_its_variable_and_is_read(config, prefix, attr, monkeypatch):
    sources = "\n".join(p.read_text() for p in SRC.rglob("*.py") if p.name != "config.py")
    for name, var, field in _knobs(config, prefix):
        value = _other_value(config, name, field)
        monkeypatch.setenv(var, str(value))
        got = Settings()
        for part in attr.split("."):
            got = getattr(got, part)
        assert getattr(got, name) == type(field.default)(value), var
        monkeypatch.delenv(var)
        # Read somewhere in the engines: no knob that nothing reads.
        assert re.search(rf"\.{name}\b", sources), f"{var}: nothing reads {name}"


def test_the_factory_hands_the_settings_to_the_engine(monkeypatch):
    monkeypatch.setenv("HUBBUB_ENGINE", "cpu")
    monkeypatch.setenv("HUBBUB_CPU__BEAM_SIZE", "2")
    monkeypatch.setenv("HUBBUB_CPU__UTTERANCES__MIN_SILENCE_S", "0.7")
    engine = create_engine(Settings())
    assert engine.config.beam_size == 2 and engine.config.utterances.min_silence_s == 0.7
    assert engine.chunk_samples == 5120


def _engine(monkeypatch, **env: str) -> CpuEngine:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    engine = CpuEngine(Settings().cpu)
    engine.warmup()
    return engine


def test_max_speakers_from_the_environment_caps_labels(monkeypatch, speech_dir):
    audio = load_audio(speech_dir / "Picovoice-falcon/falcon_test.flac")  # three speakers
    engine = _engine(monkeypatch, HUBBUB_CPU__MAX_SPEAKERS="1")
    t = transcribe_many(engine, {"f": audio})["f"]
    assert t.speakers == ["S1"]


def test_max_utterance_from_the_environment_cuts_long_speech(monkeypatch, speech_dir):
    audio = load_audio(speech_dir / "MFA/acoustic_corpus.flac")
    engine = _engine(monkeypatch, HUBBUB_CPU__UTTERANCES__MAX_UTTERANCE_S="4")
    t = transcribe_many(engine, {"a": audio})["a"]
    assert len(t.segments) >= 6
    assert max(s.end - s.start for s in t.segments) <= 4.3


def test_partial_interval_from_the_environment_spaces_partials(monkeypatch, speech_dir):
    audio = load_audio(speech_dir / "MFA/acoustic_corpus.flac")[: 12 * 16000]
    engine = _engine(monkeypatch, HUBBUB_CPU__PARTIAL_INTERVAL_S="3")
    session = engine.open_session("p", SessionOptions())
    refreshed, last = [], None
    for i in range(0, len(audio), engine.chunk_samples):
        upd = engine.step([ChunkInput(session, audio[i : i + engine.chunk_samples])])[0]
        texts = [(p.start, p.text) for p in upd.partials]
        if texts and texts != last:
            refreshed.append(upd.audio_processed_s)
        last = texts
    gaps = np.diff(refreshed)
    assert len(refreshed) >= 2 and np.min(gaps) >= 2.8


def test_highpass_from_the_environment_is_what_finds_the_lost_turn(monkeypatch, regressions_dir):
    audio = load_audio(regressions_dir / "lost_turn.16k.flac")
    off = _engine(monkeypatch, HUBBUB_CPU__HIGHPASS_HZ="0")
    late = [s for s in transcribe_many(off, {"x": audio})["x"].segments if s.start > 17.6]
    assert late == [], "without the filter the turn is lost, as it was"


def test_language_is_checked_for_an_english_model_and_steers_a_multilingual_one(
    monkeypatch, cpu_engine, speech_dir, tmp_path
):
    with pytest.raises(UnsupportedOptions, match="en only"):
        cpu_engine.check(SessionOptions(language="de"))
    s = Settings(engine="cpu", data_dir=str(tmp_path), language="de")
    with (
        serve(create_app(s, engine=cpu_engine)) as url,
        connect(url.replace("http", "ws") + "/v1/stream") as ws,
    ):
        ws.send(json.dumps({"type": "start"}))
        refused = json.loads(ws.recv(timeout=10))
    assert refused["code"] == "unsupported_language"

    audio = load_audio(speech_dir / "openai-whisper/jfk.flac")
    base = _engine(monkeypatch, HUBBUB_CPU__MODEL="base")
    assert base.languages is None  # multilingual
    heard = transcribe_many(base, {"a": audio})["a"].text
    german = transcribe_many(base, {"a": audio}, SessionOptions(language="de"))["a"].text
    assert heard.startswith("And so") and "country" in heard
    assert german.split()[0] == "Und", "the asked language reaches Whisper's prompt"
