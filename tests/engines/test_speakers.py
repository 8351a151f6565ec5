"""The CPU engine's speaker pipeline, piece by piece and on real voices: phrases, voice
changes, the encoder, clustering, live guesses and the second looks that revise them."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hubbub.decode import load_audio
from hubbub.engines.base import SessionOptions
from hubbub.engines.cpu.clusters import cluster_voices
from hubbub.engines.cpu.phrases import Phrase, change_point, merge_short, phrases
from hubbub.engines.cpu.speakers import SpeakerTracker, unit
from hubbub.recordings import transcribe_many
from hubbub.transcript import Word


def _words(spec: list[tuple[str, float, float]]) -> list[Word]:
    return [Word(text=t, start=a, end=b) for t, a, b in spec]


def near(rng: np.random.Generator, v: np.ndarray) -> np.ndarray:
    """A segment's voice: ``v`` a little off, as one speaker's segments are."""
    return unit(v + 0.05 * rng.standard_normal(32))


def test_phrases_break_at_sentence_ends_and_pauses_and_short_ones_join():
    words = _words(
        [
            (" Hello.", 0.0, 0.5),
            (" Oh,", 0.6, 0.8),
            (" hello", 0.8, 1.2),
            (" there", 1.25, 1.6),
            (" how", 2.2, 2.4),  # a pause before it
            (" are", 2.4, 2.6),
            (" you?", 2.6, 3.0),
        ]
    )
    got = phrases(words, gap_s=0.25)
    assert [[w.text for w in p.words] for p in got] == [
        [" Hello."],
        [" Oh,", " hello", " there"],
        [" how", " are", " you?"],
    ]
    merged = merge_short(got, min_s=0.6)
    assert [round(p.duration, 2) for p in merged] == [1.6, 0.8]  # "Hello." joined its neighbour
    assert merge_short([Phrase(words[:1])], 0.6)[0].words == words[:1]


def test_a_change_point_is_where_the_two_sides_differ_most():
    rng = np.random.default_rng(0)
    a, b = unit(rng.standard_normal(16)), unit(rng.standard_normal(16))
    seq = np.stack(
        [unit(a + 0.1 * rng.standard_normal(16)) for _ in range(6)]
        + [unit(b + 0.1 * rng.standard_normal(16)) for _ in range(5)]
    )
    assert change_point(seq, threshold=0.6) == 6
    same = np.stack([unit(a + 0.1 * rng.standard_normal(16)) for _ in range(10)])
    assert change_point(same, threshold=0.6) is None


def test_clusters_find_the_speakers_and_fold_in_scraps():
    rng = np.random.default_rng(1)
    centres = [unit(rng.standard_normal(32)) for _ in range(3)]
    emb, dur, truth = [], [], []
    for k, c in enumerate(centres):
        for _ in range(5):
            emb.append(unit(c + 0.05 * rng.standard_normal(32)))
            dur.append(2.0)
            truth.append(k)
    emb.append(unit(rng.standard_normal(32)))  # a cough nobody else sounds like, 0.3 s
    dur.append(0.3)
    labels = cluster_voices(np.stack(emb), np.array(dur), 0.7, 8, 1.0)
    assert len(set(labels)) == 3
    assert [labels[i] for i in range(15)] == [t for t in truth]
    assert cluster_voices(np.stack(emb[:15]), np.array(dur[:15]), 0.7, 2, 1.0).max() == 1


def test_a_short_voice_joins_a_speaker_only_if_like_them_more_than_anyone():
    rng = np.random.default_rng(4)
    a, b, z = (unit(rng.standard_normal(32)) for _ in range(3))
    emb = [unit(c + 0.05 * rng.standard_normal(32)) for c in [a] * 4 + [b] * 4]
    dur = [2.0] * 8
    emb.append(unit(a + 0.3 * rng.standard_normal(32)))  # a moment of a's voice, 1 s
    emb.append(unit(a + b + 2 * z))  # someone new, as like a as b, 1.2 s
    dur += [1.0, 1.2]
    labels = cluster_voices(np.stack(emb), np.array(dur), 0.7, 8, 0.5, 2.0, 0.3, 0.18)
    assert labels[8] == labels[0] and len({labels[9], labels[0], labels[4]}) == 3
    # Without a margin asked for, the newcomer is folded into its nearest speaker.
    assert len(set(cluster_voices(np.stack(emb), np.array(dur), 0.7, 8, 0.5, 2.0, 0.3))) == 2


def test_a_short_pause_between_one_speakers_finals_is_theirs(cpu_engine):
    s = cpu_engine.open_session("b", SessionOptions())
    s.last_final = (10.0, 0)  # S1's final ended at 10 s
    assert cpu_engine._bridged(s, 10.8, 0) == 10.0  # S1 again after a breath: no hole
    assert cpu_engine._bridged(s, 10.8, 1) == 10.8  # someone else
    assert cpu_engine._bridged(s, 12.0, 0) == 12.0  # S1 after a real pause
    cpu_engine.close_session(s)


def test_a_second_look_relabels_and_keeps_labels_stable():
    rng = np.random.default_rng(2)
    a, b = unit(rng.standard_normal(32)), unit(rng.standard_normal(32))
    tracker = SpeakerTracker(threshold=0.99, adapt=0.0, cluster_cos=0.7)
    # A strict first guess makes a new "speaker" of every segment...
    for i, c in enumerate([a, a, b, a, b]):
        e = unit(c + 0.05 * rng.standard_normal(32))
        tracker.remember([f"s{i}"], e, 2.0, tracker.assign(e, 2.0))
    assert tracker.n_speakers == 5
    # ...the second look puts them back into two, labels of the first of each kept.
    changed = tracker.refine()
    assert changed == {"s1": 0, "s3": 0, "s4": 2}
    assert {it.label for it in tracker.items} == {0, 2} and tracker.n_speakers == 2
    assert tracker.refine() == {}, "nothing changes twice"


def test_what_a_session_keeps_for_second_looks_is_bounded():
    rng = np.random.default_rng(3)
    a = unit(rng.standard_normal(32))
    tracker = SpeakerTracker(max_items=20)
    for i in range(500):
        e = unit(a + 0.05 * rng.standard_normal(32))
        tracker.remember([f"s{i}"], e, 1.5, tracker.assign(e, 1.5))
    assert len(tracker.items) == 20
    assert sum(len(it.segment_ids) for it in tracker.items) == 500
    assert sum(it.duration for it in tracker.items) == pytest.approx(750.0)


def test_the_encoder_tells_real_voices_apart(cpu_engine, speech_dir):
    lj = [load_audio(speech_dir / f"KoljaB-RealtimeSTT/LJ001-000{k}.flac") for k in (4, 6)]
    ss = [
        load_audio(
            speech_dir / f"cmusphinx-pocketsphinx/sense_and_sensibility_01_austen_64kb-0{k}.flac"
        )
        for k in (870, 920)
    ]
    v = cpu_engine.embedder.embed_audio([*lj, *ss])
    same = [float(v[0] @ v[1]), float(v[2] @ v[3])]
    different = [float(v[i] @ v[j]) for i in (0, 1) for j in (2, 3)]
    assert min(same) > max(different) + 0.15, (same, different)


def test_a_quick_exchange_in_one_utterance_becomes_two_speakers(cpu_engine, speech_dir):
    """Two voices 0.15 s apart: one utterance to the VAD, two turns in the transcript."""
    first = load_audio(speech_dir / "KoljaB-RealtimeSTT/LJ001-0004.flac")
    second = load_audio(speech_dir / "cmusphinx-pocketsphinx/cards_005.flac")
    gap = np.zeros(int(0.15 * 16000), np.float32)
    audio = np.concatenate([first, gap, second, gap, first])
    t = transcribe_many(cpu_engine, {"x": audio})["x"]
    a = len(first) / 16000
    b = a + 0.15 + len(second) / 16000

    def who(lo: float, hi: float) -> set[str]:
        return {s.speaker for s in t.segments if lo <= (s.start + s.end) / 2 < hi}

    said = [(s.speaker, s.start, s.text) for s in t.segments]
    assert len(who(0, 99)) == 2, said
    assert len(who(0, a)) == len(who(a, b)) == 1, said
    assert who(0, a) == who(b, 99) != who(a, b), said


def test_a_quick_exchange_is_two_speakers_as_the_words_turn_final(cpu_engine, speech_dir):
    """Live, before the utterance ends: the words of a second voice that follows the
    first within one utterance get their own speaker when first given out, not the
    first voice's label to be corrected later."""
    first = load_audio(speech_dir / "QuentinFuxa-WhisperLiveKit/6930-75918-0000.flac")
    second = load_audio(
        speech_dir / "cmusphinx-pocketsphinx/sense_and_sensibility_01_austen_64kb-0890.flac"
    )
    gap = np.zeros(int(0.12 * 16000), np.float32)
    audio = np.concatenate([first, gap, second])
    given: dict[str, tuple[str, float, float]] = {}

    def note(_name: str, _t: float, update) -> None:
        for seg in update.finals:
            given[seg.id] = (seg.speaker, seg.start, seg.end)

    t = transcribe_many(cpu_engine, {"x": audio}, on_update=note)["x"]
    a = len(first) / 16000
    live_first = {spk for spk, lo, hi in given.values() if (lo + hi) / 2 < a}
    live_second = {spk for spk, lo, hi in given.values() if (lo + hi) / 2 > a + 0.12}
    said = [(s.speaker, s.start, s.text) for s in t.segments]
    assert len(live_first) == len(live_second) == 1, (given, said)
    assert live_first != live_second, (given, said)
    assert len(t.speakers) == 2, said


def test_a_copy_of_a_tracker_is_left_as_it_was_by_what_the_tracker_does_next():
    """The engine copies each session before a step to roll a failed step back to; the
    tracker's copy shares its arrays and id lists, so nothing may change them in place."""
    rng = np.random.default_rng(4)
    voices = [unit(rng.standard_normal(32)) for _ in range(3)]

    def seen(t: SpeakerTracker) -> tuple:
        items = [
            (it.segment_ids.copy(), it.embedding.copy(), it.duration, it.label) for it in t.items
        ]
        spread = None if t.spread is None else (t.spread.mean, t.spread.var, t.spread.n)
        sums = {k: v.copy() for k, v in t.sums.items()}
        return items, spread, sums, dict(t.seconds), t.next_label, t.since_refine_s

    tracker = SpeakerTracker(threshold=0.99, adapt=0.0, max_items=6)
    for i, v in enumerate([voices[0], voices[1], voices[0], voices[1]]):
        e = near(rng, v)
        tracker.remember([f"s{i}"], e, 2.0, tracker.assign(e, 2.0))
    before = seen(tracker)
    saved = copy.deepcopy(tracker)
    tracker.guess(near(rng, voices[2]), 1.0, heard_s=1.5)
    for i in range(4, 9):  # past max_items: the oldest merge
        e = near(rng, voices[i % 3])
        tracker.remember([f"s{i}"], e, 2.0, tracker.assign(e, 2.0))
    tracker.settle()
    assert tracker.refine()  # a second look relabels items in place
    after = seen(saved)
    assert saved.pending == {} and saved.pending_from is None
    for was, now in zip(before, after, strict=True):
        np.testing.assert_equal(now, was)


def test_early_guesses_count_until_their_utterance_ends():
    """An early final's voice is learnt for the rest of its utterance (a new voice in it
    founds a speaker at once), then handed over to the utterance's phrases: nothing is
    counted twice, and a label founded only by guesses is free again."""
    rng = np.random.default_rng(5)
    a, b = (unit(rng.standard_normal(32)) for _ in range(2))
    tracker = SpeakerTracker(max_speakers=4)
    assert tracker.assign(a, 3.0) == 0
    assert tracker.guess(b, 1.0, heard_s=1.6) == 1  # a new voice mid-utterance
    assert tracker.peek(b) == 1 and tracker.n_speakers == 2
    assert tracker.guess(b, 0.5, heard_s=1.6) == 1  # and it stays that voice
    assert tracker.guess(unit(rng.standard_normal(32)), 0.5, heard_s=0.4) in (0, 1)  # too short
    tracker.settle()
    assert tracker.sums.keys() == {0} and tracker.seconds == {0: 3.0}
    assert tracker.next_label == 1 and not tracker.pending
    # The utterance's phrases then found the speaker for real, with the same label.
    assert tracker.assign(b, 1.5) == 1


def test_a_tracker_goes_on_from_another_replicas_export():
    """A session taken over by another replica keeps its speakers' labels: the new
    tracker, restored from the old one's export, labels the same voices alike, numbers a
    new voice after the old ones, and weighs the old voices in its second looks."""
    rng = np.random.default_rng(3)
    voices = [unit(rng.standard_normal(32)) for _ in range(4)]

    old = SpeakerTracker(max_speakers=4)
    assert [old.assign(near(rng, v), 3.0) for v in (voices[0], voices[1], voices[0])] == [0, 1, 0]
    new = SpeakerTracker(max_speakers=4)
    new.restore(old.export())
    assert new.next_label == 2 and new.seconds == pytest.approx({0: 6.0, 1: 3.0}, abs=1e-3)
    assert [new.assign(near(rng, v), 3.0) for v in (voices[1], voices[0], voices[2])] == [1, 0, 2]
    for i, v in enumerate((voices[1], voices[0], voices[2])):
        new.remember([f"n{i}"], near(rng, v), 3.0, new.assign(near(rng, v), 3.0))
    assert new.refine() == {}  # the old voices held their labels
    with pytest.raises(ValueError):
        SpeakerTracker(max_speakers=1).restore(old.export())  # two voices, room for one
    with pytest.raises((ValueError, KeyError)):
        SpeakerTracker().restore('{"next_label": 1, "voices": {"0": {"s": -1, "v": [1]}}}')
