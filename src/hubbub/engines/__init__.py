"""Engines: audio of many sessions in, speaker-attributed segments out."""

from hubbub.engines.base import ChunkInput, Engine, EngineSession, EngineUpdate, SessionOptions

__all__ = ["ChunkInput", "Engine", "EngineSession", "EngineUpdate", "SessionOptions"]
