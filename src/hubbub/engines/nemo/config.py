"""Every knob of the NeMo engine, with the hub models as defaults. Reached from settings
as ``HUBBUB_NEMO__<FIELD>``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ASR_HUB = "nvidia/multitalker-parakeet-streaming-0.6b-v1"
DIAR_HUB = "nvidia/diar_streaming_sortformer_4spk-v2.1"


class NemoEngineConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    diar_model: str = Field(DIAR_HUB, description="Streaming Sortformer: hub name or .nemo file")
    asr_model: str = Field(ASR_HUB, description="multitalker Parakeet: hub name or .nemo file")
    latency: Literal["80ms", "160ms", "560ms", "1120ms"] = Field(
        "1120ms", description="ASR chunk (look-ahead) per step"
    )
    precision: Literal["fp32", "bf16"] = Field(
        "bf16", description="bf16 autocast on CUDA; the CPU runs fp32"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    capacity: int = Field(0, ge=0, description="live sessions admitted; 0 = measured at warmup")
    max_speakers: int = Field(4, ge=1, le=4, description="the diarizer's ceiling")
    # Cache gating: a speaker's ASR instance runs only while the diarizer has heard them
    # (probability > activity) within the last ``gating_chunks`` chunks.
    activity: float = Field(0.5, ge=0, le=1, description="diarizer probability of speech")
    gating_chunks: int = Field(2, ge=1, description="chunks a quiet speaker's ASR keeps running")
    binary_targets: bool = Field(False, description="0/1 speaker targets, not probabilities")
    # Streaming Sortformer memory (80 ms frames): speaker cache, FIFO, cache refresh.
    spkcache_len: int = Field(188, ge=1)
    fifo_len: int = Field(188, ge=1)
    spkcache_update_period: int = Field(144, ge=1)
    # When a speaker's words become final.
    commit: Literal["word", "sentence"] = Field(
        "word",
        description="'word': each word as soon as the next one starts (tokens are never "
        "revised); 'sentence': at sentence ends, pauses and max_segment_s",
    )
    word_gap_s: float = Field(
        0.4, gt=0, description="with commit='word': no token for this long ends the last word"
    )
    pause_s: float = Field(0.8, gt=0, description="no new word for this long")
    max_segment_s: float = Field(20.0, gt=0, description="bounds a tail that never pauses")
    max_asr_batch: int = Field(512, ge=1, description="ASR rows per forward pass")
