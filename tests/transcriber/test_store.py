"""The transcript store, on SQLite and on a real PostgreSQL server: what the service
writes and reads, speaker names, revisions, two stores on one database, and stores
written by older versions."""

import sqlite3
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from hubbub.transcriber.store import LeaseLost, TranscriptStore
from hubbub.transcript import Segment


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """Where a store lives: a SQLite file, or a fresh database on the PostgreSQL server."""
    if request.param == "sqlite":
        return tmp_path / "hubbub.db"
    return request.getfixturevalue("postgres").new_database()


def _seg(i: int, speaker: str) -> Segment:
    return Segment(id=f"s-{i}", speaker=speaker, start=i, end=i + 0.5, text=f"word {i}")


def test_speaker_names_merge_clear_and_survive_reopening(location):
    path = location
    store = TranscriptStore(path)
    store.create("s", "cpu", "live", "local")
    store.add_finals("s", 1, [_seg(0, "S1"), _seg(1, "S2")], audio_s=2.0)
    assert store.set_speaker_names("s", {"S1": "Alice", "S2": "Bob"}) == {
        "S1": "Alice",
        "S2": "Bob",
    }
    assert store.set_speaker_names("s", {"S2": "", "S3": "Carol"}) == {
        "S1": "Alice",
        "S3": "Carol",
    }
    assert store.set_speaker_names("missing", {"S1": "x"}) is None
    with pytest.raises(ValueError, match="at most 3"):
        store.set_speaker_names("s", {"S4": "Dan", "S5": "Eve"}, max_names=3)
    assert store.set_speaker_names("s", {}) == {"S1": "Alice", "S3": "Carol"}  # unchanged
    store.close()

    again = TranscriptStore(path)
    t = again.transcript("s")
    assert t is not None and t.speaker_names == {"S1": "Alice", "S3": "Carol"}
    assert [s.speaker for s in t.segments] == ["S1", "S2"]  # labels themselves unchanged


def test_a_store_from_before_speaker_names_opens_and_keeps_its_sessions(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE sessions (id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL,
            engine TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL,
            audio_s REAL NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE segments (session_id TEXT NOT NULL REFERENCES sessions(id)
            ON DELETE CASCADE, ord INTEGER NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,
            start REAL NOT NULL, body TEXT NOT NULL, PRIMARY KEY (session_id, ord));
        INSERT INTO sessions VALUES ('old', 1.0, 1.0, 'cpu', 'live', 'ended', 3.0, 1);
        """
    )
    db.execute(
        "INSERT INTO segments VALUES ('old', 0, 1, 's-0', 0.0, ?)",
        (_seg(0, "S1").model_dump_json(),),
    )
    db.commit()
    db.close()

    store = TranscriptStore(path)
    t = store.transcript("old")
    assert t is not None and t.text == "word 0" and t.speaker_names == {}
    assert store.set_speaker_names("old", {"S1": "Dana"}) == {"S1": "Dana"}
    store.close()


def test_finals_progress_revisions_listing_and_deletion(location):
    store = TranscriptStore(location)
    store.create("a", "cpu", "live", "alice", token_hash="h")
    store.create("b", "cpu", "file", "bob")
    store.add_finals("a", 1, [_seg(0, "S1"), _seg(1, "S2")], audio_s=2.0, committed_s=1.5)
    store.add_finals("a", 2, [], audio_s=1.0)  # an update with no finals: nothing moves back
    store.add_finals("a", 3, [_seg(2, "S1")], audio_s=3.0, committed_s=2.5)
    store.set_progress("a", 2, 1.0)  # late and smaller: kept at the larger values
    store.relabel("a", 3, {"s-1": "S1"})
    info = store.info("a")
    assert info is not None and info.tenant == "alice" and info.token_hash == "h"
    assert (info.audio_s, info.last_seq, info.committed_s) == (3.0, 3, 2.5)
    assert (info.segments, info.speakers) == (3, 1)
    assert [(n, s.id, s.speaker) for n, s in store.finals_after("a", 1)] == [(3, "s-2", "S1")]
    assert store.relabels_after("a", 1) == {"s-1": "S1"}  # sent in 1, revised in 3
    assert store.relabels_after("a", 3) == {}
    t = store.transcript("a")
    assert [s.speaker for s in t.segments] == ["S1", "S1", "S1"] and t.duration == 3.0
    assert [s.id for s in store.list()] == ["b", "a"]
    assert [s.id for s in store.list(tenant="bob")] == ["b"]
    store.set_status("b", "ended")
    assert store.info("b").status == "ended" and store.info("b").segments == 0
    assert store.delete("a") and not store.delete("a")
    assert store.transcript("a") is None and store.finals_after("a", 0) == []
    assert not store.exists("a") and store.exists("b")
    store.close()


def test_one_owner_at_a_time_under_a_lease(location):
    """Two replicas on one store: the creator owns a live session; the other may claim it
    only once the lease is released or lapses; an owner that lost it writes nothing."""
    a, b = TranscriptStore(location), TranscriptStore(location)
    a.create("s", "cpu", "live", "local", owner="A", lease_s=30)
    assert not b.claim("s", "B", 30) and a.claim("s", "A", 30)
    b.want("s", "B")
    assert a.renew("A", ["s", "gone"], 30) == ({"s"}, {"s"})  # still A's; B asked for it
    a.add_finals("s", 1, [_seg(0, "S1")], audio_s=1.0, owner="A", engine_state='{"v": 1}')
    a.release("s", "A", "interrupted")
    assert b.claim("s", "B", 0.2) and b.info("s").owner == "B"
    assert b.info("s").status == "interrupted" and b.engine_state("s") == '{"v": 1}'
    with pytest.raises(LeaseLost):
        a.add_finals("s", 2, [_seg(1, "S1")], audio_s=2.0, owner="A")
    assert a.renew("A", ["s"], 30) == (set(), set())
    a.release("s", "A", "ended")  # not A's to leave: changes nothing
    assert b.info("s").status == "interrupted"
    time.sleep(0.4)  # B's lease (0.2 s) lapses: B stalled or died
    assert a.claim("s", "A", 30) and [s.id for s in b.transcript("s").segments] == ["s-0"]
    a.close()
    b.close()


def test_two_stores_on_one_database_see_one_history(postgres):
    """Three replicas open one new PostgreSQL store at once (they migrate it one at a
    time); what one store writes, another reads."""
    url = postgres.new_database()
    opening = (
        "from hubbub.transcriber.store import TranscriptStore as T; import sys; T(sys.argv[1])"
    )
    replicas = [subprocess.Popen([sys.executable, "-c", opening, url]) for _ in range(3)]
    assert [p.wait(timeout=60) for p in replicas] == [0, 0, 0]
    one, two = TranscriptStore(url), TranscriptStore(url)
    one.create("s", "cpu", "live", "local")
    one.add_finals("s", 1, [_seg(0, "S1")], audio_s=1.0, committed_s=1.0)
    two.add_finals("s", 2, [_seg(1, "S2")], audio_s=2.0, committed_s=2.0)
    two.relabel("s", 2, {"s-0": "S2"})
    assert [(s.id, s.speaker) for s in one.transcript("s").segments] == [
        ("s-0", "S2"),
        ("s-1", "S2"),
    ]
    assert one.info("s").last_seq == 2 and two.info("s").committed_s == 2.0
    with sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://")).connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0003"
    one.close()
    two.close()


def test_a_store_revised_with_json_set_keeps_its_revised_speakers(tmp_path):
    """Before migrations a revision rewrote the JSON body; the migration to a speaker
    column carries the revised speaker over."""
    path = tmp_path / "revised.db"
    store = TranscriptStore(path)
    store.create("r", "cpu", "live", "local")
    store.add_finals("r", 1, [_seg(0, "S1")], audio_s=1.0)
    store.close()
    db = sqlite3.connect(path)  # as the old code left it: body revised, no speaker column
    db.execute("UPDATE segments SET body = json_set(body, '$.speaker', 'S4')")
    db.execute("ALTER TABLE segments DROP COLUMN speaker")
    for column in ("owner", "lease_until", "wanted_by", "engine_state"):  # newer still
        db.execute(f"ALTER TABLE sessions DROP COLUMN {column}")
    db.execute("DROP TABLE alembic_version")
    db.commit()
    db.close()
    again = TranscriptStore(path)
    assert [s.speaker for s in again.transcript("r").segments] == ["S4"]
    again.close()
