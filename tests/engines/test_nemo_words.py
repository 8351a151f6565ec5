"""How one speaker's streamed tokens become words, partial tails and finals (no torch)."""

from __future__ import annotations

from hubbub.engines.nemo.words import SpeakerWords, Token

PIECES = {1: "▁hello", 2: "▁wor", 3: "ld", 4: ".", 5: "▁how", 6: "▁are", 7: "▁you", 8: "?"}


def detok(ids: list[int]) -> str:
    return "".join(PIECES[i] for i in ids).replace("▁", " ").strip()


def toks(*pairs: tuple[int, float], overlap: bool = False) -> list[Token]:
    return [Token(i, PIECES[i], t, t + 0.08, overlap) for i, t in pairs]


def test_each_word_is_final_once_the_next_one_starts_or_a_gap_passes():
    w = SpeakerWords("S1", detok, word_gap_s=0.4)
    w.add(toks((1, 0.0), (2, 0.4), overlap=True))
    [seg] = w.close(now=0.56)  # "▁wor" started a word: "hello" is complete
    assert seg.text == "hello" and seg.overlap and seg.end == 0.08
    assert w.partial("x").text == "wor"
    w.add(toks((3, 0.56)))
    assert w.close(now=0.7) == []  # "world" may go on
    assert w.partial("x").text == "world"
    [seg] = w.close(now=1.0)  # 0.44 s without a token: it did not
    assert seg.text == "world" and seg.start == 0.4 and seg.end == 0.64
    assert w.partial("x") is None and w.open_words == 0
    w.add(toks((5, 1.2), (6, 1.3), (7, 1.4), (8, 1.48)))
    [seg] = w.close(now=1.6)
    assert seg.text == "how are"  # "you?" stays open until the next step
    [seg] = w.close(now=1.6, flush=True)
    assert seg.text == "you?"


def test_sentence_end_closes_complete_words_only():
    w = SpeakerWords("S1", detok, per_word=False)
    w.add(toks((1, 0.0), (2, 0.4), (3, 0.48), (4, 0.56)))
    # "world." is still open: the next piece might continue it.
    assert w.close(now=0.64) == []
    tail = w.partial("x")
    assert tail is not None and tail.text == "hello world."
    w.add(toks((5, 0.72)))
    [seg] = w.close(now=0.8)
    assert seg.text == "hello world." and seg.speaker == "S1"
    assert [x.text for x in seg.words] == ["hello", "world."]
    assert seg.start == 0.0 and seg.end == 0.64
    assert w.partial("x").text == "how"


def test_pause_and_flush_close_everything():
    w = SpeakerWords("S2", detok, pause_s=0.8, per_word=False)
    w.add(toks((5, 1.0), (6, 1.2), overlap=True))
    assert w.close(now=1.5) == []
    [seg] = w.close(now=2.1)
    assert seg.text == "how are" and seg.overlap
    assert w.partial("x") is None and w.open_words == 0
    w.add(toks((7, 3.0)))
    [seg] = w.close(now=3.1, flush=True)
    assert seg.text == "you" and not seg.overlap


def test_a_tail_that_never_pauses_is_cut_at_max_segment():
    w = SpeakerWords("S1", detok, pause_s=0.8, max_segment_s=2.0, per_word=False)
    t, cut = 0.0, []
    while t < 5:
        w.add(toks((5, t)))
        cut += w.close(now=t + 0.08)
        t += 0.4
    assert cut and all(s.end - s.start <= 2.0 + 0.5 for s in cut)
    assert w.open_words <= 2.0 / 0.4 + 1
