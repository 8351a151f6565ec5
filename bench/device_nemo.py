"""GPU capacity of the NeMo engine: how many real-time streams one accelerator holds.

Builds random-weight models with the real checkpoints' compute (multitalker Parakeet:
FastConformer d_model 1024, 24 layers, vocab 1024, ~600M parameters; streaming
Sortformer: 17 conformer + 18 transformer layers, ~117M), in bf16 autocast, then times
ONE batched engine step for 1, 2, 4, ... sessions (each with ``--speakers`` active ASR
instances) at 1.12 s and 0.16 s chunks, bisects the largest session count whose step fits
in real time, and prints a table and a JSON summary.

On a GPU machine without NeMo (nothing can be downloaded there), carry it as wheels:
    bash bench/device_wheels.sh            # here: fetches cp312 wheels into .whl/
then there (run from the repo root, ``.whl`` carried):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:src python3 bench/device_nemo.py --out $OUT
Check it on a CPU first:  python bench/device_nemo.py --tiny
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nemo_steps


def describe(engine) -> dict:
    import torch

    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    info = {
        "device": str(engine.device),
        "asr_params_m": round(count(engine.models.asr) / 1e6, 1),
        "diar_params_m": round(count(engine.models.diar) / 1e6, 1),
        "autocast": str(engine.models.autocast_dtype),
        "torch": torch.__version__,
    }
    if engine.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(engine.device)
        info["weights_mb"] = round(torch.cuda.memory_allocated() / 2**20)
    return info


def bisect(engine, lo: int, hi: int, speakers: int, steps: int, audio, budget: float) -> int:
    """Largest n in [lo, hi) whose step rtf <= budget, given lo passes and hi fails."""
    while hi - lo > max(1, lo // 16):
        mid = (lo + hi) // 2
        p = nemo_steps.time_sessions(engine, mid, speakers, steps, audio[:mid])
        print(f"   bisect {mid:>5} sessions: rtf {p.rtf:.3f}", flush=True)
        lo, hi = (mid, hi) if p.rtf <= budget else (lo, mid)
    return lo


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models (a CPU check of the script)")
    ap.add_argument("--latency", nargs="+", default=["1120ms", "160ms"])
    ap.add_argument("--max-sessions", type=int, default=1024)
    ap.add_argument("--speakers", type=int, default=2, help="active ASR instances per session")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--budget", type=float, default=1.0, help="step time / chunk time to fit")
    ap.add_argument("--out", type=Path, help="folder for device_nemo.json")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(4 if torch.cuda.is_available() else 1)
    size = "tiny" if args.tiny else "full"
    max_sessions = min(args.max_sessions, 8) if args.tiny else args.max_sessions
    summary: dict = {"size": size, "speakers_per_session": args.speakers, "latency": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for latency in args.latency:
            t0 = time.perf_counter()
            engine = nemo_steps.build_engine(size, latency, "auto", args.precision, Path(tmp))
            summary["models"] = describe(engine)
            print(f"# {latency}: {summary['models']} (built in {time.perf_counter() - t0:.0f} s)")
            audio = nemo_steps.speech(max_sessions, (args.steps + 2) * engine.preset.chunk_s + 1)
            points = nemo_steps.sweep(
                engine, max_sessions, args.speakers, args.steps, args.budget, audio
            )
            fits = nemo_steps.held(points, args.budget)
            fails = [p.sessions for p in points if p.rtf > args.budget]
            if fits and fails:
                hi = min(fails)
                fits = bisect(engine, fits, hi, args.speakers, args.steps, audio, args.budget)
            half = nemo_steps.held(points, args.budget / 2)
            summary["latency"][latency] = {
                "points": [vars(p) for p in points],
                "streams_real_time": fits,
                "streams_2x_headroom": half,
            }
            print(
                f"# {latency}: one {engine.device.type} holds {fits} real-time streams "
                f"({half} with 2x headroom), {args.speakers} speakers each",
                flush=True,
            )
            del engine
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "device_nemo.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
