"""``hubbub bench``: what it counts (with a scripted engine) and that the command runs.

No timing is asserted: only that every figure is measured and reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hubbub.engines.base import ChunkInput, Engine, EngineSession, EngineUpdate, SessionOptions
from hubbub.evaluation.benchmark import run_realtime, speech_streams
from hubbub.transcript import Segment

SR = 16_000


@dataclass
class _Session(EngineSession):
    utt_start: float | None = None
    steps_open: int = 0
    partial: Segment | None = None


class ScriptedEngine(Engine):
    """Speech is wherever the signal is non-zero. While it lasts, a new partial every
    third step (the same one repeated in between); when it stops, one final."""

    name = "scripted"
    chunk_samples = SR // 10

    def open_session(self, session_id: str, options: SessionOptions) -> EngineSession:
        return _Session(id=session_id, options=options)

    def close_session(self, session: EngineSession) -> None:
        pass

    def step(self, batch: Sequence[ChunkInput]) -> list[EngineUpdate]:
        out = []
        for item in batch:
            s = item.session
            assert isinstance(s, _Session)
            start = s.audio_s
            s.samples_in += len(item.audio)
            upd = EngineUpdate(s)
            speaking = bool(np.any(item.audio)) and not item.flush
            if speaking:
                if s.utt_start is None:
                    s.utt_start, s.steps_open = start, 0
                s.steps_open += 1
                if s.steps_open % 3 == 0:
                    s.partial = Segment(
                        id="p", speaker="S1", start=s.utt_start, end=s.audio_s, text="so far"
                    )
            elif s.utt_start is not None:
                upd.finals.append(
                    Segment(
                        id=s.next_segment_id(), speaker="S1", start=s.utt_start, end=start, text="x"
                    )
                )
                s.utt_start, s.partial = None, None
            upd.partials = [s.partial] if s.partial else []
            out.append(upd)
        return out


def test_realtime_figures_from_a_scripted_engine() -> None:
    # Two streams: 0.5 s silence, 1.5 s "speech", 0.5 s silence.
    audio = np.zeros(int(2.5 * SR), np.float32)
    audio[SR // 2 : 2 * SR] = 0.1
    rt = run_realtime(ScriptedEngine(), {"a": audio, "b": audio.copy()})
    assert rt.streams == 2 and rt.audio_s == 2.5
    # 25 chunks and a flush per stream: batched together mostly, never more than apart.
    assert 26 <= len(rt.step_s) <= 52
    assert len(rt.final_delay_s) == 2  # one utterance per stream
    # 15 speaking steps: partials at steps 3, 6, ..., 15 -> 1 first + 4 refreshes each.
    assert len(rt.first_partial_s) == 2
    assert len(rt.partial_interval_s) == 8
    s = rt.summary()
    for key in (
        "final_delay_p50_s",
        "final_delay_p95_s",
        "partial_interval_p50_s",
        "partial_interval_max_s",
        "step_p50_s",
        "step_p95_s",
        "rtf",
        "peak_rss_mb",
        "max_lag_s",
    ):
        assert s[key] is not None and s[key] >= 0, key
    assert s["segments"] == 2
    json.dumps(rt.to_json())


def test_speech_streams_differ_and_have_the_asked_length(manifest, speech_dir: Path) -> None:
    streams = speech_streams(speech_dir / "manifest.json", 3, 12.0)
    assert list(streams) == ["stream1", "stream2", "stream3"]
    assert all(len(a) == 12 * SR for a in streams.values())
    a, b, c = streams.values()
    assert not np.array_equal(a, b) and not np.array_equal(b, c)


def bench(*args: str | Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``hubbub bench ARGS`` in a process of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "hubbub", "bench", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bench_command_writes_json(tmp_path: Path, speech_dir: Path) -> None:
    out = tmp_path / "bench.json"
    proc = bench(
        "--mode",
        "all",
        "--streams",
        "2",
        "--seconds",
        "6",
        "--limit",
        "2",
        "--data",
        str(speech_dir),
        "--json",
        str(out),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "real-time stream" in proc.stdout and "whole-file" in proc.stdout
    report = json.loads(out.read_text())
    rt = report["realtime"]["summary"]
    assert rt["streams"] == 2 and rt["audio_s_per_stream"] == 6.0
    assert rt["peak_rss_mb"] > 0 and rt["step_p50_s"] is not None
    wer = report["wer"]["summary"]
    assert wer["files"] == 2
    assert wer["wer_streaming"] is not None and wer["wer_whole_file"] is not None


def test_bench_without_data_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hubbub", "bench", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_bench_load_and_relay_modes_on_real_servers(tmp_path: Path, speech_dir: Path) -> None:
    """Real processes on loopback: the stream past capacity is refused, nothing is lost."""
    out = tmp_path / "load.json"
    run = bench(
        "--mode",
        "load",
        "--streams",
        "1",
        "--seconds",
        "12",
        "--data",
        str(speech_dir),
        "--json",
        str(out),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    load = json.loads(out.read_text())["load"]
    assert load["extra_stream"] == "server_full"
    assert load["identical"] == 1 and load["per_stream"][0]["ended"]
    assert load["per_stream"][0]["speakers_agree"] > 0.9
    assert load["per_stream"][0]["finals"] >= 1
    assert load["rss_start_mb"] > 0 and load["lag_p95"] is not None
    relay = tmp_path / "relay.json"
    run = bench("--mode", "relay", "--json", relay)
    assert run.returncode == 0, run.stderr
    r = json.loads(relay.read_text())["relay"]
    assert r["pings"] == 300 and r["relay_p50_ms"] > 0


def test_bench_latency_mode_times_every_word_on_a_real_server(
    tmp_path: Path, speech_dir: Path
) -> None:
    """Two clips at the pace of speech through a transcriber process: every reference
    word is found, shown before (or when) it turns final, and scored."""
    out = tmp_path / "latency.json"
    run = bench(
        "--mode",
        "latency",
        "--streams",
        "1",
        "--half",
        "all",
        "--limit",
        "2",
        "--data",
        str(speech_dir),
        "--json",
        str(out),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "word final after it was said" in run.stdout
    lat = json.loads(out.read_text())["latency"]
    manifest = json.loads((speech_dir / "manifest.json").read_text())
    refs = [e for e in manifest if e["category"] == "wer_single"][:2]
    n_words = sum(len((speech_dir / e["ref_text"]).read_text().split()) for e in refs)
    assert lat["streams"] == 1 and lat["words"] == n_words
    assert lat["wer"] <= 0.25
    assert 0 < lat["visible_p50_s"] <= lat["commit_p50_s"]
    assert lat["cores"] > 0 and lat["peak_rss_mb"] > 100
