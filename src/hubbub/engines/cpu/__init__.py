"""The offline CPU engine: Silero VAD, d-vector diarization, Whisper via CTranslate2."""

from hubbub.engines.cpu.engine import CpuEngine, CpuEngineConfig

__all__ = ["CpuEngine", "CpuEngineConfig"]
