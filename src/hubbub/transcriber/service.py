"""The transcriber's parts wired together: engine, scheduler, store, keys, live sessions."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hubbub.engines.base import Engine
from hubbub.protocol import Limits
from hubbub.security import Keyring
from hubbub.settings import Settings
from hubbub.transcriber.metrics import Metrics
from hubbub.transcriber.scheduler import Scheduler
from hubbub.transcriber.store import TranscriptStore

if TYPE_CHECKING:
    from hubbub.transcriber.sessions import LiveSession

log = logging.getLogger(__name__)


@dataclass
class Service:
    settings: Settings
    engine: Engine
    scheduler: Scheduler
    store: TranscriptStore
    metrics: Metrics
    keyring: Keyring
    live: dict[str, LiveSession] = field(default_factory=dict)
    # Connections still in their handshake, per client address: they count toward the
    # client's limit like the sessions it holds (attached or parked).
    handshakes: Counter[str] = field(default_factory=Counter)
    draining: bool = False  # shutting down: no new connections
    replica: str = ""  # our name in the sessions' leases

    @classmethod
    def build(cls, settings: Settings, engine: Engine) -> Service:
        metrics = Metrics()

        def on_step(seconds: float, batch: int) -> None:
            metrics.step_seconds.observe(seconds)
            metrics.step_batch.observe(batch)

        scheduler = Scheduler(engine, settings.max_sessions, settings.max_buffer_s, on_step=on_step)
        store = TranscriptStore(settings.database_url or _sqlite_path(settings.data_dir))
        keyring = Keyring.from_settings(settings)
        replica = settings.replica_id or f"{socket.gethostname()}:{settings.port}"
        return cls(settings, engine, scheduler, store, metrics, keyring, replica=replica)

    async def keep_leases(self) -> None:
        """Renew the leases of our live sessions a few times per lease; hand over the ones
        another replica asks for (a client resumed there), and stop the ones another
        replica owns now (ours lapsed: this process stalled). Runs until cancelled."""
        every = self.settings.lease_s / 3
        while True:
            await asyncio.sleep(every)
            # A session still ending is still ours: its last finals are being written.
            live = [s for s in self.live.values() if s.state != "ended"]
            try:
                held, wanted = self.store.renew(
                    self.replica, [s.id for s in live], self.settings.lease_s
                )
            except Exception:  # the database is away: try again; leases lapse meanwhile
                log.warning("renewing leases failed", exc_info=True)
                continue
            for session in live:
                if session.id not in held:
                    session.lose("another replica took this session over")
                elif session.id in wanted:
                    session.hand_over()

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(
            max_frame_bytes=s.max_frame_bytes,
            max_buffered_s=s.max_buffer_s,
            max_session_s=s.max_session_s,
            idle_timeout_s=s.idle_timeout_s,
        )

    def client_load(self, client: str) -> int:
        """Sessions a client holds: attached, parked, or still ending."""
        return sum(1 for s in self.live.values() if s.client == client)

    def forget(self, session: LiveSession) -> None:
        if self.live.get(session.id) is session:
            del self.live[session.id]

    @staticmethod
    def new_session_id() -> str:
        return uuid.uuid4().hex[:16]


def _sqlite_path(data_dir: str) -> str | Path:
    return ":memory:" if data_dir == ":memory:" else Path(data_dir) / "hubbub.db"
