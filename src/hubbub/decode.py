"""Audio files decoded block by block, in memory that does not grow with their length.

A file is opened, and its rate, channels and duration are read from the container
before anything is decoded, so an upload that claims hours of 96 kHz multichannel audio
is refused at once. Then it is decoded, mixed to mono and resampled to 16 kHz a block at
a time (libsndfile for WAV/FLAC/OGG, FFmpeg through PyAV for MP3/M4A/anything else); a
file whose header lied is stopped as soon as its decoded audio passes the limit.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from hubbub.audio import SAMPLE_RATE, AudioError, to_mono

BLOCK_BYTES = 4 << 20  # decoded samples held at once, whatever the channels and rate
MAX_CHANNELS = 32
MAX_RATE = 384_000


class AudioTooLong(AudioError):
    """More audio than the caller allows."""


class AudioFile:
    """An opened audio file; ``blocks()`` yields 16 kHz mono float32 pieces."""

    def __init__(self, source: str | Path | BinaryIO, name: str | None = None) -> None:
        self.name = name or str(source)
        self._sf: sf.SoundFile | None = None
        self._av = None
        if isinstance(source, str | Path):
            _check_path(Path(source))
        try:
            self._sf = sf.SoundFile(source if not isinstance(source, Path) else str(source))
            self.rate, self.channels = self._sf.samplerate, self._sf.channels
            frames = self._sf.frames
            self.duration_s: float | None = frames / self.rate if 0 < frames < 2**62 else None
        except (sf.LibsndfileError, RuntimeError, TypeError):
            self._sf = None
            if not isinstance(source, str | Path):
                source.seek(0)
            self._open_av(source)
        if not (0 < self.channels <= MAX_CHANNELS) or not (0 < self.rate <= MAX_RATE):
            self.close()
            raise AudioError(f"{self.name}: unsupported audio ({self.channels} ch, {self.rate} Hz)")

    def _open_av(self, source: str | Path | BinaryIO) -> None:
        import av

        try:
            self._av = av.open(str(source) if isinstance(source, str | Path) else source)
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise AudioError(
                f"{self.name}: not a readable audio file ({exc.__class__.__name__})"
            ) from exc
        if not self._av.streams.audio:
            self.close()
            raise AudioError(f"{self.name}: contains no audio stream")
        stream = self._av.streams.audio[0]
        ctx = stream.codec_context
        self.rate, self.channels = ctx.sample_rate or 0, ctx.channels or 0
        if stream.duration is not None and stream.time_base is not None:
            self.duration_s = float(stream.duration * stream.time_base)
        elif self._av.duration is not None:
            self.duration_s = self._av.duration / 1_000_000
        else:
            self.duration_s = None

    def close(self) -> None:
        if self._sf is not None:
            self._sf.close()
        if self._av is not None:
            self._av.close()

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def blocks(self, max_s: float | None = None) -> Iterator[np.ndarray]:
        """16 kHz mono float32 blocks; AudioError once more than ``max_s`` is decoded."""
        pieces = self._sf_blocks() if self._sf is not None else self._av_blocks()
        produced = 0
        limit = None if max_s is None else int(max_s * SAMPLE_RATE)
        for piece in pieces:
            produced += len(piece)
            if limit is not None and produced > limit:
                raise AudioTooLong(f"{self.name}: longer than {max_s:.0f} s")
            if len(piece):
                yield piece

    def _sf_blocks(self) -> Iterator[np.ndarray]:
        assert self._sf is not None
        frames = max(1024, BLOCK_BYTES // (4 * self.channels))
        resampler = _resampler(self.rate)
        try:
            for block in self._sf.blocks(frames, dtype="float32", always_2d=True):
                yield _to_16k(resampler, to_mono(block))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"{self.name}: the audio data is damaged ({exc})") from exc
        if resampler is not None:
            yield resampler.resample_chunk(np.zeros(0, np.float32), last=True)

    def _av_blocks(self) -> Iterator[np.ndarray]:
        import av

        assert self._av is not None
        stream = self._av.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in self._av.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1).astype(np.float32)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1).astype(np.float32)
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise AudioError(f"{self.name}: the audio data is damaged ({exc})") from exc


def _check_path(p: Path) -> None:
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    if p.stat().st_size == 0:
        raise AudioError(f"{p}: file is empty")


def _resampler(rate: int) -> soxr.ResampleStream | None:
    if rate == SAMPLE_RATE:
        return None
    return soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")


def _to_16k(resampler: soxr.ResampleStream | None, mono: np.ndarray) -> np.ndarray:
    mono = np.ascontiguousarray(mono, np.float32)
    return mono if resampler is None else resampler.resample_chunk(mono)


def load_audio(source: str | Path | BinaryIO | bytes, max_s: float | None = None) -> np.ndarray:
    """A whole file as 16 kHz mono float32 (AudioError with a one-line reason)."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    with AudioFile(source) as f:
        if max_s is not None and f.duration_s is not None and f.duration_s > max_s:
            raise AudioTooLong(f"{f.name}: longer than {max_s:.0f} s")
        pieces = list(f.blocks(max_s))
    samples = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if samples.size == 0:
        raise AudioError(f"{f.name}: no audio (0 samples)")
    return samples
