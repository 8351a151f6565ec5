"""Online speaker clustering: each new voice gets a label, a known voice keeps its own.

Centroids are running means of unit-length embeddings weighted by speech duration.
A segment joins the closest speaker when its cosine similarity clears ``threshold``;
otherwise it founds a new speaker while fewer than ``max_speakers`` exist. Short
segments give noisy embeddings, so they may join a speaker but never found one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class OnlineClustering:
    max_speakers: int = 8
    threshold: float = 0.6
    min_new_speaker_s: float = 1.0
    centroids: list[np.ndarray] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    @property
    def n_speakers(self) -> int:
        return len(self.centroids)

    @staticmethod
    def label(index: int) -> str:
        return f"S{index + 1}"

    def similarities(self, embedding: np.ndarray) -> np.ndarray:
        if not self.centroids:
            return np.zeros(0, np.float32)
        c = np.stack(self.centroids)
        return c @ embedding / (np.linalg.norm(c, axis=1) * np.linalg.norm(embedding) + 1e-12)

    def peek(self, embedding: np.ndarray) -> int:
        """The speaker this embedding would get, without updating anything."""
        sims = self.similarities(embedding)
        if len(sims) and (sims.max() >= self.threshold or self.n_speakers >= self.max_speakers):
            return int(sims.argmax())
        return self.n_speakers if self.n_speakers < self.max_speakers else int(sims.argmax())

    def assign(self, embedding: np.ndarray, duration_s: float) -> int:
        sims = self.similarities(embedding)
        best = int(sims.argmax()) if len(sims) else -1
        can_found = self.n_speakers < self.max_speakers and duration_s >= self.min_new_speaker_s
        if best < 0 or (sims[best] < self.threshold and can_found):
            self.centroids.append(embedding / (np.linalg.norm(embedding) + 1e-12))
            self.weights.append(duration_s)
            return self.n_speakers - 1
        w = self.weights[best]
        mean = (self.centroids[best] * w + embedding * duration_s) / (w + duration_s)
        self.centroids[best] = mean / (np.linalg.norm(mean) + 1e-12)
        self.weights[best] = w + duration_s
        return best
