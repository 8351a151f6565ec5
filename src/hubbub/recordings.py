"""Recordings through the live path: ``transcribe()`` for library users, and the runner
behind ``hubbub transcribe``, ``hubbub eval`` and the benchmarks.

Every recording becomes a session on a ``Scheduler``, exactly as a live stream does on
the transcriber: the same chunking, the same batched step over all sessions, the same
flush at the end. ``realtime=True`` feeds the audio at the pace of speech::

    import hubbub
    t = hubbub.transcribe("meeting.wav", max_speakers=4)
    for seg in t.segments:
        print(f"{seg.start:6.1f} {t.name(seg.speaker)}: {seg.text}")
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from hubbub.audio import SAMPLE_RATE
from hubbub.decode import load_audio
from hubbub.engines.base import Engine, EngineUpdate, SessionOptions
from hubbub.pacing import Pacer
from hubbub.settings import Settings
from hubbub.transcriber.scheduler import Delivery, Scheduler, Stream
from hubbub.transcript import Segment, Transcript, relabelled

OnUpdate = Callable[[str, float, EngineUpdate], None]
FEED_S = 0.1  # audio pushed at a time: a live client's frame


def transcribe_many(
    engine: Engine,
    audios: Mapping[str, np.ndarray],
    options: SessionOptions | None = None,
    *,
    realtime: bool = False,
    on_update: OnUpdate | None = None,
    on_step: Callable[[float, int], None] | None = None,
) -> dict[str, Transcript]:
    """Stream every recording through ``engine`` at once; their final transcripts.

    ``on_update(name, audio_processed_s, update)`` sees every engine update (in this
    thread), ``on_step(seconds, sessions)`` every batched step (in the worker's).
    """
    opts = options or SessionOptions()
    engine.check(opts)
    deliveries: queue.Queue[tuple[str, Delivery]] = queue.Queue()
    # Audio is fed as the engine takes it: buffers hold at most a few chunks.
    buffer_s = max(4 * engine.chunk_samples / SAMPLE_RATE, 2.0)
    scheduler = Scheduler(engine, len(audios), buffer_s, on_step=on_step)
    scheduler.start()
    segments: dict[str, list[Segment]] = {name: [] for name in audios}
    try:
        streams = {
            name: scheduler.open(
                name,
                opts,
                lambda d, name=name: deliveries.put((name, d)),
                realtime=realtime,
            )
            for name in audios
        }
        _feed(scheduler, streams, audios, deliveries, segments, realtime, on_update)
    finally:
        scheduler.stop()
    return {
        name: Transcript(
            session_id=name, duration=len(audio) / SAMPLE_RATE, segments=segments[name]
        ).sorted()
        for name, audio in audios.items()
    }


def _feed(
    scheduler: Scheduler,
    streams: dict[str, Stream],
    audios: Mapping[str, np.ndarray],
    deliveries: queue.Queue[tuple[str, Delivery]],
    segments: dict[str, list[Segment]],
    realtime: bool,
    on_update: OnUpdate | None,
) -> None:
    """Push audio as the engine makes room (and, in real time, as it is due); take what
    the engine made; flush each recording at its end and close it once flushed."""
    step = int(FEED_S * SAMPLE_RATE)
    pos = dict.fromkeys(audios, 0)
    ending: dict[str, int] = {}  # name -> the flush request whose delivery ends it
    pacer = Pacer(1.0 if realtime else 0.0)

    def feed(name: str) -> bool:
        audio, p = audios[name], pos[name]
        if p >= len(audio):
            ending[name] = scheduler.flush(streams[name])
            return True
        piece = audio[p : p + step]
        if scheduler.room(streams[name]) < len(piece) or pacer.delay(p / SAMPLE_RATE) > 0:
            return False
        scheduler.push(streams[name], piece)
        pos[name] = p + len(piece)
        return True

    def absorb(name: str, d: Delivery) -> None:
        if d.error is not None:
            raise RuntimeError(f"{name}: the engine failed: {d.error}")
        assert d.update is not None
        segments[name] += d.update.finals
        if d.update.relabel:  # a second look at the speakers: the newest word counts
            segments[name] = relabelled(segments[name], d.update.relabel)
        if on_update is not None:
            on_update(name, d.update.audio_processed_s, d.update)
        if name in ending and d.flushed_through >= ending[name]:
            scheduler.close(streams.pop(name))
            del ending[name]

    while streams:
        fed = [feed(name) for name in list(streams) if name not in ending]
        # Nothing could go in: wait for the engine (or the clock) before trying again.
        wait = 0.0 if any(fed) else (FEED_S / 2 if realtime else 0.5)
        try:
            item = deliveries.get(timeout=wait) if wait else deliveries.get_nowait()
        except queue.Empty:
            continue
        absorb(*item)
        while not deliveries.empty():
            absorb(*deliveries.get_nowait())


def transcribe(
    audio: str | Path | BinaryIO | np.ndarray,
    *,
    max_speakers: int | None = None,
    language: str | None = None,
    engine: Engine | None = None,
    settings: Settings | None = None,
) -> Transcript:
    """Who said what in one recording (a path, a file object, or 16 kHz mono float32).

    Builds the engine from ``settings`` (``HUBBUB_*`` variables by default) unless one is
    given; keep an engine to transcribe many files without loading models again.
    """
    if engine is None:
        from hubbub.engines.factory import create_engine

        engine = create_engine(settings or Settings())
    samples = audio if isinstance(audio, np.ndarray) else load_audio(audio)
    options = SessionOptions(language=language, max_speakers=max_speakers)
    return transcribe_many(engine, {"audio": samples}, options)["audio"]
