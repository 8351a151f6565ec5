"""Every knob of the NeMo engine, with the hub models as defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ASR_HUB = "nvidia/multitalker-parakeet-streaming-0.6b-v1"
DIAR_HUB = "nvidia/diar_streaming_sortformer_4spk-v2.1"


@dataclass(frozen=True)
class NemoEngineConfig:
    diar_model: str = DIAR_HUB  # hub name or a local .nemo file
    asr_model: str = ASR_HUB
    latency: str = "1120ms"  # presets.PRESETS
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 autocast on CUDA; CPU runs fp32
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    capacity: int = 0  # live sessions admitted; 0 = measure at warmup
    max_speakers: int = 4  # the diarizer's ceiling
    # Cache gating: a speaker's ASR instance runs only while the diarizer has heard them
    # (probability > activity) within the last ``gating_chunks`` chunks.
    activity: float = 0.5
    gating_chunks: int = 2
    binary_targets: bool = False  # soft diarizer probabilities as speaker targets
    # Streaming Sortformer memory (80 ms frames): speaker cache, FIFO, cache refresh.
    spkcache_len: int = 188
    fifo_len: int = 188
    spkcache_update_period: int = 144
    # When a speaker's words become final.
    pause_s: float = 0.8  # no new word for this long
    max_segment_s: float = 20.0  # bounds a partial tail that never pauses
    max_asr_batch: int = 512  # ASR rows per forward pass (session x active speaker)
