"""Speaker embeddings: the GE2E encoder of Resemblyzer, as ONNX, on onnxruntime alone.

``models/ge2e.onnx`` is the encoder whose weights ship in the ``resemblyzer`` wheel
(Apache-2.0, Corentin Jemine / Resemble AI: models/NOTICE), exported by
scripts/export-speaker-encoder.py; torch is not needed to run it. Its input is what
Resemblyzer feeds it: 40-band mel *power* frames (25 ms Hann windows every 10 ms, not
log-compressed) of audio raised to -30 dBFS when quieter. Features are computed here with
numpy as audio arrives; each window gives one L2-normalised 256-d vector. On 1 s windows
of real conversations it tells speakers apart far better than the d-vector it replaced
(README: EER and costs, bench/speaker_eer.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from faster_whisper.feature_extractor import FeatureExtractor

from hubbub.audio import SAMPLE_RATE

N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
DIM = 256
PARTIAL = 160  # frames: the 1.6 s the encoder was trained on
TARGET_DBFS = -30.0  # Resemblyzer's training level (quieter audio is raised to it)
MAX_GAIN_DB = 40.0
MODEL = Path(__file__).parent / "models" / "ge2e.onnx"


def frames_in(n_samples: int) -> int:
    """How many feature frames ``SpeakerEmbedder.features`` makes of ``n_samples``."""
    return 1 + (n_samples - N_FFT) // HOP if n_samples >= N_FFT else 0


class Features:
    """Mel power frames and each frame's mean square (for the level), grown as audio
    arrives; frame i covers samples [i * HOP, i * HOP + N_FFT)."""

    def __init__(self, mels: np.ndarray | None = None, power: np.ndarray | None = None) -> None:
        self.mels = mels if mels is not None else np.zeros((0, N_MELS), np.float32)
        self.power = power if power is not None else np.zeros(0, np.float32)

    def __len__(self) -> int:
        return len(self.mels)

    def extend(self, other: Features) -> None:
        self.mels = np.concatenate([self.mels, other.mels])
        self.power = np.concatenate([self.power, other.power])

    def truncate(self, n: int) -> None:
        self.mels, self.power = self.mels[:n], self.power[:n]

    def window(self, start: int, length: int) -> tuple[np.ndarray, float]:
        power = self.power[start : start + length]
        return self.mels[start : start + length], float(np.mean(power)) if len(power) else 0.0


class SpeakerEmbedder:
    def __init__(self, path: str | Path | None = None, threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4
        self._session = ort.InferenceSession(
            str(path or MODEL), providers=["CPUExecutionProvider"], sess_options=opts
        )
        self._mel = FeatureExtractor.get_mel_filters(SAMPLE_RATE, N_FFT, N_MELS).astype(np.float32)
        self._window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic, as librosa

    def features(self, audio: np.ndarray) -> Features:
        n = frames_in(len(audio))
        if n <= 0:
            return Features()
        idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
        frames = audio[idx]
        spec = np.abs(np.fft.rfft(frames * self._window, axis=1)) ** 2
        mels = (spec.astype(np.float32) @ self._mel.T).astype(np.float32)
        return Features(mels, np.mean(frames**2, axis=1).astype(np.float32))

    def embed(self, windows: list[tuple[np.ndarray, float]]) -> np.ndarray:
        """Windows (mel frames, mean square of their audio) -> (n, 256) unit vectors.

        Each window is raised to -30 dBFS if quieter. Windows of one length go through the
        encoder in one call (an LSTM reads padding as input, so lengths are not mixed).
        """
        out = np.zeros((len(windows), DIM), np.float32)
        by_length: dict[int, list[int]] = {}
        for i, (mels, _) in enumerate(windows):
            if len(mels):
                by_length.setdefault(len(mels), []).append(i)
        for rows in by_length.values():
            batch = np.stack([windows[i][0] * _gain(windows[i][1]) for i in rows])
            emb = self._session.run(None, {"mels": np.ascontiguousarray(batch, np.float32)})[0]
            out[rows] = emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12)
        return out

    def embed_audio(self, pieces: list[np.ndarray]) -> np.ndarray:
        """One voice per piece of audio -> (n, 256) unit vectors (zeros if too short).

        As Resemblyzer does for an utterance: a piece longer than the encoder's 1.6 s
        training length is embedded in 1.6 s windows that overlap by half, averaged (an
        LSTM run over many seconds drifts); a shorter piece is embedded whole.
        """
        windows, owner = [], []
        for k, audio in enumerate(pieces):
            f = self.features(audio)
            starts = window_starts(len(f), PARTIAL, PARTIAL // 2) or [0]
            if starts[-1] + PARTIAL < len(f):
                starts.append(len(f) - PARTIAL)  # the end is covered too
            for s in starts:
                windows.append(f.window(s, PARTIAL))
                owner.append(k)
        vectors = self.embed(windows)
        out = np.zeros((len(pieces), DIM), np.float32)
        np.add.at(out, np.asarray(owner, int), vectors)
        return out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-12)


def _gain(mean_square: float) -> float:
    """Power gain that raises a window's level to TARGET_DBFS, never lowers it (and by
    no more than MAX_GAIN_DB: near-silence is not blown up into speech)."""
    dbfs = 10 * np.log10(max(mean_square, 1e-12))
    return float(10 ** (min(MAX_GAIN_DB, max(0.0, TARGET_DBFS - dbfs)) / 10))


def window_starts(n_frames: int, length: int, stride: int, first: int = 0) -> list[int]:
    """Starts of the complete windows of ``length`` frames every ``stride`` from ``first``."""
    return list(range(first, n_frames - length + 1, stride))
