"""Pick and build an engine from settings (``auto``: NeMo on a CUDA GPU, else CPU)."""

from __future__ import annotations

import importlib.util

from hubbub.engines.base import Engine
from hubbub.settings import Settings


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_engine_name(settings: Settings) -> str:
    if settings.engine != "auto":
        return settings.engine
    has_nemo = importlib.util.find_spec("nemo") is not None
    return "nemo" if has_nemo and cuda_available() else "cpu"


def create_engine(settings: Settings) -> Engine:
    name = resolve_engine_name(settings)
    if name == "cpu":
        from hubbub.engines.cpu import CpuEngine, CpuEngineConfig

        return CpuEngine(
            CpuEngineConfig(
                model=settings.model,
                compute_type=settings.compute_type,
                threads=settings.threads,
                beam_size=settings.beam_size,
                partial_interval_s=settings.partial_interval_s,
                max_speakers=settings.max_speakers,
            )
        )
    raise ValueError(f"engine {name!r} is not available in this install")
