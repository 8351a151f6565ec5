"""Streaming voice activity detection with the Silero v6 ONNX model faster-whisper ships.

The model scores 32 ms frames (512 samples at 16 kHz) given 64 samples of left context
and an LSTM state carried from frame to frame; one ``VadStream`` per session holds that
state so any amount of new audio can be scored incrementally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

FRAME = 512
CONTEXT = 64
FRAME_S = FRAME / 16_000


def silero_model_path() -> str:
    import faster_whisper

    return os.path.join(os.path.dirname(faster_whisper.__file__), "assets", "silero_vad_v6.onnx")


@dataclass
class VadStream:
    """Per-session VAD state: LSTM state, left context and samples not yet a full frame."""

    h: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    c: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT, np.float32))
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


class SileroVad:
    def __init__(self, path: str | None = None) -> None:
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self._session = ort.InferenceSession(
            path or silero_model_path(), providers=["CPUExecutionProvider"], sess_options=opts
        )

    def __call__(self, stream: VadStream, samples: np.ndarray) -> np.ndarray:
        """Speech probability for every complete 32 ms frame in pending + ``samples``."""
        buf = np.concatenate([stream.pending, samples])
        n = len(buf) // FRAME
        stream.pending = buf[n * FRAME :]
        if n == 0:
            return np.zeros(0, np.float32)
        frames = buf[: n * FRAME].reshape(n, FRAME)
        # Each frame is scored with the last 64 samples of the frame before it.
        contexts = np.vstack([stream.context[None, :], frames[:-1, -CONTEXT:]])
        stream.context = frames[-1, -CONTEXT:].copy()
        batch = np.ascontiguousarray(np.concatenate([contexts, frames], axis=1), np.float32)
        probs, stream.h, stream.c = self._session.run(
            None, {"input": batch, "h": stream.h, "c": stream.c}
        )
        return probs.reshape(-1).astype(np.float32)
