"""Latency presets: the real streaming knobs of the multitalker Parakeet, by name.

The ASR's look-ahead is ``att_context_size = [70, R]``: each step consumes R + 1 encoder
frames of 80 ms. With 8x causal subsampling that is ``8 (R + 1)`` mel frames of 10 ms per
step, of which the first step gets 7 fewer (the encoder's first frame needs one mel frame,
each later one eight), and every later step also re-reads a 9-frame pre-encode cache
whose first 2 encoder frames are dropped. 70 is the attention cache in encoder frames.
"""

from __future__ import annotations

from dataclasses import dataclass

FRAME_S = 0.08  # one encoder frame (and one diarizer frame)
MEL_HOP = 160  # samples per 10 ms mel frame at 16 kHz
SUBSAMPLING = 8
LEFT_CONTEXT = 70


@dataclass(frozen=True)
class LatencyPreset:
    name: str
    right_context: int  # R in att_context_size [70, R]

    @property
    def att_context_size(self) -> list[int]:
        return [LEFT_CONTEXT, self.right_context]

    @property
    def frames(self) -> int:
        """Encoder (and diarizer) frames per step."""
        return self.right_context + 1

    @property
    def mel_frames(self) -> int:
        return SUBSAMPLING * self.frames

    @property
    def chunk_samples(self) -> int:
        return self.mel_frames * MEL_HOP

    @property
    def chunk_s(self) -> float:
        return self.frames * FRAME_S


PRESETS: dict[str, LatencyPreset] = {
    p.name: p
    for p in (
        LatencyPreset("80ms", 0),
        LatencyPreset("160ms", 1),
        LatencyPreset("560ms", 6),
        LatencyPreset("1120ms", 13),
    )
}


def preset(name: str) -> LatencyPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown latency preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None
