"""An hour in one session: does the CPU engine's step cost or memory grow with it?

Feeds ``--minutes`` of real speech (recordings of a manifest joined over and over, several
voices) through one session of the CPU engine as fast as it goes (the scheduler's path, not
paced), and reports per block of ``--block`` minutes: the median and 95th-percentile step
time, the process's RSS, and what the session keeps for its speakers' second looks.

    python bench/long_session.py ../shared/data/speech/manifest.json --minutes 60
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hubbub.audio import SAMPLE_RATE
from hubbub.engines.cpu import CpuEngine
from hubbub.engines.cpu.engine import CpuSession
from hubbub.evaluation.benchmark import rss_mb, speech_streams
from hubbub.recordings import transcribe_many


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--block", type=float, default=5.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    audio = speech_streams(args.manifest, 1, args.minutes * 60)["stream1"]
    engine = CpuEngine()
    engine.warmup()
    sessions: list[CpuSession] = []
    opened = engine.open_session

    def keep(session_id, options):
        sessions.append(opened(session_id, options))
        return sessions[-1]

    engine.open_session = keep  # type: ignore[method-assign]
    block = int(args.block * 60 * SAMPLE_RATE)
    rows: list[dict] = []
    steps: list[float] = []

    def on_update(_name: str, processed_s: float, _upd) -> None:
        if processed_s * SAMPLE_RATE >= (len(rows) + 1) * block:
            s = sessions[0]
            rows.append(
                {
                    "minute": round(processed_s / 60, 1),
                    "step_p50_ms": round(1000 * float(np.median(steps)), 1),
                    "step_p95_ms": round(1000 * float(np.percentile(steps, 95)), 1),
                    "rss_mb": round(rss_mb(), 1),
                    "speaker_items": len(s.speakers.items),
                    "speakers": s.speakers.n_speakers,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            steps.clear()

    transcribe_many(
        engine,
        {"long": audio},
        on_update=on_update,
        on_step=lambda seconds, _: steps.append(seconds),
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
