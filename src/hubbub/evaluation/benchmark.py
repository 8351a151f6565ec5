"""Benchmarks behind ``hubbub bench``: live latency under load, and streaming vs whole-file WER.

Real-time mode streams N recordings of real speech through an engine at the pace of speech
(``transcribe_many(realtime=True)``: audio is fed no faster than it would have been spoken),
all sessions batched into one ``step`` per chunk by the scheduler the transcriber uses.
It measures what a listener sees:

- final delay: wall time from the end of the last word of an utterance to the moment its
  final text exists (VAD silence wait + queueing + compute);
- partial interval: wall time between successive refreshes of a speaker's partial text
  while the same utterance goes on;
- lag: how far behind the audio clock the engine ran at its worst;
- step time, compute real-time factor, CPU use, peak RSS.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hubbub.audio import SAMPLE_RATE
from hubbub.decode import load_audio
from hubbub.engines.base import Engine, EngineUpdate, SessionOptions
from hubbub.recordings import transcribe_many

# Long real speech first: several speakers, then long single-speaker reads, then excerpts.
DEFAULT_SOURCES = (
    "synthetic/synthetic_conv_4spk",
    "MFA/acoustic_corpus",
    "pyannote-audio/debug_trn00",
    "MFA/cold_corpus",
    "Picovoice-falcon/falcon_test",
    "pyannote-audio/debug_trn04",
    "speechbrain/LJ050-0131",
    "openai-whisper/jfk",
)
GAP_S = 1.0  # silence between joined clips


def rss_mb() -> float:
    """Resident set size now, MiB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def speech_streams(
    manifest_path: Path, n: int, seconds: float, sources: Sequence[str] = DEFAULT_SOURCES
) -> dict[str, np.ndarray]:
    """``n`` streams of ``seconds`` each, joined from real recordings in a manifest.

    Stream k starts at the k-th source and walks the list from there, so concurrent
    streams carry different speech.
    """
    entries = {e["id"]: e for e in json.loads(manifest_path.read_text())}
    ids = [s for s in sources if s in entries] or list(entries)
    cache: dict[str, np.ndarray] = {}
    want = int(seconds * SAMPLE_RATE)
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    streams = {}
    for k in range(n):
        pieces, total, i = [], 0, k
        while total < want:
            sid = ids[i % len(ids)]
            if sid not in cache:
                cache[sid] = load_audio(manifest_path.parent / entries[sid]["audio"])
            pieces += [cache[sid], gap]
            total += len(cache[sid]) + len(gap)
            i += 1
        streams[f"stream{k + 1}"] = np.concatenate(pieces)[:want]
    return streams


def file_streams(paths: Sequence[Path], n: int, seconds: float | None) -> dict[str, np.ndarray]:
    """``n`` streams from the given files (reused round-robin), cut to ``seconds``."""
    audios = [load_audio(p) for p in paths]
    out = {}
    for k in range(n):
        a = audios[k % len(audios)]
        out[f"stream{k + 1}"] = a[: int(seconds * SAMPLE_RATE)] if seconds else a
    return out


@dataclass
class RealtimeResult:
    streams: int
    audio_s: float  # per stream
    wall_s: float
    chunk_s: float
    final_delay_s: list[float] = field(default_factory=list)  # one per utterance
    partial_interval_s: list[float] = field(default_factory=list)
    first_partial_s: list[float] = field(default_factory=list)  # utterance start -> 1st
    step_s: list[float] = field(default_factory=list)
    max_lag_s: float = 0.0
    busy_s: float = 0.0
    cpu_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    peak_rss_mb: float = 0.0
    segments: int = 0
    speakers: dict[str, int] = field(default_factory=dict)

    @property
    def rtf(self) -> float:
        """Engine compute per second of audio, all streams counted (1.0: one core-clock
        second of stepping per second of one stream's audio)."""
        return self.busy_s / max(1e-9, self.audio_s * self.streams)

    @property
    def busy_fraction(self) -> float:
        """Share of the wall clock the engine spent stepping (>= 1: cannot keep up)."""
        return self.busy_s / max(1e-9, self.wall_s)

    def summary(self) -> dict[str, float | int | None]:
        return {
            "streams": self.streams,
            "audio_s_per_stream": round(self.audio_s, 2),
            "wall_s": round(self.wall_s, 2),
            "utterances": len(self.final_delay_s),
            "final_delay_p50_s": _r(percentile(self.final_delay_s, 50)),
            "final_delay_p95_s": _r(percentile(self.final_delay_s, 95)),
            "final_delay_max_s": _r(max(self.final_delay_s, default=None)),
            "partial_interval_p50_s": _r(percentile(self.partial_interval_s, 50)),
            "partial_interval_p95_s": _r(percentile(self.partial_interval_s, 95)),
            "partial_interval_max_s": _r(max(self.partial_interval_s, default=None)),
            "first_partial_p50_s": _r(percentile(self.first_partial_s, 50)),
            "first_partial_p95_s": _r(percentile(self.first_partial_s, 95)),
            "first_partial_max_s": _r(max(self.first_partial_s, default=None)),
            "step_p50_s": _r(percentile(self.step_s, 50)),
            "step_p95_s": _r(percentile(self.step_s, 95)),
            "step_max_s": _r(max(self.step_s, default=None)),
            "max_lag_s": _r(self.max_lag_s),
            "rtf": _r(self.rtf),
            "busy_fraction": _r(self.busy_fraction),
            "cpu_cores_used": _r(self.cpu_s / max(1e-9, self.wall_s)),
            "rss_start_mb": round(self.rss_start_mb, 1),
            "rss_end_mb": round(self.rss_end_mb, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "segments": self.segments,
        }

    def to_json(self) -> dict:
        return {"summary": self.summary(), "speakers": self.speakers, "raw": asdict(self)}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def run_realtime(
    engine: Engine,
    audios: Mapping[str, np.ndarray],
    options: SessionOptions | None = None,
    on_update: Callable[[str, float, EngineUpdate], None] | None = None,
) -> RealtimeResult:
    """Stream ``audios`` concurrently at the pace of speech and measure latency and cost."""
    step_times: list[float] = []
    result = RealtimeResult(
        streams=len(audios),
        audio_s=max(len(a) for a in audios.values()) / SAMPLE_RATE,
        wall_s=0.0,
        chunk_s=engine.chunk_samples / SAMPLE_RATE,
        rss_start_mb=rss_mb(),
    )
    # Per open utterance (stream, start): its partial last seen and when that changed.
    seen: dict[tuple[str, float], tuple[float, str, float]] = {}
    ends = {name: len(a) / SAMPLE_RATE for name, a in audios.items()}
    t0 = time.perf_counter()
    c0 = cpu_s()

    def observe(name: str, processed_s: float, upd: EngineUpdate) -> None:
        now = time.perf_counter() - t0
        result.max_lag_s = max(result.max_lag_s, now - processed_s)
        if upd.finals and processed_s < ends[name]:
            # One utterance's finals arrive together: its delay is that of its last word.
            # (The flush at the end of a stream closes its utterance early: not counted.)
            result.final_delay_s.append(now - max(s.end for s in upd.finals))
        current = set()
        for p in upd.partials:
            key = (name, p.start)
            current.add(key)
            prev = seen.get(key)
            if prev is None:
                result.first_partial_s.append(now - p.start)
            elif prev[:2] == (p.end, p.text):
                continue  # the same partial repeated
            else:
                result.partial_interval_s.append(now - prev[2])
            seen[key] = (p.end, p.text, now)
        for key in [k for k in seen if k[0] == name and k not in current]:
            del seen[key]
        if on_update is not None:
            on_update(name, processed_s, upd)

    transcripts = transcribe_many(
        engine,
        audios,
        options,
        realtime=True,
        on_update=observe,
        on_step=lambda seconds, _: step_times.append(seconds),
    )
    result.wall_s = time.perf_counter() - t0
    result.cpu_s = cpu_s() - c0
    result.step_s = step_times
    result.busy_s = float(sum(step_times))
    result.rss_end_mb = rss_mb()
    result.peak_rss_mb = peak_rss_mb()
    result.segments = sum(len(t.segments) for t in transcripts.values())
    result.speakers = {name: len(t.speakers) for name, t in transcripts.items()}
    return result


@dataclass
class WerComparison:
    files: int
    audio_s: float
    streaming: dict  # evaluation summary row for all files
    whole_file: dict
    streaming_wall_s: float
    whole_file_wall_s: float
    per_file: list[dict]

    def summary(self) -> dict:
        return {
            "files": self.files,
            "audio_s": round(self.audio_s, 1),
            "wer_streaming": self.streaming["wer"],
            "wer_whole_file": self.whole_file["wer"],
            "rtf_streaming": _r(self.streaming_wall_s / max(1e-9, self.audio_s)),
            "rtf_whole_file": _r(self.whole_file_wall_s / max(1e-9, self.audio_s)),
        }

    def to_json(self) -> dict:
        return {"summary": self.summary(), "files": self.per_file}


def compare_wer(
    engine: Engine,
    model_path: str,
    entries: list[dict],
    root: Path,
    threads: int = 2,
    on_file: Callable[[str, object], None] | None = None,
) -> WerComparison:
    """WER of the streaming engine vs faster-whisper on whole files, same recordings.

    Streaming runs as fast as it can (not paced); whole-file is faster-whisper with beam 5
    and its VAD, no speakers: the accuracy the streaming path gives up, and at what cost.
    """
    from hubbub.evaluation.runner import from_manifest, run_streaming, run_whole_file, summary

    recordings = from_manifest(entries, root)
    t0 = time.perf_counter()
    streamed = run_streaming(
        engine, recordings, on_file=lambda s: on_file and on_file("streaming", s)
    )
    t1 = time.perf_counter()
    whole = run_whole_file(
        model_path,
        recordings,
        threads=threads,
        on_file=lambda s: on_file and on_file("whole-file", s),
    )
    t2 = time.perf_counter()
    per_file = [
        {
            "id": a.id,
            "duration_s": round(a.duration_s, 2),
            "wer_streaming": None if a.wer is None else round(a.wer.rate, 4),
            "wer_whole_file": None if b.wer is None else round(b.wer.rate, 4),
            "text_streaming": a.text,
            "text_whole_file": b.text,
        }
        for a, b in zip(streamed, whole, strict=True)
    ]
    return WerComparison(
        files=len(entries),
        audio_s=sum(s.duration_s for s in streamed),
        streaming=summary(streamed)["all"],
        whole_file=summary(whole)["all"],
        streaming_wall_s=t1 - t0,
        whole_file_wall_s=t2 - t1,
        per_file=per_file,
    )
