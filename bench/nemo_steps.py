"""Step time of the NeMo engine against the number of concurrent sessions.

Builds random-weight models of the real classes (``--size tiny`` runs anywhere in
seconds; ``--size full`` has the real checkpoints' compute), then times ONE batched step
for 1, 2, 4, ... live sessions, each fed real speech, each running ``--speakers`` ASR
instances (the diarizer's gating is overridden so the ASR load is the same for every N).

    python bench/nemo_steps.py                       # tiny models, CPU, 1120 ms chunks
    python bench/nemo_steps.py --latency 160ms --max-sessions 8 --json out.json

"Streams held" is the most sessions whose step fits in the chunk's duration (real time,
no headroom); the service should admit fewer (see the engine's ``measure_capacity``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


@dataclass
class Point:
    latency: str
    sessions: int
    asr_rows: int
    step_ms: float  # median wall time of one batched step
    per_session_ms: float
    chunk_ms: float
    rtf: float  # step time / chunk duration: < 1 keeps up in real time
    peak_gpu_mb: float | None


def read_wav(path: Path) -> np.ndarray:
    """16 kHz mono 16-bit WAV -> float32 (stdlib only: runs where hubbub's audio deps don't)."""
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


def speech(n: int, seconds: float, folder: Path | None = None) -> list[np.ndarray]:
    """``n`` streams of real speech (noise where no recordings are found)."""
    folder = folder or ROOT.parent / "shared" / "data" / "speech"
    files = sorted(folder.glob("*/*.16k.wav"))
    need = int(seconds * 16000)
    rng = np.random.default_rng(0)
    if not files:
        return [(rng.standard_normal(need) * 0.05).astype(np.float32) for _ in range(n)]
    clips = [read_wav(f) for f in files[:12]]
    out = []
    for i in range(n):
        order = [clips[(i + k) % len(clips)] for k in range(len(clips))]
        out.append(np.tile(np.concatenate(order), 1 + need // sum(map(len, order)))[:need])
    return out


def build_engine(size: str, latency: str, device: str, precision: str, workdir: Path):
    import torch

    from hubbub.engines.nemo import NemoEngine, NemoEngineConfig
    from hubbub.engines.nemo.models import Models, configure_streaming, pick_device
    from hubbub.engines.nemo.presets import preset

    from support.nemo_models import SIZES, build_asr, build_diarizer, train_tokenizer

    dev = pick_device(device)
    cfg = NemoEngineConfig(latency=latency, device=str(dev), precision=precision, capacity=1)
    tok = train_tokenizer(workdir / f"tok-{size}", SIZES[size].vocab)
    asr, diar = build_asr(size, tok).to(dev).eval(), build_diarizer(size).to(dev).eval()
    configure_streaming(asr, diar, cfg, preset(latency))
    bf16 = precision == "bf16" and dev.type == "cuda"
    return NemoEngine(cfg, Models(asr, diar, dev, torch.bfloat16 if bf16 else None))


def time_sessions(engine, n: int, speakers: int, steps: int, audio: list[np.ndarray]) -> Point:
    import torch

    from hubbub.engines.base import ChunkInput, SessionOptions

    chunk = engine.chunk_samples
    sessions = [engine.open_session(f"b{i}", SessionOptions()) for i in range(n)]
    engine.force_speakers = speakers
    cuda = engine.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    try:
        for k in range(steps + 2):  # two warm steps: first-step path, then steady
            pieces = [a[k * chunk : (k + 1) * chunk] for a in audio]
            batch = [ChunkInput(s, a) for s, a in zip(sessions, pieces, strict=True)]
            t0 = time.perf_counter()
            engine.step(batch)
            if cuda:
                torch.cuda.synchronize()
            if k >= 2:
                times.append(time.perf_counter() - t0)
    finally:
        engine.force_speakers = None
        for s in sessions:
            engine.close_session(s)
    step = float(np.median(times))
    chunk_s = engine.preset.chunk_s
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return Point(
        engine.preset.name,
        n,
        n * speakers,
        round(step * 1000, 2),
        round(step * 1000 / n, 3),
        round(chunk_s * 1000, 1),
        round(step / chunk_s, 4),
        None if peak is None else round(peak, 1),
    )


def sweep(
    engine,
    max_sessions: int,
    speakers: int,
    steps: int,
    stop_rtf: float,
    audio: list[np.ndarray] | None = None,
) -> list[Point]:
    """Time 1, 2, 4, ... sessions until ``max_sessions`` or a step slower than ``stop_rtf``."""
    points: list[Point] = []
    n = 1
    audio = audio or speech(max_sessions, (steps + 2) * engine.preset.chunk_s + 1)
    while n <= max_sessions:
        p = time_sessions(engine, n, speakers, steps, audio[:n])
        points.append(p)
        print(
            f"{p.latency:>7} {p.sessions:>5} sessions {p.asr_rows:>5} rows  "
            f"step {p.step_ms:9.2f} ms  {p.per_session_ms:8.3f} ms/session  rtf {p.rtf:.3f}"
            + (f"  peak {p.peak_gpu_mb:.0f} MiB" if p.peak_gpu_mb is not None else ""),
            flush=True,
        )
        if p.rtf > stop_rtf:
            break
        n *= 2
    return points


def rss_mb() -> float:
    """Resident memory now (not the peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def long_run(engine, seconds: float, sessions: int, blocks: int = 6) -> list[dict]:
    """Stream ``seconds`` of speech through ``sessions`` sessions; per block of the stream:
    median step time, process RSS and the numbers held in session state."""
    from hubbub.engines.base import ChunkInput, SessionOptions

    chunk = engine.chunk_samples
    audio = speech(sessions, seconds)
    live = [engine.open_session(f"long{i}", SessionOptions()) for i in range(sessions)]
    steps = int(seconds * 16000) // chunk
    per_block = max(1, steps // blocks)
    rows, times = [], []
    for k in range(steps):
        batch = [
            ChunkInput(s, a[k * chunk : (k + 1) * chunk]) for s, a in zip(live, audio, strict=True)
        ]
        t0 = time.perf_counter()
        engine.step(batch)
        times.append(time.perf_counter() - t0)
        if (k + 1) % per_block == 0:
            state = sum(int(np.prod(shape)) for s in live for shape in s.tensors().values())
            words = max((sl.words.open_words for s in live for sl in s.slots.values()), default=0)
            rows.append(
                {
                    "audio_min": round((k + 1) * chunk / 16000 / 60, 1),
                    "step_ms_median": round(float(np.median(times)) * 1000, 2),
                    "rss_mb": round(rss_mb()),
                    "state_numbers": state,
                    "open_words_max": words,
                }
            )
            print(rows[-1], flush=True)
            times = []
    for s in live:
        engine.close_session(s)
    return rows


def held(points: list[Point], budget: float = 1.0) -> int:
    """Most sessions whose batched step took at most ``budget`` x the chunk's duration."""
    return max((p.sessions for p in points if p.rtf <= budget), default=0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--latency", nargs="+", default=["1120ms"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--max-sessions", type=int, default=16)
    ap.add_argument("--speakers", type=int, default=2, help="ASR instances per session")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per point")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--json", type=Path, help="write the points here")
    ap.add_argument("--long", type=float, help="instead: stream this many seconds, report drift")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for latency in args.latency:
            engine = build_engine(args.size, latency, args.device, args.precision, Path(tmp))
            print(f"# {args.size} models on {engine.device}, {latency} chunks", flush=True)
            if args.long:
                results[latency] = long_run(engine, args.long, args.max_sessions)
                continue
            points = sweep(engine, args.max_sessions, args.speakers, args.steps, stop_rtf=1.5)
            results[latency] = [asdict(p) for p in points]
            print(
                f"# {latency}: {held(points)} real-time streams held "
                f"({held(points, 0.5)} with 2x headroom)",
                flush=True,
            )
            del engine
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
