"""One typed settings object: environment variables (``HUBBUB_*``), CLI flags over them."""

from __future__ import annotations

from pathlib import Path
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
    # Transcriber service
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)
    data_dir: str = Field("./data", description="Where the SQLite transcript store lives")
    max_sessions: int = Field(0, ge=0, description="Live sessions admitted; 0 = engine's own")
    max_buffer_s: float = Field(30.0, gt=0, description="Audio a session may queue")
    max_frame_bytes: int = Field(1 << 20, gt=0)
    max_session_s: float = Field(4 * 3600.0, gt=0)
    idle_timeout_s: float = Field(60.0, gt=0)
    resume_grace_s: float = Field(60.0, ge=0, description="How long a dropped session waits")
    max_upload_mb: float = Field(200.0, gt=0)
    # web app (UI + relay to the transcriber)
    transcriber_url: str = Field(
        "http://127.0.0.1:8765", description="Base URL of the transcriber service"
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(8000, ge=0, le=65535)
    frontend_dir: Path | None = Field(
        None, description="A folder whose files replace the built-in UI (default: ./frontend)"
    )
