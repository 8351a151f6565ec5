"""The transcript store's tables, and the migrations that bring a database to them.

The tables below are what the code reads and writes; ``migrations/versions`` says how a
database gets there, one Alembic revision per change. A store is brought up to date when
it is opened; replicas opening one PostgreSQL store at once take turns (an advisory lock
in ``migrations/env.py``). Stores written before migrations existed (no
``alembic_version`` table) are given the columns they lack and stamped as the baseline.
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

BASELINE = "0001"
MIGRATIONS = Path(__file__).parent / "migrations"

metadata = sa.MetaData()

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("engine", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("audio_s", sa.Float, nullable=False, server_default="0"),
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("speaker_names", sa.Text, nullable=False, server_default="{}"),
    sa.Column("tenant", sa.Text, nullable=False, server_default="local"),
    sa.Column("token_hash", sa.Text, nullable=False, server_default=""),
    sa.Column("committed_s", sa.Float, nullable=False, server_default="0"),
    # The lease: the replica stepping the session, the database time its claim lapses, and
    # a replica that asked to take the session over (a client resumed there).
    sa.Column("owner", sa.Text, nullable=False, server_default=""),
    sa.Column("lease_until", sa.Float, nullable=False, server_default="0"),
    sa.Column("wanted_by", sa.Text, nullable=False, server_default=""),
    sa.Column("engine_state", sa.Text, nullable=False, server_default=""),  # engine's JSON
)

segments = sa.Table(
    "segments",
    metadata,
    sa.Column(
        "session_id",
        sa.Text,
        sa.ForeignKey("sessions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("ord", sa.Integer, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("id", sa.Text, nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the final as sent (JSON)
    sa.Column("relabel_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("speaker", sa.Text, nullable=False, server_default=""),  # as revised since
)

# Columns that stores from before migrations may lack (SQLite only: they were all SQLite).
_LEGACY_COLUMNS = {
    "sessions": {
        "speaker_names": "TEXT NOT NULL DEFAULT '{}'",
        "tenant": "TEXT NOT NULL DEFAULT 'local'",
        "token_hash": "TEXT NOT NULL DEFAULT ''",
        "committed_s": "REAL NOT NULL DEFAULT 0",
    },
    "segments": {"relabel_seq": "INTEGER NOT NULL DEFAULT 0"},
}


def alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


_MIGRATING = threading.Lock()  # Alembic's context is module-global: one thread at a time


def upgrade(connection: Connection) -> None:
    """Bring the database behind ``connection`` to the newest schema."""
    with _MIGRATING:
        _upgrade(connection)


def _upgrade(connection: Connection) -> None:
    cfg = alembic_config(connection)
    inspector = sa.inspect(connection)
    if inspector.has_table("sessions") and not inspector.has_table("alembic_version"):
        for table, columns in _LEGACY_COLUMNS.items():
            have = {c["name"] for c in inspector.get_columns(table)}
            for name, kind in columns.items():
                if name not in have:
                    connection.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))
        command.stamp(cfg, BASELINE)
    command.upgrade(cfg, "head")
