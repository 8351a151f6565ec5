"""How well speaker embeddings tell real speakers apart: EER on windows of conversations.

Cuts windows of ``--window`` seconds every ``--hop`` seconds out of reference turns where
exactly one speaker talks (RTTM of each recording), embeds them with the CPU engine's
encoder, and scores every pair of windows within a recording: same speaker or not. Reports
the equal error rate, the mean cosine of same and different pairs, and the encoder's CPU
time per second of audio (one thread), per split of the data.

    python bench/speaker_eer.py ../shared/data/speech/manifest.json --window 1.0 --hop 0.5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hubbub.audio import SAMPLE_RATE
from hubbub.decode import load_audio
from hubbub.engines.cpu.embedder import HOP, SpeakerEmbedder
from hubbub.evaluation.metrics import read_rttm
from hubbub.evaluation.splits import split_of


def single_speaker_windows(turns, duration: float, window: float, hop: float):
    """(speaker, start) of windows lying in one speaker's turn and nobody else's."""
    out = []
    for t in turns:
        s = t.start
        while s + window <= t.end:
            clash = any(
                o.speaker != t.speaker and o.start < s + window and o.end > s for o in turns
            )
            if not clash and s + window <= duration:
                out.append((t.speaker, s))
            s += hop
    return out


def eer(same: np.ndarray, diff: np.ndarray) -> float:
    scores = np.concatenate([same, diff])
    labels = np.concatenate([np.ones(len(same)), np.zeros(len(diff))])
    order = np.argsort(-scores)
    labels = labels[order]
    tp = np.cumsum(labels) / max(1, len(same))
    fp = np.cumsum(1 - labels) / max(1, len(diff))
    fnr = 1 - tp
    k = int(np.argmin(np.abs(fnr - fp)))
    return float((fnr[k] + fp[k]) / 2)


def run(manifest: Path, window: float, hop: float) -> dict:
    embedder = SpeakerEmbedder(threads=1)
    frames = int(window * SAMPLE_RATE / HOP) - 1
    results: dict[str, dict] = {}
    spent, audio_s = 0.0, 0.0
    for e in json.loads(manifest.read_text()):
        if not e.get("ref_rttm") or e["category"] == "diar_multi":
            continue
        audio = load_audio(manifest.parent / e["audio"])
        turns = [t for ts in read_rttm(manifest.parent / e["ref_rttm"]).values() for t in ts]
        wins = single_speaker_windows(turns, len(audio) / SAMPLE_RATE, window, hop)
        if len({s for s, _ in wins}) < 2:
            continue
        t0 = time.process_time()
        feats = embedder.features(audio)
        batch = [feats.window(int(start * SAMPLE_RATE / HOP), frames) for _, start in wins]
        vecs = embedder.embed(batch)
        spent += time.process_time() - t0
        audio_s += len(audio) / SAMPLE_RATE
        sims = vecs @ vecs.T
        speakers = np.array([s for s, _ in wins])
        upper = np.triu(np.ones_like(sims, bool), 1)
        same = sims[upper & (speakers[:, None] == speakers[None, :])]
        diff = sims[upper & (speakers[:, None] != speakers[None, :])]
        group = results.setdefault(split_of(e["id"]), {"same": [], "diff": [], "files": 0})
        group["same"].append(same)
        group["diff"].append(diff)
        group["files"] += 1
    report = {"window_s": window, "hop_s": hop, "ms_per_audio_s": round(1000 * spent / audio_s, 2)}
    for split, g in sorted(results.items()):
        same, diff = np.concatenate(g["same"]), np.concatenate(g["diff"])
        report[split] = {
            "files": g["files"],
            "pairs": len(same) + len(diff),
            "eer": round(eer(same, diff), 4),
            "cos_same": round(float(same.mean()), 3),
            "cos_diff": round(float(diff.mean()), 3),
        }
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("--window", type=float, default=1.0)
    p.add_argument("--hop", type=float, default=0.5)
    args = p.parse_args()
    print(json.dumps(run(args.manifest, args.window, args.hop), indent=1))


if __name__ == "__main__":
    main()
