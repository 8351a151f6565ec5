"""The offline CPU engine: Silero VAD, speaker embeddings, Whisper via CTranslate2.

Its config imports nothing heavy (settings use it); the engine loads onnxruntime and
CTranslate2, so it is imported only when asked for.
"""

from hubbub.engines.cpu.config import CpuEngineConfig

__all__ = ["CpuEngine", "CpuEngineConfig"]


def __getattr__(name: str):
    if name == "CpuEngine":
        from hubbub.engines.cpu.engine import CpuEngine

        return CpuEngine
    raise AttributeError(name)
