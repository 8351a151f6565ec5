"""When words turn final, for CPU engine settings side by side (no server, no pacing).

Streams one half of the ``wer_single`` clips (``hubbub.evaluation.splits``), joined with
short gaps as ``hubbub bench --mode latency`` joins them, through the engine in this
process, once per setting. A word's commit time is the end of the audio stepped when its
final came out plus that step's compute time, against the word's end in an alignment of
the reference; so the figures leave out network and queueing, and setting against
setting they compare like with like. This is how the defaults of ``commit_after_s`` and
its neighbours were chosen (on ``tune``), then reported on ``test``.

    python bench/commit_policy.py ../shared/data/speech tune '{}' '{"commit_after_s": 0}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hubbub.audio import SAMPLE_RATE
from hubbub.engines.base import EngineUpdate
from hubbub.engines.cpu import CpuEngine, CpuEngineConfig
from hubbub.evaluation import word_latency
from hubbub.evaluation.metrics import aggregate
from hubbub.evaluation.splits import split_of
from hubbub.recordings import transcribe_many


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="folder with manifest.json")
    ap.add_argument("half", choices=["tune", "test", "all"])
    ap.add_argument("settings", nargs="+", help="CpuEngineConfig fields as JSON, one per run")
    args = ap.parse_args()
    manifest = json.loads((args.data / "manifest.json").read_text())
    entries = [
        e
        for e in manifest
        if e["category"] == "wer_single" and args.half in ("all", split_of(e["id"]))
    ]
    audio, clips = word_latency.build_stream(entries, args.data, word_latency.aligner())
    for setting in args.settings:
        print(json.dumps(measure(json.loads(setting), audio, clips)), flush=True)


def measure(setting: dict, audio: np.ndarray, clips: list[word_latency.Clip]) -> dict:
    engine = CpuEngine(CpuEngineConfig(**setting))
    engine.warmup()
    updates: list[word_latency.Update] = []
    step_s = [0.0]  # the last step's compute time, and all of it
    busy = [0.0]

    def on_step(seconds: float, _sessions: int) -> None:
        step_s[0] = seconds
        busy[0] += seconds

    def on_update(_name: str, processed_s: float, upd: EngineUpdate) -> None:
        at = processed_s + step_s[0]
        updates.append(word_latency.Update(at, list(upd.finals), list(upd.partials)))

    transcribe_many(engine, {"s": audio}, on_update=on_update, on_step=on_step)
    scores = [word_latency.score_clip(c, updates) for c in clips]
    commit = [x for s in scores for x in s.commit_s]
    visible = [x for s in scores for x in s.visible_s]
    errors = aggregate(s.wer for s in scores)
    return {
        "setting": setting,
        "commit_p50_s": round(float(np.median(commit)), 2),
        "commit_p95_s": round(float(np.percentile(commit, 95)), 2),
        "visible_p50_s": round(float(np.median(visible)), 2),
        "word_errors": errors.errors,
        "words": len(commit),
        "wer": round(errors.rate, 4),
        "cpu_per_audio_s": round(busy[0] / (len(audio) / SAMPLE_RATE), 3),
        "redecoded": engine.redecoded,
    }


if __name__ == "__main__":
    main()
