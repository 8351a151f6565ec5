"""Audio at the edge: streamed PCM in, 16 kHz mono float32 out.

Everything past this module sees one format: ``np.float32`` samples in [-1, 1] at
``SAMPLE_RATE``. Streams are ``pcm_s16le`` bytes in frames of any size; files are
decoded block by block in hubbub.decode.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import butter, sosfilt

SAMPLE_RATE = 16_000
MIN_STREAM_RATE = 8_000
MAX_STREAM_RATE = 48_000


class AudioError(ValueError):
    """Audio that cannot be used, with a message fit to show a user."""


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average channels: (frames, channels) -> (frames,)."""
    if samples.ndim == 1:
        return samples
    return samples.mean(axis=1, dtype=np.float32)


def write_wav(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    sf.write(str(path), samples, rate, subtype="PCM_16")


class PcmDecoder:
    """Streamed ``pcm_s16le`` bytes -> 16 kHz mono float32, frame by frame.

    Frames may have any byte count: a trailing odd byte (or partial multi-channel
    sample) is carried into the next frame rather than dropped. Rates other than
    16 kHz are resampled by a streaming resampler that keeps its filter state.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> None:
        if not MIN_STREAM_RATE <= sample_rate <= MAX_STREAM_RATE:
            raise AudioError(
                f"sample_rate {sample_rate} outside {MIN_STREAM_RATE}-{MAX_STREAM_RATE} Hz"
            )
        if channels not in (1, 2):
            raise AudioError(f"channels must be 1 or 2, got {channels}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames = 0  # input sample frames decoded so far
        self._frame_bytes = 2 * channels
        self._carry = b""
        self._resampler = (
            None
            if sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32")
        )

    @property
    def pending_bytes(self) -> int:
        """Bytes held back until the rest of their sample arrives."""
        return len(self._carry)

    @property
    def decoded_s(self) -> float:
        """Seconds of input decoded so far (a sample still incomplete not counted)."""
        return self.frames / self.sample_rate

    def decode(self, data: bytes) -> np.ndarray:
        buf = self._carry + data
        usable = len(buf) - len(buf) % self._frame_bytes
        self._carry = buf[usable:]
        self.frames += usable // self._frame_bytes
        samples = np.frombuffer(buf[:usable], dtype="<i2").astype(np.float32) / 32768.0
        samples = to_mono(samples.reshape(-1, self.channels))
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return samples

    def flush(self) -> np.ndarray:
        """End of stream: drain the resampler (an incomplete last sample cannot be decoded)."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)


@cache
def _highpass_sos(cutoff_hz: float, rate: int) -> np.ndarray:
    return butter(4, cutoff_hz, "highpass", fs=rate, output="sos")


class HighPass:
    """A streaming high-pass filter (4th-order Butterworth) that keeps its state.

    Recordings can carry a DC offset or a slow drift far below speech (a few Hz) that
    dwarfs the speech itself; Silero VAD then scores real speech as silence (a 25 s turn
    vanished that way: ``lost_turn.16k.wav``). Speech has nothing below ~70 Hz to lose.
    """

    def __init__(self, cutoff_hz: float = 50.0, rate: int = SAMPLE_RATE) -> None:
        self.cutoff_hz = cutoff_hz
        self._sos = _highpass_sos(cutoff_hz or 1.0, rate)
        self._state = np.zeros((self._sos.shape[0], 2))

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if len(samples) == 0 or not self.cutoff_hz:
            return samples
        out, self._state = sosfilt(self._sos, samples, zi=self._state)
        return out.astype(np.float32)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float32 [-1, 1] -> ``pcm_s16le`` bytes (for clients and tests)."""
    clipped = np.clip(samples, -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()
