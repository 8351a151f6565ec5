"""The transcriber's parts wired together: engine, scheduler, store, metrics, settings."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubbub.engines.base import Engine
from hubbub.engines.scheduler import Scheduler
from hubbub.protocol import Limits
from hubbub.settings import Settings
from hubbub.transcriber.metrics import Metrics
from hubbub.transcriber.store import TranscriptStore

log = logging.getLogger(__name__)


@dataclass
class Service:
    settings: Settings
    engine: Engine
    scheduler: Scheduler
    store: TranscriptStore
    metrics: Metrics
    live: dict[str, Any] = field(default_factory=dict)  # session id -> LiveSession
    connections: Counter[str] = field(default_factory=Counter)  # open streams per client host

    @classmethod
    def build(cls, settings: Settings, engine: Engine) -> Service:
        metrics = Metrics()

        def on_step(seconds: float, batch: int) -> None:
            metrics.step_seconds.observe(seconds)
            metrics.step_batch.observe(batch)

        scheduler = Scheduler(engine, settings.max_sessions, settings.max_buffer_s, on_step=on_step)
        store_path = (
            ":memory:" if settings.data_dir == ":memory:" else Path(settings.data_dir) / "hubbub.db"
        )
        return cls(settings, engine, scheduler, TranscriptStore(store_path), metrics)

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(
            max_frame_bytes=s.max_frame_bytes,
            max_buffered_s=s.max_buffer_s,
            max_session_s=s.max_session_s,
            idle_timeout_s=s.idle_timeout_s,
        )

    @staticmethod
    def new_session_id() -> str:
        return uuid.uuid4().hex[:16]
