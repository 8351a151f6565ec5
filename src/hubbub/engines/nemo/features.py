"""Live mel features: a rolling PCM window per session, one batched mel call per step.

Each step, a session's newest chunk is appended to a fixed window of recent audio and the
model's own preprocessor turns the window into mel frames. Only frames whose STFT window
lies wholly inside real audio are used, so every frame equals the one an offline pass
over the whole stream would give: the window starts in silence (zeros), exactly what the
preprocessor's constant padding gives at the start of a file.

Frame geometry per step (C = mel frames per chunk, P = pre-encode cache, L = 7):
the first step takes frames [0, C - L); step n > 1 takes the P frames before its chunk
plus C new ones, ending at frame nC - L. The encoder lags L frames behind the audio,
which leaves room for the STFT's half window of look-ahead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hubbub.engines.nemo.presets import MEL_HOP, SUBSAMPLING, LatencyPreset

LAG = SUBSAMPLING - 1  # mel frames the encoder's frames trail the audio by
EDGE = 2  # frames kept clear of the window's left edge (STFT half window + preemphasis)


@dataclass(frozen=True)
class ChunkGeometry:
    """Where one step's mel frames come from, for a preset and an encoder."""

    chunk_frames: int  # C
    cache_frames: int  # P: mel frames re-read before each later chunk
    drop_frames: int  # encoder frames of that cache to drop after pre-encoding
    out_frames: int  # encoder frames per step

    @classmethod
    def of(cls, preset: LatencyPreset, streaming_cfg) -> ChunkGeometry:
        chunk = streaming_cfg.chunk_size
        cache = streaming_cfg.pre_encode_cache_size
        later = chunk[1] if isinstance(chunk, list) else chunk
        if later != preset.mel_frames:
            raise ValueError(f"encoder chunk {chunk} does not match preset {preset.name}")
        return cls(
            chunk_frames=later,
            cache_frames=cache[1] if isinstance(cache, list) else cache,
            drop_frames=streaming_cfg.drop_extra_pre_encoded,
            out_frames=streaming_cfg.valid_out_len,
        )

    @property
    def first_frames(self) -> int:
        return self.chunk_frames - LAG

    @property
    def window_samples(self) -> int:
        return MEL_HOP * (self.chunk_frames + self.cache_frames + LAG + EDGE)

    @property
    def chunk_samples(self) -> int:
        return MEL_HOP * self.chunk_frames


class PcmWindow:
    """The last ``size`` samples of one session, zeros before the stream began."""

    def __init__(self, size: int) -> None:
        self.samples = np.zeros(size, np.float32)

    def push(self, chunk: np.ndarray) -> None:
        n = len(chunk)
        if n >= len(self.samples):
            self.samples[:] = chunk[-len(self.samples) :]
            return
        self.samples[:-n] = self.samples[n:]
        self.samples[-n:] = chunk


class MelFrontend:
    """Batched mel + each model's pre-encoder (subsampling) for one step of many sessions."""

    def __init__(self, preprocessor, geometry: ChunkGeometry, device: torch.device) -> None:
        self.preprocessor = preprocessor
        self.geometry = geometry
        self.device = device

    def mel(self, windows: list[np.ndarray], steps: list[int]) -> torch.Tensor:
        """(B, W) windows -> (B, P + C, mels): the frames of this step's encoder input.

        ``steps`` counts each row's steps so far, this one included. A first step's
        frames are the last C - L of its row (see ``pre_encode``); cache frames from
        before the stream began are zeros, as NeMo pads them.
        """
        g = self.geometry
        signal = torch.from_numpy(np.stack(windows)).to(self.device)
        lengths = torch.full((len(windows),), signal.shape[1], device=self.device)
        feats, _ = self.preprocessor(input_signal=signal, length=lengths)
        end = g.window_samples // MEL_HOP - LAG
        mel = feats[:, :, end - g.cache_frames - g.chunk_frames : end].transpose(1, 2)
        for row, n in enumerate(steps):
            before = g.cache_frames + g.chunk_frames - (n * g.chunk_frames - LAG)
            if n > 1 and before > 0:
                mel[row, :before] = 0.0
        return mel

    def pre_encode(self, encoder, mel: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """Subsample each row's frames with ``encoder``'s pre-encoder -> (B, F, d).

        ``first`` marks sessions at their first step: they have no cache frames (and no
        drop), exactly as NeMo streams the start of a file.
        """
        g = self.geometry
        out = torch.empty(0)
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        for is_first in (True, False):
            idx = torch.nonzero(first == is_first).flatten()
            if len(idx) == 0:
                continue
            x = mel[idx.to(mel.device)]
            if is_first:
                x = x[:, -g.first_frames :]
            lengths = torch.full((len(idx),), x.shape[1], device=x.device, dtype=torch.long)
            emb, _ = encoder.pre_encode(x=x, lengths=lengths)
            if not is_first:
                emb = emb[:, g.drop_frames :]
            parts.append((idx, emb[:, : g.out_frames]))
        for idx, emb in parts:
            if out.numel() == 0:
                out = emb.new_empty((mel.shape[0], *emb.shape[1:]))
            out[idx.to(out.device)] = emb
        return out
