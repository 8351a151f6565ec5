"""WER of a long monologue with no pause long enough to end an utterance.

Joins the short ``wer_single`` clips of a manifest (each trimmed to its speech, 50 ms
between them) into one stream, so the CPU engine must cut utterances at its length bound,
and scores the streamed transcript against the joined references.

    python bench/monologue_wer.py ../shared/data/speech/manifest.json [--cut-search 2 0.032]

(``--cut-search 0.032``, one VAD frame, is a cut right at the bound.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hubbub.audio import SAMPLE_RATE
from hubbub.decode import load_audio
from hubbub.engines.cpu import CpuEngine, CpuEngineConfig
from hubbub.engines.cpu.config import UtteranceConfig
from hubbub.evaluation.metrics import wer
from hubbub.recordings import transcribe_many


def monologue(manifest: Path, longest_s: float = 12.0) -> tuple[np.ndarray, str]:
    entries = [e for e in json.loads(manifest.read_text()) if e["category"] == "wer_single"]
    gap = np.zeros(SAMPLE_RATE // 20, np.float32)
    parts, refs = [], []
    for e in entries:
        audio = load_audio(manifest.parent / e["audio"])
        if len(audio) > longest_s * SAMPLE_RATE:
            continue
        loud = np.flatnonzero(np.abs(audio) > 0.03)
        pad = SAMPLE_RATE // 10
        parts += [audio[max(0, loud[0] - pad) : loud[-1] + pad], gap]
        refs.append((manifest.parent / e["ref_text"]).read_text())
    return np.concatenate(parts), " ".join(refs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--max-utterance", type=float, default=15.0)
    ap.add_argument("--cut-search", type=float, nargs="+", default=[2.0])
    args = ap.parse_args()
    audio, ref = monologue(args.manifest)
    for search in args.cut_search:
        cut = UtteranceConfig(max_utterance_s=args.max_utterance, cut_search_s=search)
        engine = CpuEngine(CpuEngineConfig(utterances=cut))
        transcripts = transcribe_many(engine, {"monologue": audio})
        t = transcripts["monologue"]
        r = wer(ref, t.text)
        n = r.substitutions + r.deletions + r.hits
        print(
            f"{len(audio) / SAMPLE_RATE:.0f} s monologue, cut in the last {search:g} s "
            f"before {args.max_utterance:g} s: "
            f"WER {r.rate:.1%} (S {r.substitutions}, D {r.deletions}, I {r.insertions} "
            f"of {n} words), {len(t.segments)} segments"
        )


if __name__ == "__main__":
    main()
