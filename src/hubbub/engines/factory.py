"""Pick and build an engine from settings (``auto``: NeMo on a CUDA GPU, else CPU).

The factory only chooses: each engine takes its own config from the settings as it is.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from hubbub.engines.base import Engine
from hubbub.settings import Settings

# Where a Linux machine shows an NVIDIA GPU (/dev/dxg: WSL2's). Without one there is no
# CUDA to find, and importing torch to ask would cost ~180 MB of memory for nothing.
GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    if sys.platform.startswith("linux") and not any(map(os.path.exists, GPU_NODES)):
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
        from hubbub.engines.cpu import CpuEngine

        return CpuEngine(settings.cpu)
    if name == "nemo":
        if importlib.util.find_spec("nemo") is None:
            raise ValueError("engine 'nemo' needs the nemo extra: pip install 'hubbub[nemo]'")
        from hubbub.engines.nemo import NemoEngine

        return NemoEngine(settings.nemo)
    raise ValueError(f"engine {name!r} is not available in this install")
