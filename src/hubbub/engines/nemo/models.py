"""Load the two NeMo models once and set their real streaming knobs.

Model names are Hugging Face hub names (``from_pretrained``, which first looks in the local
HF cache) or paths to ``.nemo`` files (``restore_from``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from hubbub.engines.nemo.config import NemoEngineConfig
from hubbub.engines.nemo.presets import LatencyPreset

log = logging.getLogger(__name__)


@dataclass
class Models:
    asr: torch.nn.Module  # EncDecMultiTalkerRNNTBPEModel
    diar: torch.nn.Module  # SortformerEncLabelModel
    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 autocast, or None for fp32


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _is_local(name: str) -> bool:
    return name.endswith(".nemo") or Path(name).expanduser().is_file()


def _load(cls, name: str, device: torch.device):
    if _is_local(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        return cls.restore_from(restore_path=str(path), map_location=device)
    return cls.from_pretrained(name, map_location=device)


def load_models(config: NemoEngineConfig, preset: LatencyPreset) -> Models:
    """Load diarizer and multitalker ASR, put both in eval mode and configure streaming."""
    from nemo.collections.asr.models import ASRModel, SortformerEncLabelModel

    device = pick_device(config.device)
    diar = _load(SortformerEncLabelModel, config.diar_model, device).eval()
    asr = _load(ASRModel, config.asr_model, device).eval()
    if not hasattr(asr, "set_speaker_targets"):
        raise ValueError(f"{config.asr_model} is not a multitalker (speaker-kernel) ASR model")
    configure_streaming(asr, diar, config, preset)
    use_bf16 = config.precision == "bf16" and device.type == "cuda"
    if config.precision == "bf16" and not use_bf16:
        log.info("bf16 autocast needs a CUDA device; running fp32 on %s", device)
    return Models(asr, diar, device, torch.bfloat16 if use_bf16 else None)


def configure_streaming(asr, diar, config: NemoEngineConfig, preset: LatencyPreset) -> None:
    asr.encoder.set_default_att_context_size(preset.att_context_size)
    # The preprocessor must be deterministic: no dither, no padding past the audio.
    asr.preprocessor.featurizer.dither = 0.0
    asr.preprocessor.featurizer.pad_to = 0
    diar.streaming_mode = True
    diar.async_streaming = True  # per-session cache/FIFO fill levels within one batch
    mods = diar.sortformer_modules
    mods.spkcache_len = config.spkcache_len
    mods.fifo_len = config.fifo_len
    mods.chunk_len = preset.frames
    mods.spkcache_update_period = config.spkcache_update_period
    mods.chunk_left_context = 0
    mods.chunk_right_context = 0
    mods.log = False
    mods._check_streaming_parameters()
    asr_mels = asr.cfg.preprocessor.features
    diar_mels = diar.cfg.encoder.feat_in
    if asr_mels != diar_mels:
        raise ValueError(f"diarizer wants {diar_mels} mels but the ASR makes {asr_mels}")
