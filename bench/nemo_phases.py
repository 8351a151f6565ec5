"""Where one NeMo engine step spends its time, phase by phase.

Wraps the step's phases (log-mel, pre-encode, Sortformer, ASR encoder, RNNT decoder)
with timers that synchronise the device before and after, runs a few steps for each
session count, and prints each phase's median share. A torch.profiler table of one step
is written too, when ``--out`` is given.

    python bench/nemo_phases.py --size tiny                   # CPU check
    python bench/nemo_phases.py --size full --latency 160ms --sessions 1 64 --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nemo_steps


class PhaseClock:
    """Accumulates synchronised wall time per named phase."""

    def __init__(self, device) -> None:
        import torch

        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.totals: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.totals[name] += time.perf_counter() - t0

        return timed


def instrument(engine, clock: PhaseClock) -> None:
    """Time the phases of ``engine.step`` (the engine and NeMo objects are patched)."""
    from hubbub.engines.nemo import engine as engine_mod

    asr = engine.models.asr
    engine.frontend.mel = clock.wrap("log-mel", engine.frontend.mel)
    engine.frontend.pre_encode = clock.wrap("pre-encode", engine.frontend.pre_encode)
    engine_mod.diarize_step = clock.wrap("sortformer", engine_mod.diarize_step)
    asr.encoder.cache_aware_stream_step = clock.wrap(
        "asr encoder", asr.encoder.cache_aware_stream_step
    )
    asr.decoding.rnnt_decoder_predictions_tensor = clock.wrap(
        "rnnt decoder", asr.decoding.rnnt_decoder_predictions_tensor
    )
    engine_mod.asr_step = clock.wrap("asr total", engine_mod.asr_step)
    engine._step = clock.wrap("step", engine._step)


def phases(engine, clock: PhaseClock, n: int, speakers: int, steps: int, audio) -> dict:
    clock.totals.clear()
    point = nemo_steps.time_sessions(engine, n, speakers, steps, audio[:n])
    # time_sessions runs steps + 2 steps; the first two are warm-up and counted here too,
    # so shares (not absolute times) are what this reports.
    total = clock.totals.get("step", 0.0) or 1.0
    asr_total = clock.totals.get("asr total", 0.0)
    parts = {k: v for k, v in clock.totals.items() if k not in ("step", "asr total")}
    parts["asr rows: copies, states"] = (
        asr_total - parts.get("asr encoder", 0.0) - parts.get("rnnt decoder", 0.0)
    )
    parts["rest of the step"] = total - sum(parts.values())
    share = {k: round(v / total, 3) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])}
    return {"sessions": n, "step_ms": point.step_ms, "rtf": point.rtf, "share": share}


def profile_table(engine, n: int, speakers: int, audio, rows: int = 30) -> str:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU]
    if engine.device.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    with profile(activities=acts) as prof:
        nemo_steps.time_sessions(engine, n, speakers, 2, audio[:n])
    key = "cuda_time_total" if engine.device.type == "cuda" else "cpu_time_total"
    text = prof.key_averages().table(sort_by=key, row_limit=rows)
    launches = sum(e.count for e in prof.key_averages() if "LaunchKernel" in e.key)
    return f"kernel launches in 4 steps: {launches}\n{text}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--latency", nargs="+", default=["160ms", "1120ms"])
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--speakers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(4 if torch.cuda.is_available() else 1)
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for latency in args.latency:
            engine = nemo_steps.build_engine(args.size, latency, "auto", args.precision, Path(tmp))
            clock = PhaseClock(engine.device)
            instrument(engine, clock)
            audio = nemo_steps.speech(
                max(args.sessions), (args.steps + 2) * engine.preset.chunk_s + 1
            )
            report[latency] = [
                phases(engine, clock, n, args.speakers, args.steps, audio) for n in args.sessions
            ]
            for row in report[latency]:
                print(
                    f"{latency} {row['sessions']:>4} sessions step {row['step_ms']:.1f} ms",
                    row["share"],
                    flush=True,
                )
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                table = profile_table(engine, args.sessions[0], args.speakers, audio)
                (args.out / f"profile_{latency}.txt").write_text(table)
                print(table[:3000], flush=True)
            del engine
    text = json.dumps(report, indent=2)
    if args.out:
        (args.out / "nemo_phases.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
