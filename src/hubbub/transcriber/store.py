"""The transcript store: every final segment written as it is produced.

Survives reconnects and restarts: a session's finals can be listed, fetched, exported
and deleted at any time. Embedded SQLite by default; PostgreSQL (``database_url``) when
several transcriber replicas share one store. SQLAlchemy Core speaks both; the schema is
versioned by Alembic migrations (``hubbub/transcriber/migrations``), applied on open.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from hubbub.transcriber.schema import segments, sessions, upgrade
from hubbub.transcript import Segment, Transcript


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
    owner: str = ""  # the replica stepping it, while its lease holds

    def as_dict(self) -> dict:
        """What the API shows: not the token's hash, nor which replica runs it."""
        out = self.__dict__.copy()
        del out["token_hash"], out["owner"]
        return out


class LeaseLost(Exception):
    """Another replica owns the session now: this one must stop writing it."""


def database_url(location: str | Path) -> str:
    """A SQLAlchemy URL for a store location: a URL as given (``postgresql://`` goes
    through psycopg 3), else a SQLite file path, or ``:memory:``."""
    text = str(location)
    if text == ":memory:":
        return "sqlite://"
    if "://" not in text:
        return f"sqlite:///{Path(text).resolve()}"
    scheme, rest = text.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return text


def _greatest(column: sa.ColumnElement, value: float | int) -> sa.ColumnElement:
    """The larger of a column and a value, in any dialect (SQLite has no GREATEST)."""
    return sa.case((column < value, value), else_=column)


class TranscriptStore:
    def __init__(self, location: str | Path = ":memory:") -> None:
        self._engine = _connect(database_url(location))
        with self._engine.begin() as conn:
            upgrade(conn)
        # SQLite takes one writer at a time; one lock per process keeps writers from
        # waiting on each other's file locks (writes are tiny). PostgreSQL needs none.
        self._lock: AbstractContextManager[object] = (
            threading.Lock() if self._engine.dialect.name == "sqlite" else nullcontext()
        )

    def close(self) -> None:
        self._engine.dispose()

    def create(
        self,
        session_id: str,
        engine: str,
        source: str,
        tenant: str,
        token_hash: str = "",
        owner: str = "",
        lease_s: float = 0.0,
    ) -> None:
        """A new session; a live one is created leased to ``owner`` for ``lease_s``."""
        now = time.time()
        with self._lock, self._engine.begin() as c:
            c.execute(
                sessions.insert().values(
                    id=session_id,
                    created=now,
                    updated=now,
                    engine=engine,
                    source=source,
                    status="live",
                    tenant=tenant,
                    token_hash=token_hash,
                    owner=owner,
                    lease_until=self._now() + lease_s if owner else 0.0,
                )
            )

    # -- leases: one replica steps a session at a time ---------------------------------
    # Times are the database's clock, so replicas whose clocks disagree still agree on
    # when a lease lapses.

    def _now(self) -> sa.ColumnElement:
        if self._engine.dialect.name == "sqlite":
            return (sa.func.julianday("now") - 2440587.5) * 86400.0
        return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)

    def claim(self, session_id: str, replica: str, lease_s: float) -> bool:
        """Own the session for ``lease_s`` if nobody else's lease holds; whether we do."""
        s = sessions.c
        with self._lock, self._engine.begin() as c:
            done = c.execute(
                sessions.update()
                .where(
                    s.id == session_id,
                    sa.or_(s.owner == replica, s.owner == "", s.lease_until < self._now()),
                )
                .values(owner=replica, lease_until=self._now() + lease_s, wanted_by="")
            )
        return done.rowcount == 1

    def want(self, session_id: str, replica: str) -> None:
        """Ask the session's owner to hand it over (it sees this when it renews)."""
        with self._lock, self._engine.begin() as c:
            c.execute(
                sessions.update()
                .where(sessions.c.id == session_id, sessions.c.owner != replica)
                .values(wanted_by=replica)
            )

    def renew(
        self, replica: str, session_ids: Iterable[str], lease_s: float
    ) -> tuple[set[str], set[str]]:
        """Extend our leases on ``session_ids``; the ones we still own, and the ones of
        those another replica asked for."""
        ids = list(session_ids)
        if not ids:
            return set(), set()
        s = sessions.c
        mine = sa.and_(s.id.in_(ids), s.owner == replica)
        with self._lock, self._engine.begin() as c:
            c.execute(sessions.update().where(mine).values(lease_until=self._now() + lease_s))
            rows = c.execute(sa.select(s.id, s.wanted_by).where(mine)).all()
        return {sid for sid, _ in rows}, {sid for sid, wanted in rows if wanted}

    def release(self, session_id: str, replica: str, status: str) -> None:
        """Leave the session with ``status`` and give up our lease on it: any replica may
        take it at once (nothing is written if another replica owns it now)."""
        s = sessions.c
        with self._lock, self._engine.begin() as c:
            c.execute(
                sessions.update()
                .where(s.id == session_id, s.owner.in_((replica, "")))
                .values(status=status, updated=time.time(), owner="", lease_until=0.0)
            )

    def engine_state(self, session_id: str) -> str:
        """What the engine saved to continue the session elsewhere ('' for nothing)."""
        with self._engine.begin() as c:
            row = c.execute(
                sa.select(sessions.c.engine_state).where(sessions.c.id == session_id)
            ).first()
        return row[0] if row else ""

    def exists(self, session_id: str) -> bool:
        with self._engine.begin() as c:
            row = c.execute(sa.select(sessions.c.id).where(sessions.c.id == session_id)).first()
        return row is not None

    def add_finals(
        self,
        session_id: str,
        seq: int,
        segments_: Iterable[Segment],
        audio_s: float,
        committed_s: float | None = None,
        owner: str | None = None,
        engine_state: str | None = None,
    ) -> None:
        """Append finals sent in update ``seq`` (one transaction, so a crash keeps all or
        none), how far the session's audio is settled with them, and the engine's state
        as of them. With ``owner``, LeaseLost (and nothing written) unless it still owns
        the session."""
        rows = list(segments_)
        s = sessions.c
        with self._lock, self._engine.begin() as c:
            # The session row is locked first (PostgreSQL), so two writers of one session
            # cannot number their finals alike.
            row = c.execute(sa.select(s.owner).where(s.id == session_id).with_for_update()).first()
            if owner is not None and (row is None or row[0] != owner):
                raise LeaseLost(f"session {session_id} is owned by another replica")
            count = c.execute(
                sa.select(sa.func.count()).where(segments.c.session_id == session_id)
            ).scalar_one()
            if rows:
                c.execute(
                    segments.insert(),
                    [
                        {
                            "session_id": session_id,
                            "ord": count + i,
                            "seq": seq,
                            "id": seg.id,
                            "start": seg.start,
                            "speaker": seg.speaker,
                            "body": seg.model_dump_json(),
                        }
                        for i, seg in enumerate(rows)
                    ],
                )
            c.execute(
                sessions.update()
                .where(s.id == session_id)
                .values(
                    updated=time.time(),
                    audio_s=_greatest(s.audio_s, audio_s),
                    last_seq=seq,
                    committed_s=_greatest(s.committed_s, committed_s or 0.0),
                    **({} if engine_state is None else {"engine_state": engine_state}),
                )
            )

    def set_progress(self, session_id: str, seq: int, committed_s: float) -> None:
        """Record the newest update number and settled audio of a session (no finals)."""
        s = sessions.c
        with self._lock, self._engine.begin() as c:
            c.execute(
                sessions.update()
                .where(s.id == session_id)
                .values(
                    last_seq=_greatest(s.last_seq, seq),
                    committed_s=_greatest(s.committed_s, committed_s),
                )
            )

    def set_status(self, session_id: str, status: str) -> None:
        with self._lock, self._engine.begin() as c:
            c.execute(
                sessions.update()
                .where(sessions.c.id == session_id)
                .values(status=status, updated=time.time())
            )

    def set_speaker_names(
        self, session_id: str, names: dict[str, str], max_names: int = 64
    ) -> dict[str, str] | None:
        """Merge ``names`` (label -> name; an empty name drops the label's name) into the
        session's; returns the result, or None when there is no such session.
        ValueError when the session would hold more than ``max_names`` names."""
        s = sessions.c
        with self._lock, self._engine.begin() as c:  # one transaction: rolled back on an error
            row = c.execute(
                sa.select(s.speaker_names).where(s.id == session_id).with_for_update()
            ).first()
            if row is None:
                return None
            merged = {**json.loads(row[0]), **names}
            merged = {label: name for label, name in merged.items() if name}
            if len(merged) > max_names:
                raise ValueError(f"a session holds at most {max_names} speaker names")
            c.execute(
                sessions.update()
                .where(s.id == session_id)
                .values(speaker_names=json.dumps(merged, ensure_ascii=False), updated=time.time())
            )
        return merged

    def relabel(self, session_id: str, seq: int, speakers: dict[str, str]) -> None:
        """Give finals already stored their revised speaker, as of update ``seq``."""
        if not speakers:
            return
        g = segments.c
        with self._lock, self._engine.begin() as c:
            c.execute(
                segments.update()
                .where(g.session_id == session_id, g.id == sa.bindparam("sid"))
                .values(speaker=sa.bindparam("label"), relabel_seq=seq),
                [{"sid": sid, "label": label} for sid, label in speakers.items()],
            )

    def relabels_after(self, session_id: str, seq: int) -> dict[str, str]:
        """Speakers revised after update ``seq`` of finals sent up to it: what a client
        that resumes from ``seq`` has with an old speaker."""
        g = segments.c
        with self._engine.begin() as c:
            rows = c.execute(
                sa.select(g.id, g.speaker).where(
                    g.session_id == session_id, g.seq <= seq, g.relabel_seq > seq
                )
            ).all()
        return {sid: speaker for sid, speaker in rows}

    def finals_after(self, session_id: str, seq: int) -> list[tuple[int, Segment]]:
        """Finals sent in updates after ``seq``: what a resuming client missed."""
        g = segments.c
        with self._engine.begin() as c:
            rows = c.execute(
                sa.select(g.seq, g.body, g.speaker)
                .where(g.session_id == session_id, g.seq > seq)
                .order_by(g.ord)
            ).all()
        return [(n, _segment(body, speaker)) for n, body, speaker in rows]

    def transcript(self, session_id: str) -> Transcript | None:
        info = self.info(session_id)
        if info is None:
            return None
        g = segments.c
        with self._engine.begin() as c:
            rows = c.execute(
                sa.select(g.body, g.speaker).where(g.session_id == session_id).order_by(g.ord)
            ).all()
        return Transcript(
            session_id=session_id,
            duration=info.audio_s,
            segments=[_segment(body, speaker) for body, speaker in rows],
            speaker_names=info.speaker_names,
        ).sorted()

    def info(self, session_id: str) -> SessionInfo | None:
        found = self.list(session_id=session_id)
        return found[0] if found else None

    def list(
        self, limit: int = 100, session_id: str | None = None, tenant: str | None = None
    ) -> list[SessionInfo]:
        """Sessions, newest first; only ``tenant``'s when one is given."""
        s, g = sessions.c, segments.c
        query = (
            sa.select(
                s.id,
                s.created,
                s.updated,
                s.engine,
                s.source,
                s.status,
                s.audio_s,
                s.last_seq,
                s.tenant,
                s.committed_s,
                sa.func.count(g.ord),
                sa.func.count(sa.distinct(g.speaker)),
                s.speaker_names,
                s.token_hash,
                s.owner,
            )
            .select_from(sessions.outerjoin(segments, g.session_id == s.id))
            .group_by(s.id)
            .order_by(s.created.desc())
            .limit(limit)
        )
        if session_id is not None:
            query = query.where(s.id == session_id)
        if tenant is not None:
            query = query.where(s.tenant == tenant)
        with self._engine.begin() as c:
            rows = c.execute(query).all()
        return [
            SessionInfo(*r[:-3], speaker_names=json.loads(r[-3]), token_hash=r[-2], owner=r[-1])
            for r in rows
        ]

    def delete(self, session_id: str) -> bool:
        with self._lock, self._engine.begin() as c:
            c.execute(segments.delete().where(segments.c.session_id == session_id))
            done = c.execute(sessions.delete().where(sessions.c.id == session_id))
        return done.rowcount > 0


def _segment(body: str, speaker: str) -> Segment:
    """A stored final with its speaker as revised since (the body keeps the first guess)."""
    seg = Segment.model_validate_json(body)
    return (
        seg
        if not speaker or seg.speaker == speaker
        else seg.model_copy(update={"speaker": speaker})
    )


def _connect(url: str) -> Engine:
    if url.startswith("sqlite"):
        memory = url == "sqlite://"
        if not memory:
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # One in-memory database is one connection; a file takes a small pool.
            poolclass=StaticPool if memory else None,
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    # A replica holds a few connections; stale ones (a database restart) are replaced.
    return sa.create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)
