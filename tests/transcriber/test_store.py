"""The transcript store on disk: speaker names, and stores written by older versions."""

import sqlite3

import pytest

from hubbub.transcriber.store import TranscriptStore
from hubbub.transcript import Segment


def _seg(i: int, speaker: str) -> Segment:
    return Segment(id=f"s-{i}", speaker=speaker, start=i, end=i + 0.5, text=f"word {i}")


def test_speaker_names_merge_clear_and_survive_reopening(tmp_path):
    path = tmp_path / "hubbub.db"
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
