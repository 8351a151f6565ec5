"""Speaker settings side by side in seconds: `hubbub eval`'s streaming path, Whisper cached.

Streams one half of the shared multi-speaker recordings and of ``--built`` conversations
(``hubbub.evaluation.splits``) through the CPU engine in this process, once per setting,
and prints refined / live DER and the speaker count per category (and per file with
``--files``). Whisper's results are kept in ``--cache`` by audio, prefix and options:
speaker settings never change what Whisper is asked, so after one run that fills the
cache (minutes) each further run replays it and costs only the VAD, the speaker encoder
and the clustering (about 10 s for the tuning half). The figures equal `hubbub eval`'s
for the same files. This is how ``bridge_s`` and ``short_margin`` were chosen (on
``tune``), then reported on ``test``.

    python bench/speaker_sweep.py ../shared/data/speech tune '{}' '{"short_margin": 0.1}'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from hubbub.engines.base import SessionOptions
from hubbub.engines.cpu import CpuEngine, CpuEngineConfig
from hubbub.engines.cpu.whisper import AsrResult
from hubbub.evaluation.runner import (
    FileScore,
    Recording,
    built,
    from_manifest,
    load_manifest,
    run_streaming,
    summary,
)

MULTI = ("diar_multi", "diar_multi_rttm_only", "synthetic_multi")


class CachedAsr:
    """The engine's Whisper, answering rows it has seen before from a dict."""

    def __init__(self, asr: Any, path: Path) -> None:
        self.asr, self.path = asr, path
        self.cache: dict[tuple, AsrResult] = (
            pickle.loads(path.read_bytes()) if path.exists() else {}
        )
        self.missed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.asr, name)

    def transcribe(self, audios: list[np.ndarray], **options: Any) -> list[AsrResult]:
        languages = options.pop("languages", None) or [None] * len(audios)
        prefixes = options.pop("prefixes", None) or [[] for _ in audios]
        rest = tuple(sorted(options.items()))
        keys = [
            (hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest(), tuple(p), lang, rest)
            for a, p, lang in zip(audios, prefixes, languages, strict=True)
        ]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            self.missed += len(todo)
            results = self.asr.transcribe(
                [audios[i] for i in todo],
                languages=[languages[i] for i in todo],
                prefixes=[prefixes[i] for i in todo],
                **options,
            )
            self.cache.update({keys[i]: r for i, r in zip(todo, results, strict=True)})
        return [self.cache[k] for k in keys]

    def save(self) -> None:
        if self.missed:
            self.path.write_bytes(pickle.dumps(self.cache))


def recordings(
    data: Path, half: str, conversations: int, telephone: bool, categories: list[str] | None
) -> list[Recording]:
    manifest = data / "manifest.json"
    entries = [e for e in load_manifest(manifest) if e["category"] in MULTI]
    recs = from_manifest(entries, data) + built(manifest, conversations, telephone)
    return [
        r
        for r in recs
        if (half == "all" or r.split == half) and (not categories or r.category in categories)
    ]


def report(setting: str, scores: list[FileScore], files: bool) -> None:
    print(setting)
    for category, row in summary(scores).items():
        if row["der"] is not None:
            print(
                f"  {category:28s} DER {row['der']:6.1%} (live {row['live_der']:6.1%}) "
                f"count exact {row['speaker_count_exact']:.0%}"
            )
    for s in scores if files else []:
        if s.der is not None and s.live_der is not None:
            print(
                f"    {s.id:36s} DER {s.der.rate:6.1%} (live {s.live_der.rate:6.1%}) "
                f"speakers {s.hyp_speakers}/{s.ref_speakers}"
            )


def merged(base: dict, update: dict) -> dict:
    """``base`` with ``update``'s fields, nested ones (``{"utterances": {"onset": 0.4}}``) too."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) else value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="folder with manifest.json")
    ap.add_argument("half", choices=["tune", "test", "all"])
    ap.add_argument("settings", nargs="+", help="CpuEngineConfig fields as JSON, one per run")
    ap.add_argument("--built", type=int, default=20, help="conversations built from clips")
    ap.add_argument("--telephone", action="store_true", help="and them through a phone channel")
    ap.add_argument("--category", action="append", help="only these categories (repeatable)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hubbub_asr_cache.pkl"))
    ap.add_argument("--files", action="store_true", help="also a line per recording")
    args = ap.parse_args()
    recs = recordings(args.data, args.half, args.built, args.telephone, args.category)
    engine = CpuEngine(CpuEngineConfig())
    engine.warmup()
    asr = CachedAsr(engine.asr, args.cache)
    engine.asr = asr
    base = engine.config
    for setting in args.settings:
        engine.config = CpuEngineConfig.model_validate(
            merged(base.model_dump(), json.loads(setting))
        )
        report(setting, run_streaming(engine, recs, SessionOptions()), args.files)
        asr.save()


if __name__ == "__main__":
    main()
