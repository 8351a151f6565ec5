"""Where the speaker may change inside an utterance: phrases between pauses.

VAD joins a quick exchange ("Hello." "Oh, hello.") into one utterance, but Whisper's words
and their times show where it could break: after a sentence, or where a gap opens between
words. An utterance is cut there into phrases, each embedded and given a speaker on its
own; consecutive phrases of one speaker become one segment again. A long phrase without a
pause is also cut where the voice changes, found from sliding windows (binary
segmentation: the split whose two sides' mean embeddings are least alike, if unlike enough).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hubbub.transcript import Word

SENTENCE_END = (".", "?", "!")


@dataclass
class Phrase:
    words: list[Word]

    @property
    def start(self) -> float:
        return self.words[0].start

    @property
    def end(self) -> float:
        return self.words[-1].end

    @property
    def duration(self) -> float:
        return self.end - self.start


def phrases(words: list[Word], gap_s: float) -> list[Phrase]:
    """Words cut after a sentence end, or where the next word starts ``gap_s`` later."""
    out: list[Phrase] = []
    for w in words:
        if out:
            last = out[-1].words[-1]
            ends = last.text.strip().endswith(SENTENCE_END)
            if not ends and w.start - last.end < gap_s:
                out[-1].words.append(w)
                continue
        out.append(Phrase([w]))
    return out


def merge_short(items: list[Phrase], min_s: float) -> list[Phrase]:
    """A phrase shorter than ``min_s`` joins the shorter of its neighbours (a word alone is
    too little to tell a voice by), unless the utterance holds nothing else."""
    items = list(items)
    while len(items) > 1:
        short = [i for i, p in enumerate(items) if p.duration < min_s]
        if not short:
            break
        i = min(short, key=lambda k: items[k].duration)
        if i == 0:
            j = 1
        elif i == len(items) - 1:
            j = i - 1
        else:
            j = i - 1 if items[i - 1].duration <= items[i + 1].duration else i + 1
        a, b = sorted((i, j))
        items[a : b + 1] = [Phrase(items[a].words + items[b].words)]
    return items


def change_point(embs: np.ndarray, threshold: float, min_windows: int = 2) -> int | None:
    """The window index where a sequence of window embeddings splits best between two
    voices, if the sides' mean embeddings are less alike than ``threshold``."""
    n = len(embs)
    if n < 2 * min_windows:
        return None
    csum = np.cumsum(embs, axis=0)
    total = csum[-1]
    best_k, best_sim = None, threshold
    for k in range(min_windows, n - min_windows + 1):
        left, right = csum[k - 1], total - csum[k - 1]
        sim = float(left @ right / (np.linalg.norm(left) * np.linalg.norm(right) + 1e-12))
        if sim < best_sim:
            best_k, best_sim = k, sim
    return best_k
