"""One typed settings object: environment variables (``HUBBUB_*``), CLI flags over them.

Engine knobs are nested: ``HUBBUB_CPU__MODEL=base``, ``HUBBUB_CPU__UTTERANCES__MIN_SILENCE_S=0.8``,
``HUBBUB_NEMO__LATENCY=160ms``. Each bound is declared once, on its field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from hubbub.engines.cpu.config import CpuEngineConfig
from hubbub.engines.nemo.config import NemoEngineConfig
from hubbub.protocol import Language

EngineName = Literal["auto", "cpu", "nemo"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HUBBUB_", env_nested_delimiter="__", extra="ignore"
    )

    engine: EngineName = "auto"
    language: Language | None = Field(
        None, description="Sessions' language when they do not say (None: the model's own)"
    )
    cpu: CpuEngineConfig = Field(default_factory=CpuEngineConfig)
    nemo: NemoEngineConfig = Field(default_factory=NemoEngineConfig)
    # Transcriber service
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)
    data_dir: str = Field("./data", description="Where the SQLite transcript store lives")
    database_url: str | None = Field(
        None,
        max_length=2048,
        description="the transcript store's database instead of SQLite in data_dir, e.g. "
        "postgresql://user:password@host/db (replicas that share one store)",
    )
    replica_id: str | None = Field(
        None,
        max_length=200,
        description="This transcriber's name among replicas sharing a store (default: "
        "host:port, so a restarted replica takes its own sessions back at once)",
    )
    lease_s: float = Field(
        3.0,
        ge=0.5,
        le=60.0,
        description="A live session's lease on its replica: renewed while it runs; another "
        "replica takes the session over when it lapses (a replica that died)",
    )
    max_sessions: int = Field(0, ge=0, description="Live sessions admitted; 0 = engine's own")
    max_buffer_s: float = Field(30.0, gt=0, description="Audio a session may queue")
    max_frame_bytes: int = Field(1 << 20, gt=0)
    max_session_s: float = Field(4 * 3600.0, gt=0)
    idle_timeout_s: float = Field(60.0, gt=0)
    api_key: str | None = Field(
        None, repr=False, description="A key clients must present (tenant 'default')"
    )
    api_keys: dict[str, str] = Field(
        default_factory=dict, repr=False, description="More keys, by tenant: {name: key}"
    )
    api_keys_file: Path | None = Field(
        None, description="A file of 'tenant key [admin]' lines, read at start"
    )
    admin_tenants: list[str] = Field(
        default_factory=list, description="Tenants that see every tenant's sessions"
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed on WebSockets besides our own"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names served besides localhost, IP addresses and this machine's "
        "own names ('*.example.com' patterns; '*' for any)",
    )
    max_connections_per_client: int = Field(8, ge=1)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of proxies (the web app, a load balancer) whose "
        "X-Forwarded-For names the client",
    )
    resume_grace_s: float = Field(60.0, ge=0, description="How long a dropped session waits")
    max_upload_mb: float = Field(200.0, gt=0)
    # web app (UI + relay to the transcriber)
    transcriber_url: str = Field(
        "http://127.0.0.1:8765", description="Base URL of the transcriber service"
    )
    open_within_s: float = Field(
        5.0,
        ge=0,
        le=8.0,  # the page takes 10 s of silence for a dead connection
        description="How long the web app's relay tries again a stream the transcriber "
        "refused for now (full, restarting): behind a load balancer, another replica may "
        "have room",
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(8000, ge=0, le=65535)
    frontend_dir: Path | None = Field(
        None, description="A folder whose files replace the built-in UI (default: ./frontend)"
    )
