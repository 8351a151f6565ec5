"""One session's speakers: a first guess for each new segment, then second looks.

Live, a segment joins the speaker whose voice (centroid) it is most like, if it is as
like it as members usually are to their speaker: the threshold follows the spread of
similarities seen so far in this session (a prior until there are enough), not one
number for every recording. Too short a segment never founds a speaker. Every so often,
and at the end, all the session's segments are clustered again together
(hubbub.engines.cpu.clusters); the new groups keep the labels they share the most speech
with, and segments whose speaker changed are reported for relabelling. What is kept per
session is bounded: past ``max_items``, the oldest neighbouring segments of one speaker
are merged into one item.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from hubbub.engines.cpu.clusters import cluster_voices, unit


@dataclass
class Item:
    """Segments of one speaker, as one embedding for clustering."""

    segment_ids: list[str]
    embedding: np.ndarray  # unit
    duration: float
    label: int


@dataclass
class Spread:
    """Running mean and spread of member-to-speaker similarities, with a prior."""

    mean: float
    var: float = 0.01
    n: float = 3.0  # the prior counts as this many observations

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.var += (delta * (x - self.mean) - self.var) / self.n

    @property
    def std(self) -> float:
        return float(np.sqrt(max(self.var, 1e-6)))


@dataclass
class SpeakerTracker:
    max_speakers: int = 8
    threshold: float = 0.6  # prior join threshold; the session's own spread adapts it
    adapt: float = 0.15  # how far the session may move it either way
    min_new_s: float = 1.0
    cluster_cos: float = 0.7  # second looks: groups this alike on average are one speaker
    short_speaker_s: float = 2.0  # a "speaker" with less speech, and ...
    short_join_cos: float = 0.6  # ... this like the only other, is that other
    short_margin: float = 0.18  # ... or this much more like one other than the next
    refine_every_s: float = 20.0
    max_items: int = 400
    sums: dict[int, np.ndarray] = field(default_factory=dict)  # label -> weighted sum
    seconds: dict[int, float] = field(default_factory=dict)
    items: list[Item] = field(default_factory=list)
    spread: Spread | None = None
    next_label: int = 0
    since_refine_s: float = 0.0
    # The open utterance's early finals: their voices count until it ends (``settle``),
    # so that a speaker who takes over mid-utterance is told apart before it does.
    pending: dict[int, np.ndarray] = field(default_factory=dict)  # label -> weighted sum
    pending_from: int | None = None  # next_label before they founded any

    def __deepcopy__(self, memo: dict) -> SpeakerTracker:
        """A copy to roll a failed engine step back to, made every step: its containers
        are new, the arrays and id lists in them shared. Nothing here changes those in
        place (every update makes new ones), and a field-by-field deep copy of 400 kept
        items cost ~4 ms a step, a step otherwise ~1 ms."""
        new = copy.copy(self)
        new.sums, new.seconds, new.pending = dict(self.sums), dict(self.seconds), dict(self.pending)
        new.items = [Item(it.segment_ids, it.embedding, it.duration, it.label) for it in self.items]
        new.spread = copy.copy(self.spread)
        memo[id(self)] = new
        return new

    @property
    def n_speakers(self) -> int:
        return len(self.sums.keys() | self.pending.keys())

    @staticmethod
    def name(label: int) -> str:
        return f"S{label + 1}"

    def export(self) -> str:
        """The session's voices as JSON: what another replica needs to go on giving each
        speaker the same label (a few KB; the segments kept for second looks stay here)."""
        spread = None if self.spread is None else [self.spread.mean, self.spread.var, self.spread.n]
        voices = {
            str(label): {"s": round(self.seconds[label], 3), "v": np.round(unit(v), 5).tolist()}
            for label, v in self.sums.items()
        }
        return json.dumps({"next_label": self.next_label, "spread": spread, "voices": voices})

    def restore(self, state: str) -> None:
        """Go on from another replica's ``export``: each voice is one kept item, so second
        looks weigh it with the new segments (ValueError when ``state`` does not fit)."""
        data = json.loads(state)
        voices: dict[int, tuple[np.ndarray, float]] = {}
        for key, voice in data["voices"].items():
            vector = np.asarray(voice["v"], dtype=np.float32)
            seconds = float(voice["s"])
            if vector.ndim != 1 or not np.isfinite(vector).all() or not seconds > 0:
                raise ValueError(f"voice {key} is not a voice")
            voices[int(key)] = (unit(vector), seconds)
        if len(voices) > self.max_speakers:
            raise ValueError(f"{len(voices)} voices for at most {self.max_speakers} speakers")
        self.next_label = max(int(data["next_label"]), *(k + 1 for k in voices), 0)
        if data.get("spread"):
            self.spread = Spread(*map(float, data["spread"]))
        for label, (vector, seconds) in sorted(voices.items()):
            self._add(label, vector, seconds)
            self.items.append(Item([], vector, seconds, label))

    def join_threshold(self) -> float:
        if self.spread is None:
            self.spread = Spread(mean=self.threshold + 2 * 0.1)
        adaptive = self.spread.mean - 2 * self.spread.std
        return float(np.clip(adaptive, self.threshold - self.adapt, self.threshold + self.adapt))

    def similarities(self, embedding: np.ndarray) -> dict[int, float]:
        voices = dict(self.sums)
        for k, v in self.pending.items():
            voices[k] = voices.get(k, 0.0) + v
        return {k: float(unit(v) @ embedding) for k, v in voices.items()}

    def peek(self, embedding: np.ndarray) -> int:
        """The speaker this embedding would get, changing nothing."""
        sims = self.similarities(embedding)
        if not sims:
            return self.next_label
        best = max(sims, key=sims.__getitem__)
        if sims[best] >= self.join_threshold() or self.n_speakers >= self.max_speakers:
            return best
        return self.next_label

    def assign(self, embedding: np.ndarray, duration: float) -> int:
        """Give a new segment a speaker (its first guess) and learn from it."""
        sims = self.similarities(embedding)
        best = max(sims, key=sims.__getitem__) if sims else None
        full = self.n_speakers >= self.max_speakers
        can_found = not full and duration >= self.min_new_s
        if best is None or (sims[best] < self.join_threshold() and can_found):
            label = self.next_label
            self.next_label += 1
        else:
            label = best
            if duration >= self.min_new_s:
                self.join_threshold()  # the prior, before the first observation
                assert self.spread is not None
                self.spread.add(sims[best])
        self._add(label, embedding, duration)
        return label

    def guess(self, embedding: np.ndarray, duration: float, heard_s: float) -> int:
        """An early final's speaker (``heard_s`` of voice in ``embedding``, ``duration`` of
        it new): counted until its utterance ends and ``settle`` hands over to the
        utterance's phrases, so nothing is learnt twice."""
        sims = self.similarities(embedding)
        best = max(sims, key=sims.__getitem__) if sims else None
        can_found = self.n_speakers < self.max_speakers and heard_s >= self.min_new_s
        if best is None or (sims[best] < self.join_threshold() and can_found):
            if self.pending_from is None:
                self.pending_from = self.next_label
            label = self.next_label
            self.next_label += 1
        else:
            label = best
        self.pending[label] = self.pending.get(label, 0.0) + embedding * duration
        return label

    def settle(self) -> None:
        """The open utterance ended: its early finals' voices give way to its phrases'
        (labels they founded are free again unless a speaker kept them)."""
        if self.pending_from is not None:
            founded = range(self.pending_from, self.next_label)
            if not any(k in self.sums for k in founded):
                self.next_label = self.pending_from
        self.pending, self.pending_from = {}, None

    def _add(self, label: int, embedding: np.ndarray, duration: float) -> None:
        self.sums[label] = self.sums.get(label, np.zeros_like(embedding)) + embedding * duration
        self.seconds[label] = self.seconds.get(label, 0.0) + duration

    def remember(
        self, segment_ids: list[str], embedding: np.ndarray, duration: float, label: int
    ) -> None:
        """Keep a stretch of one speaker's speech (and the segments it holds) for the next
        second look."""
        self.items.append(Item(list(segment_ids), embedding, duration, label))
        self.since_refine_s += duration
        while len(self.items) > self.max_items:
            self._merge_oldest()

    def _merge_oldest(self) -> None:
        for i in range(len(self.items) - 1):
            a, b = self.items[i], self.items[i + 1]
            if a.label == b.label:
                total = a.duration + b.duration
                mean = unit(a.embedding * a.duration + b.embedding * b.duration)
                self.items[i : i + 2] = [Item(a.segment_ids + b.segment_ids, mean, total, a.label)]
                return
        del self.items[0]  # every neighbour differs: the oldest goes

    @property
    def refine_due(self) -> bool:
        return self.since_refine_s >= self.refine_every_s

    def refine(self) -> dict[str, int]:
        """Cluster every kept segment again; segment id -> new label, for those changed."""
        self.since_refine_s = 0.0
        if len(self.items) < 2:
            return {}
        emb = np.stack([it.embedding for it in self.items])
        durations = np.array([it.duration for it in self.items])
        clusters = cluster_voices(
            emb,
            durations,
            self.cluster_cos,
            self.max_speakers,
            self.min_new_s,
            self.short_speaker_s,
            self.short_join_cos,
            self.short_margin,
        )
        labels = self._map_to_labels(list(range(len(self.items))), clusters)
        changed: dict[str, int] = {}
        for it, label in zip(self.items, labels, strict=True):
            if label != it.label:
                it.label = label
                changed.update(dict.fromkeys(it.segment_ids, label))
        self.sums, self.seconds = {}, {}
        for it in self.items:
            self._add(it.label, it.embedding, it.duration)
        return changed

    def _map_to_labels(self, rows: list[int], clusters: np.ndarray) -> list[int]:
        """Each new cluster takes the old label it shares the most speech with (one each);
        the rest get labels never used before in this session."""
        old = sorted({self.items[i].label for i in rows})
        k = int(clusters.max()) + 1
        overlap = np.zeros((k, len(old)))
        for r, c in zip(rows, clusters, strict=True):
            overlap[c, old.index(self.items[r].label)] += self.items[r].duration
        mapping: dict[int, int] = {}
        for c, o in zip(*linear_sum_assignment(-overlap), strict=True):
            if overlap[c, o] > 0:
                mapping[int(c)] = old[o]
        for c in range(k):
            if c not in mapping:
                mapping[c] = self.next_label
                self.next_label += 1
        return [mapping[int(c)] for c in clusters]
