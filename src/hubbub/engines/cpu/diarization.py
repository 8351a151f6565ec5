"""Speaker turns inside one utterance, from its sequence of window embeddings.

Binary segmentation: find the split that makes the two sides' mean embeddings least
alike; split when they are unlike enough, and recurse. Each side must hold a few
windows (about 1.6 s of audio), since shorter stretches give unreliable embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hubbub.engines.cpu.embedder import HOP, STRIDE_FRAMES, WINDOW_FRAMES

WINDOW_STEP_S = STRIDE_FRAMES * HOP / 16_000  # 0.4 s between windows
WINDOW_LEN_S = WINDOW_FRAMES * HOP / 16_000  # 0.8 s per window


@dataclass(frozen=True)
class Turn:
    first: int  # window index, inclusive
    last: int  # window index, exclusive
    embedding: np.ndarray

    def bounds_s(self, n_windows: int, duration_s: float) -> tuple[float, float]:
        """Time span within the utterance; the outer turns reach its edges."""
        start = 0.0 if self.first == 0 else self.first * WINDOW_STEP_S + WINDOW_LEN_S / 2
        end = duration_s if self.last >= n_windows else self.last * WINDOW_STEP_S + WINDOW_LEN_S / 2
        return start, min(end, duration_s)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


def split_turns(embs: np.ndarray, threshold: float = 0.5, min_windows: int = 3) -> list[Turn]:
    """Turns (window ranges with mean embeddings) of a (n, d) embedding sequence."""
    return _split(embs, 0, threshold, min_windows)


def _split(embs: np.ndarray, offset: int, threshold: float, min_windows: int) -> list[Turn]:
    whole = Turn(offset, offset + len(embs), _unit(embs.mean(axis=0)))
    if len(embs) < 2 * min_windows:
        return [whole]
    # Prefix sums make every candidate split O(d).
    csum = np.cumsum(embs, axis=0)
    total = csum[-1]
    best_k, best_sim = -1, 1.0
    for k in range(min_windows, len(embs) - min_windows + 1):
        sim = float(_unit(csum[k - 1]) @ _unit(total - csum[k - 1]))
        if sim < best_sim:
            best_k, best_sim = k, sim
    if best_sim >= threshold:
        return [whole]
    left = _split(embs[:best_k], offset, threshold, min_windows)
    return left + _split(embs[best_k:], offset + best_k, threshold, min_windows)
