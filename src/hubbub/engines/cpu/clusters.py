"""Voices grouped into speakers, with every segment of a session in view at once.

Agglomerative clustering with average linkage on cosine distance: the two groups whose
members are on average most alike merge first, until the closest two are less alike than
a speaker's own segments usually are. Every group stands for a speaker, except groups
with too little speech to trust: under ``min_speaker_s`` (a cough, a word) they join the
speaker they are most like; under ``short_speaker_s`` they do if they stand out as like
one of them: at least ``short_margin`` more alike to it than to any other (a fragment of
someone already there is like them and nobody else; a new voice heard briefly is about as
like everyone), or, with only one speaker to compare, at least ``short_join_cos`` alike.
An absolute cosine cannot tell the two apart on short speech: both lie around 0.7. The
count comes out of that, capped at ``max_speakers``.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage


def cluster_voices(
    emb: np.ndarray,
    durations: np.ndarray,
    join_cos: float,
    max_speakers: int,
    min_speaker_s: float,
    short_speaker_s: float = 0.0,
    short_join_cos: float = 1.0,
    short_margin: float = 0.0,
) -> np.ndarray:
    """A speaker index per (unit) embedding row, numbered in order of first appearance."""
    n = len(emb)
    if n <= 1:
        return np.zeros(n, int)
    tree = linkage(emb, method="average", metric="cosine")
    labels = fcluster(tree, t=1.0 - join_cos, criterion="distance") - 1
    if labels.max() + 1 > max_speakers:
        labels = fcluster(tree, t=max_speakers, criterion="maxclust") - 1
    labels = _absorb(emb, durations, labels, min_speaker_s, -1.0)
    labels = _absorb(emb, durations, labels, short_speaker_s, short_join_cos, short_margin)
    return _renumber(labels)


def _absorb(
    emb: np.ndarray,
    durations: np.ndarray,
    labels: np.ndarray,
    under_s: float,
    min_cos: float,
    margin: float = 0.0,
) -> np.ndarray:
    """Groups with less than ``under_s`` of speech join the most alike group with more, if
    at least ``margin`` more alike to it than to the next (or, with no next, at least
    ``min_cos`` alike)."""
    labels = labels.copy()
    totals = {k: float(durations[labels == k].sum()) for k in set(labels)}
    big = [k for k, t in totals.items() if t >= under_s]
    if not big:
        return labels if min_cos > -1.0 else np.zeros_like(labels)
    centres = {k: centre(emb[labels == k], durations[labels == k]) for k in big}
    for k, total in totals.items():
        if total < under_s:
            mine = centre(emb[labels == k], durations[labels == k])
            sims = sorted(((float(centres[b] @ mine), b) for b in big), reverse=True)
            best, label = sims[0]
            stands_out = best - sims[1][0] >= margin if len(sims) > 1 else best >= min_cos
            if stands_out:
                labels[labels == k] = label
    return labels


def unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


def centre(emb: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """The voice of several embeddings, each weighted by its speech."""
    return unit((emb * durations[:, None]).sum(axis=0))


def _renumber(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    return np.array([order.setdefault(int(x), len(order)) for x in labels])
