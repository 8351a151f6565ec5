"""The transcript store: embedded SQLite, every final segment written as it is produced.

Survives reconnects and restarts: a session's finals can be listed, fetched, exported
and deleted at any time. One connection serialised by a lock (writes are tiny).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hubbub.transcript import Segment, Transcript

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    engine TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    audio_s REAL NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    speaker_names TEXT NOT NULL DEFAULT '{}',
    tenant TEXT NOT NULL DEFAULT 'local',
    token_hash TEXT NOT NULL DEFAULT '',
    committed_s REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS segments (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    ord INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    start REAL NOT NULL,
    body TEXT NOT NULL,
    relabel_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, ord)
);
"""


@dataclass(frozen=True)
class SessionInfo:
    id: str
    created: float
    updated: float
    engine: str
    source: str
    status: str
    audio_s: float
    last_seq: int
    tenant: str
    committed_s: float  # stored finals settle the session's audio up to here
    segments: int
    speakers: int
    speaker_names: dict[str, str]
    token_hash: str = field(repr=False, default="")

    def as_dict(self) -> dict:
        out = self.__dict__.copy()
        del out["token_hash"]
        return out


class TranscriptStore:
    def __init__(self, path: str | Path = ":memory:") -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        """Bring a store written by an older version up to this schema."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(sessions)")}
        added = {
            "speaker_names": "TEXT NOT NULL DEFAULT '{}'",
            "tenant": "TEXT NOT NULL DEFAULT 'local'",
            "token_hash": "TEXT NOT NULL DEFAULT ''",
            "committed_s": "REAL NOT NULL DEFAULT 0",
        }
        for name, kind in added.items():
            if name not in columns:
                self._db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(segments)")}
        if "relabel_seq" not in columns:
            self._db.execute(
                "ALTER TABLE segments ADD COLUMN relabel_seq INTEGER NOT NULL DEFAULT 0"
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(
        self, session_id: str, engine: str, source: str, tenant: str, token_hash: str = ""
    ) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions (id, created, updated, engine, source, status, tenant,"
                " token_hash) VALUES (?, ?, ?, ?, ?, 'live', ?, ?)",
                (session_id, now, now, engine, source, tenant, token_hash),
            )

    def exists(self, session_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return row is not None

    def add_finals(
        self,
        session_id: str,
        seq: int,
        segments: Iterable[Segment],
        audio_s: float,
        committed_s: float | None = None,
    ) -> None:
        """Append finals sent in update ``seq`` (one transaction, so a crash keeps all or
        none), and how far the session's audio is settled with them."""
        rows = list(segments)
        with self._lock:
            self._db.execute("BEGIN")
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM segments WHERE session_id = ?", (session_id,)
            ).fetchone()
            self._db.executemany(
                "INSERT INTO segments (session_id, ord, seq, id, start, body) VALUES (?,?,?,?,?,?)",
                [
                    (session_id, count + i, seq, s.id, s.start, s.model_dump_json())
                    for i, s in enumerate(rows)
                ],
            )
            self._db.execute(
                "UPDATE sessions SET updated = ?, audio_s = MAX(audio_s, ?), last_seq = ?,"
                " committed_s = MAX(committed_s, ?) WHERE id = ?",
                (time.time(), audio_s, seq, committed_s or 0.0, session_id),
            )
            self._db.execute("COMMIT")

    def set_progress(self, session_id: str, seq: int, committed_s: float) -> None:
        """Record the newest update number and settled audio of a session (no finals)."""
        with self._lock:
            self._db.execute(
                "UPDATE sessions SET last_seq = MAX(last_seq, ?),"
                " committed_s = MAX(committed_s, ?) WHERE id = ?",
                (seq, committed_s, session_id),
            )

    def set_status(self, session_id: str, status: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE sessions SET status = ?, updated = ? WHERE id = ?",
                (status, time.time(), session_id),
            )

    def set_speaker_names(
        self, session_id: str, names: dict[str, str], max_names: int = 64
    ) -> dict[str, str] | None:
        """Merge ``names`` (label -> name; an empty name drops the label's name) into the
        session's; returns the result, or None when there is no such session.
        ValueError when the session would hold more than ``max_names`` names."""
        with self._lock, self._db:  # one transaction: rolled back on an error
            self._db.execute("BEGIN")
            row = self._db.execute(
                "SELECT speaker_names FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                return None
            merged = {**json.loads(row[0]), **names}
            merged = {label: name for label, name in merged.items() if name}
            if len(merged) > max_names:
                raise ValueError(f"a session holds at most {max_names} speaker names")
            self._db.execute(
                "UPDATE sessions SET speaker_names = ?, updated = ? WHERE id = ?",
                (json.dumps(merged, ensure_ascii=False), time.time(), session_id),
            )
        return merged

    def relabel(self, session_id: str, seq: int, speakers: dict[str, str]) -> None:
        """Give finals already stored their revised speaker, as of update ``seq``."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE segments SET body = json_set(body, '$.speaker', ?), relabel_seq = ?"
                " WHERE session_id = ? AND id = ?",
                [(label, seq, session_id, sid) for sid, label in speakers.items()],
            )
            self._db.execute("COMMIT")

    def relabels_after(self, session_id: str, seq: int) -> dict[str, str]:
        """Speakers revised after update ``seq`` of finals sent up to it: what a client
        that resumes from ``seq`` has with an old speaker."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, json_extract(body, '$.speaker') FROM segments"
                " WHERE session_id = ? AND seq <= ? AND relabel_seq > ?",
                (session_id, seq, seq),
            ).fetchall()
        return dict(rows)

    def finals_after(self, session_id: str, seq: int) -> list[tuple[int, Segment]]:
        """Finals sent in updates after ``seq``: what a resuming client missed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, body FROM segments WHERE session_id = ? AND seq > ? ORDER BY ord",
                (session_id, seq),
            ).fetchall()
        return [(s, Segment.model_validate_json(b)) for s, b in rows]

    def transcript(self, session_id: str) -> Transcript | None:
        info = self.info(session_id)
        if info is None:
            return None
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM segments WHERE session_id = ? ORDER BY ord", (session_id,)
            ).fetchall()
        segs = [Segment.model_validate_json(b) for (b,) in rows]
        return Transcript(
            session_id=session_id,
            duration=info.audio_s,
            segments=segs,
            speaker_names=info.speaker_names,
        ).sorted()

    def info(self, session_id: str) -> SessionInfo | None:
        found = self.list(session_id=session_id)
        return found[0] if found else None

    def list(
        self, limit: int = 100, session_id: str | None = None, tenant: str | None = None
    ) -> list[SessionInfo]:
        """Sessions, newest first; only ``tenant``'s when one is given."""
        where, args = [], []
        if session_id is not None:
            where.append("s.id = ?")
            args.append(session_id)
        if tenant is not None:
            where.append("s.tenant = ?")
            args.append(tenant)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.id, s.created, s.updated, s.engine, s.source, s.status, s.audio_s,"
                " s.last_seq, s.tenant, s.committed_s, COUNT(g.ord),"
                " COUNT(DISTINCT json_extract(g.body, '$.speaker')), s.speaker_names,"
                " s.token_hash"
                f" FROM sessions s LEFT JOIN segments g ON g.session_id = s.id {clause}"
                " GROUP BY s.id ORDER BY s.created DESC LIMIT ?",
                [*args, limit],
            ).fetchall()
        return [
            SessionInfo(*r[:-2], speaker_names=json.loads(r[-2]), token_hash=r[-1]) for r in rows
        ]

    def delete(self, session_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return cur.rowcount > 0
