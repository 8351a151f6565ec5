"""Which words of an open utterance turn final (hubbub.engines.cpu.commits): pure logic."""

from __future__ import annotations

from hubbub.engines.cpu.commits import OpenText, Piece, agreed, spelling
from hubbub.transcript import Word


def words(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(text=f" {t}", start=a, end=b) for t, a, b in spec]


def test_spelling_ignores_case_and_punctuation_but_not_the_word():
    assert spelling(" Well,") == spelling("well") == "well"
    assert spelling(" don't") == "don't"
    assert spelling(" cant") != spelling(" can't")


def test_agreement_is_the_shared_leading_run():
    assert agreed(["a", "b", "c"], ["a", "b", "x", "c"]) == 2
    assert agreed([], ["a"]) == 0
    assert agreed(["a", "b"], ["a", "b", "c"]) == 2
    assert agreed(["x"], ["a"]) == 0


def test_a_word_turns_final_on_the_second_decode_that_agrees():
    text = OpenText(start=0)
    first = words(("so", 0.1, 0.3), ("my", 0.35, 0.5), ("fell", 0.6, 0.9))
    assert text.to_commit(first, frontier_s=1.0, holdback_s=0.3) == 0  # nothing to agree with
    second = words(("So", 0.1, 0.3), ("my", 0.35, 0.5), ("fellow", 0.6, 1.0), ("Am", 1.1, 1.4))
    # "so my" agree; "fell" became "fellow": it and everything after wait.
    assert text.to_commit(second, frontier_s=1.6, holdback_s=0.3) == 2
    # What is left is compared with the next decode.
    assert text.guess == ["fellow", "am"]


def test_holdback_keeps_words_near_the_newest_audio_open():
    text = OpenText(start=0)
    ws = words(("one", 0.0, 0.4), ("two", 0.5, 0.9), ("three", 1.0, 1.45))
    text.to_commit(ws, frontier_s=1.5, holdback_s=0.3)
    # "three" ends 0.05 s before the audio does: it may still be cut off.
    assert text.to_commit(ws, frontier_s=1.5, holdback_s=0.3) == 2
    assert text.guess == ["three"]


def test_final_words_are_the_prefix_of_later_decodes():
    text = OpenText(start=0)
    ws = words(("hello", 0.0, 0.4), ("there", 0.5, 0.9))
    text.add(Piece("s-1", 0, ws[:1]), [[1, 2]])
    text.add(Piece("s-2", 0, ws[1:]), [[3]])
    assert text.prefix == [1, 2, 3]
    assert text.end_s == 0.9


def test_a_cut_hands_final_words_past_it_to_the_next_utterance():
    text = OpenText(start=0)
    ws = words(("a", 0.0, 0.4), ("b", 0.5, 0.9), ("c", 1.0, 1.4), ("d", 1.5, 1.9))
    text.add(Piece("s-1", 0, ws[:3]), [[1], [2], [3]])  # "c" lies past the cut at 0.95 s
    text.add(Piece("s-2", 1, ws[3:]), [[4]])
    later = text.split(0.95, start=15_200)
    assert [w.text for w in text.words] == [" a", " b"] and text.prefix == [1, 2]
    assert [w.text for w in later.words] == [" c", " d"] and later.prefix == [3, 4]
    assert later.start == 15_200
    # Pieces go where most of their words went.
    assert [p.segment_id for p in text.pieces] == ["s-1"]
    assert [p.segment_id for p in later.pieces] == ["s-2"]


def test_a_decode_saying_final_words_again_repeats_nothing():
    text = OpenText(start=0)
    final = words(("never", 31.6, 31.9), ("been", 31.9, 32.24), ("surpassed.", 32.24, 32.6))
    text.add(Piece("s-1", 0, final), [[1], [2], [3]])
    # Placed inside the final words: an echo, as is the same word stretched past them.
    said = words(("been", 31.9, 32.2), ("surpassed.", 32.24, 33.5), ("In", 33.6, 33.8))
    assert text.echoed(said) == 2
    # A new word that merely starts early, or a final word said again later, is new.
    assert text.echoed(words(("Then", 32.4, 33.0))) == 0
    assert text.echoed(words(("surpassed", 32.7, 33.2))) == 0
