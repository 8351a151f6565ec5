"""Feed whole recordings through an engine as if they were live streams.

Used by ``hubbub transcribe`` and ``hubbub eval``: every file becomes a session, and
each step advances all unfinished sessions by one chunk in one batched call, exactly
the path live streams take. ``realtime=True`` paces the chunks at the speed of speech.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from hubbub.audio import SAMPLE_RATE
from hubbub.engines.base import ChunkInput, Engine, EngineUpdate, SessionOptions
from hubbub.transcript import Segment, Transcript


@dataclass
class StreamStats:
    """Per-file figures: how long finals took after their audio arrived, and steps."""

    steps: int = 0
    compute_s: float = 0.0
    final_delays_s: list[float] = field(default_factory=list)
    partial_updates: int = 0


Progress = Callable[[str, float, EngineUpdate], None]


def transcribe_streams(
    engine: Engine,
    audios: Mapping[str, np.ndarray],
    options: SessionOptions | None = None,
    *,
    realtime: bool = False,
    on_update: Progress | None = None,
) -> tuple[dict[str, Transcript], dict[str, StreamStats]]:
    """Stream every recording through ``engine`` at once; return final transcripts."""
    opts = options or SessionOptions()
    sessions = {name: engine.open_session(name, opts) for name in audios}
    segments: dict[str, list[Segment]] = {name: [] for name in audios}
    stats = {name: StreamStats() for name in audios}
    pos = dict.fromkeys(audios, 0)
    chunk = engine.chunk_samples
    started = time.perf_counter()
    try:
        while True:
            batch = []
            for name, audio in audios.items():
                if pos[name] > len(audio):
                    continue  # already flushed
                piece = audio[pos[name] : pos[name] + chunk]
                pos[name] += chunk
                batch.append(ChunkInput(sessions[name], piece, flush=pos[name] >= len(audio)))
                if pos[name] >= len(audio):
                    pos[name] = len(audio) + 1
            if not batch:
                break
            if realtime:
                # The newest chunk in the batch may not be processed before it was spoken.
                due = max(item.session.samples_in + len(item.audio) for item in batch)
                wait = due / SAMPLE_RATE - (time.perf_counter() - started)
                if wait > 0:
                    time.sleep(wait)
            t0 = time.perf_counter()
            updates = engine.step(batch)
            dt = time.perf_counter() - t0
            for upd in updates:
                name = upd.session.id
                st = stats[name]
                st.steps += 1
                st.compute_s += dt / len(batch)
                st.partial_updates += bool(upd.partials)
                for seg in upd.finals:
                    # Audio of this segment ended at seg.end; it became final now.
                    delay = upd.audio_processed_s - seg.end
                    if realtime:
                        delay = (time.perf_counter() - started) - seg.end
                    st.final_delays_s.append(delay)
                segments[name] += upd.finals
                if on_update is not None:
                    on_update(name, upd.audio_processed_s, upd)
    finally:
        for s in sessions.values():
            engine.close_session(s)
    transcripts = {
        name: Transcript(
            session_id=name, duration=len(audio) / SAMPLE_RATE, segments=segments[name]
        ).sorted()
        for name, audio in audios.items()
    }
    return transcripts, stats
