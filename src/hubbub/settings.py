"""One typed settings object: environment variables (``HUBBUB_*``), CLI flags over them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineName = Literal["auto", "cpu", "nemo"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUBBUB_", extra="ignore")

    engine: EngineName = "auto"
    # CPU engine
    model: str = Field("tiny.en", description="Whisper model: a CT2 dir, or a faster-whisper name")
    compute_type: str = "int8"
    threads: int = Field(2, ge=1, description="CPU threads for Whisper")
    beam_size: int = Field(5, ge=1)
    partial_interval_s: float = Field(1.0, gt=0)
    max_speakers: int = Field(8, ge=1, le=32)
    language: str | None = None
