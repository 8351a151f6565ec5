"""Per-session state: audio window, diarizer memory, one ASR slot per speaker heard.

Every tensor here has a fixed shape (set by the models and the preset), so a session
costs the same after an hour as after a minute: the diarizer keeps its speaker cache and
FIFO (fixed lengths), each speaker slot keeps the encoder's attention and convolution
caches and the decoder's LSTM state, and the word tails are bounded by ``words.py``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from hubbub.audio import SAMPLE_RATE
from hubbub.engines.base import EngineSession
from hubbub.engines.nemo.features import PcmWindow
from hubbub.engines.nemo.words import SpeakerWords


@dataclass
class DiarMemory:
    """One session's slice of NeMo's ``StreamingSortformerState`` (async layout)."""

    spkcache: torch.Tensor  # (spkcache_len, d)
    spkcache_preds: torch.Tensor  # (spkcache_len, n_spk)
    spkcache_length: torch.Tensor  # () long
    fifo: torch.Tensor  # (fifo_len, d)
    fifo_length: torch.Tensor  # () long
    mean_sil_emb: torch.Tensor  # (d,)
    n_sil_frames: torch.Tensor  # () long
    recent: torch.Tensor  # (gating frames, n_spk): latest probabilities, for cache gating


@dataclass
class SpeakerSlot:
    """The ASR instance of one speaker: caches and decoder state between steps."""

    index: int  # the diarizer's speaker index (arrival order): label S{index + 1}
    cache_channel: torch.Tensor  # (layers, 70, d): attention cache
    cache_time: torch.Tensor  # (layers, d, kernel - 1): convolution cache
    cache_len: torch.Tensor  # () long
    dec_state: Any = None  # the decoder's state item (LSTM state, last label)
    frames: int = 0  # encoder frames this instance has decoded (its decoder's clock)
    words: SpeakerWords | None = None


@dataclass
class NemoSession(EngineSession):
    window: PcmWindow | None = None
    diar: DiarMemory | None = None
    slots: dict[int, SpeakerSlot] = field(default_factory=dict)
    steps: int = 0  # model steps taken (a flush may take two)
    pad_samples: int = 0  # silence added at flushes: model clock minus stream clock
    closed: bool = False

    @property
    def model_samples(self) -> int:
        return self.samples_in + self.pad_samples

    def stream_time(self, model_s: float) -> float:
        """A model-clock time in seconds on the stream's clock (padding removed)."""
        return min(max(0.0, model_s - self.pad_samples / SAMPLE_RATE), self.audio_s)

    def tensors(self) -> dict[str, tuple[int, ...]]:
        """Shapes of every tensor the session holds (for tests and diagnostics)."""
        out: dict[str, tuple[int, ...]] = {}
        if self.window is not None:
            out["window"] = tuple(self.window.samples.shape)
        if self.diar is not None:
            for name, value in vars(self.diar).items():
                out[f"diar.{name}"] = tuple(value.shape)
        for k, slot in self.slots.items():
            out[f"slot{k}.cache_channel"] = tuple(slot.cache_channel.shape)
            out[f"slot{k}.cache_time"] = tuple(slot.cache_time.shape)
        return out

    def snapshot(self) -> dict[str, Any]:
        """What a step changes, cheaply: the engine replaces tensors, never edits them."""
        return {
            "counters": (self.samples_in, self.pad_samples, self.steps, self.segments_out),
            "window": None if self.window is None else self.window.samples.copy(),
            "diar": copy.copy(self.diar),
            "slots": {
                k: (copy.copy(slot), slot.words.state() if slot.words else None)
                for k, slot in self.slots.items()
            },
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Undo a failed step, so that the scheduler's retry starts from the same place."""
        self.samples_in, self.pad_samples, self.steps, self.segments_out = snap["counters"]
        if self.window is not None and snap["window"] is not None:
            self.window.samples[:] = snap["window"]
        self.diar = snap["diar"]
        self.slots = {}
        for k, (slot, words) in snap["slots"].items():
            if slot.words is not None and words is not None:
                slot.words.restore(words)
            self.slots[k] = slot

    def release(self) -> None:
        """Drop every tensor (close_session): the session object may outlive its state."""
        self.window = None
        self.diar = None
        self.slots.clear()
        self.closed = True
