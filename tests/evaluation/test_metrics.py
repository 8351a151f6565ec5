"""Scoring functions, checked against counts worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hubbub.evaluation.metrics import (
    DerResult,
    StmSegment,
    Turn,
    WerResult,
    aggregate,
    cpwer,
    der,
    normalize_text,
    read_rttm,
    read_stm,
    speaker_texts,
    wer,
)

# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("HE BEGAN A Confused complaint.", "he began a confused complaint"),
        ("I’m here, there's nothing!", "i'm here there's nothing"),
        ("Mr. John Dashwood & Mrs. Smith", "mister john dashwood and missus smith"),
        ("Dr. Who said OK.", "doctor who said okay"),
        ("13 cats", "thirteen cats"),
        ("1,000 or 3.5%", "one thousand or three point five percent"),
        ("the 2nd and 21st", "the second and twenty first"),
        ("In 1813, then 2024", "in eighteen thirteen then twenty twenty four"),
        ("the 1990s and 80s", "the nineteen nineties and eighties"),
        ("2005", "two thousand and five"),
        ("ill-disposed  young\tman", "ill disposed young man"),
        ("'Hello,' the speakers' rock 'n' roll", "hello the speakers rock n roll"),
        ("", ""),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_normalize_text_fillers_only_on_request() -> None:
    assert normalize_text("Um, this is uh me") == "um this is uh me"
    assert normalize_text("Um, this is uh me", drop_fillers=True) == "this is me"


def test_normalize_text_reads_huge_numbers_digit_by_digit() -> None:
    # Past num2words' range (10**306) a digit string is an id, not a quantity.
    assert normalize_text("1" * 400) == " ".join(["one"] * 400)


# --------------------------------------------------------------------------- WER


def test_wer_counts_each_error_kind() -> None:
    # brown->red substituted, "jumps" deleted, "lazy" inserted; six hits. (An example with
    # only one cheapest alignment, so the split into S/D/I is not a tie-break choice.)
    result = wer("the quick brown fox jumps over the dog", "the quick red fox over the lazy dog")
    assert (result.substitutions, result.deletions, result.insertions, result.hits) == (1, 1, 1, 6)
    assert result.errors == 3
    assert result.ref_words == 8
    assert result.hyp_words == 8
    assert result.rate == pytest.approx(3 / 8)


def test_wer_normalises_both_sides_by_default() -> None:
    assert wer("Mr. Smith has 2 cats.", "mister smith has two cats").errors == 0
    # Raw: Mr./mister, Smith/smith, 2/two and cats./cats all differ; only "has" matches.
    raw = wer("Mr. Smith has 2 cats.", "mister smith has two cats", normalize=False)
    assert (raw.substitutions, raw.hits) == (4, 1)


def test_wer_empty_sides() -> None:
    assert wer("", "").rate == 0.0
    assert wer("", "hello there") == WerResult(insertions=2)
    assert wer("", "hello there").rate == math.inf
    assert wer("hello there", "").rate == 1.0


def test_aggregate_sums_counts_not_rates() -> None:
    # 1 error in 2 words and 0 in 8: 1/10 overall, not the mean of 0.5 and 0.
    total = aggregate([wer("a b", "a c"), wer("a b c d e f g h", "a b c d e f g h")])
    assert total == WerResult(substitutions=1, hits=9)
    assert total.rate == pytest.approx(0.1)
    with pytest.raises(ValueError):
        aggregate([])


# --------------------------------------------------------------------------- cpWER


def test_cpwer_ignores_speaker_labels() -> None:
    reference = {"A": "hello there", "B": "good morning everyone"}
    hypothesis = {"spk1": "good morning everyone", "spk0": "hello there"}
    result = cpwer(reference, hypothesis)
    assert result.errors == 0
    assert result.ref_words == 5


def test_cpwer_picks_the_best_pairing() -> None:
    # Pairing A-y and B-x costs one insertion ("x"); the other pairing costs far more.
    result = cpwer({"A": "a b c", "B": "d e"}, {"x": "d e", "y": "a b x c"})
    assert result == WerResult(insertions=1, hits=5)
    assert result.rate == pytest.approx(0.2)


def test_cpwer_attributed_to_wrong_speaker_is_error() -> None:
    # Right words, but "d e" was given to A's stream: plain WER would not notice.
    result = cpwer({"A": "a b c", "B": "d e"}, {"x": "a b c d e", "y": ""})
    assert result == WerResult(deletions=2, insertions=2, hits=3)


def test_cpwer_unmatched_speakers_count_all_words() -> None:
    missing = cpwer({"A": "a b c", "B": "d e"}, {"x": "a b c"})
    assert missing == WerResult(deletions=2, hits=3)
    extra = cpwer({"A": "a b"}, {"x": "a b", "y": "c d e"})
    assert extra == WerResult(insertions=3, hits=2)
    assert cpwer({}, {}) == WerResult()


# --------------------------------------------------------------------------- DER


def test_der_confusion_without_collar() -> None:
    # Hypothesis keeps A's label 2 s into B's turn: 2 s confused out of 20 s.
    ref = [Turn("A", 0, 10), Turn("B", 10, 20)]
    hyp = [Turn("x", 0, 12), Turn("y", 12, 20)]
    result = der(ref, hyp, collar=0.0)
    assert (result.missed, result.false_alarm) == (0.0, 0.0)
    assert result.confusion == pytest.approx(2.0)
    assert result.total == pytest.approx(20.0)
    assert result.rate == pytest.approx(0.1)
    assert result.speaker_map == {"A": "x", "B": "y"}


def test_der_collar_removes_time_around_reference_boundaries() -> None:
    # Collars at 0 (clipped to the scored region), 10 and 20: 0.25 + 0.5 + 0.25 s removed.
    # The confusion [10, 12] loses its first 0.25 s.
    ref = [Turn("A", 0, 10), Turn("B", 10, 20)]
    hyp = [Turn("x", 0, 12), Turn("y", 12, 20)]
    result = der(ref, hyp, collar=0.25)
    assert result.total == pytest.approx(19.0)
    assert result.confusion == pytest.approx(1.75)
    assert result.rate == pytest.approx(1.75 / 19.0)


def test_der_boundary_error_inside_collar_is_free() -> None:
    ref = [Turn("A", 0, 10), Turn("B", 10, 20)]
    hyp = [Turn("x", 0, 10.2), Turn("y", 10.2, 20)]
    assert der(ref, hyp, collar=0.0).rate == pytest.approx(0.2 / 20)
    assert der(ref, hyp, collar=0.25).rate == 0.0


def test_der_missed_and_false_alarm() -> None:
    # Reference speech 0-10, hypothesis 2-12: 2 s missed, 2 s false alarm.
    ref = [Turn("A", 0, 10)]
    hyp = [Turn("x", 2, 12)]
    plain = der(ref, hyp, collar=0.0)
    assert (plain.missed, plain.false_alarm, plain.confusion) == pytest.approx((2, 2, 0))
    assert plain.rate == pytest.approx(0.4)
    # Collars [0, 0.25] and [9.75, 10.25] shave 0.25 s off each error and 0.5 s off the total.
    collared = der(ref, hyp, collar=0.25)
    assert (collared.missed, collared.false_alarm) == pytest.approx((1.75, 1.75))
    assert collared.total == pytest.approx(9.5)


def test_der_overlapped_speech() -> None:
    # A 0-10 and B 5-15 overlap for 5 s; one hypothesis speaker covers 0-15.
    # Speaker time 20 s; 5 s missed in the overlap; the unmapped speaker's 5 s alone is
    # confusion (whichever of A or B is mapped, as they tie at 10 s).
    ref = [Turn("A", 0, 10), Turn("B", 5, 15)]
    hyp = [Turn("x", 0, 15)]
    result = der(ref, hyp, collar=0.0)
    assert result.total == pytest.approx(20.0)
    assert result.missed == pytest.approx(5.0)
    assert result.false_alarm == 0.0
    assert result.confusion == pytest.approx(5.0)
    assert result.rate == pytest.approx(0.5)
    # The overlap's second speaker is what one speaker at a time must miss.
    assert result.overlap == pytest.approx(5.0)
    # Three at once for 2 s: two of them beyond the first; a collar is not scored.
    three = [Turn("A", 0, 10), Turn("B", 4, 6), Turn("C", 4, 6)]
    assert der(three, hyp, collar=0.0).overlap == pytest.approx(4.0)
    assert der(three, hyp, collar=0.25).overlap == pytest.approx(3.0)
    assert (der(ref, hyp, collar=0.0) + der(three, hyp, collar=0.0)).overlap == pytest.approx(9.0)


def test_der_speaker_counted_once_when_own_turns_overlap() -> None:
    ref = [Turn("A", 0, 10)]
    hyp = [Turn("x", 0, 6), Turn("x", 4, 10)]
    assert der(ref, hyp, collar=0.0).rate == 0.0


def test_der_uem_limits_scoring() -> None:
    ref = [Turn("A", 0, 10)]
    hyp = [Turn("x", 0, 10), Turn("y", 10, 20)]
    assert der(ref, hyp, collar=0.0).false_alarm == pytest.approx(10.0)
    assert der(ref, hyp, collar=0.0, uem=(0.0, 10.0)).rate == 0.0
    # Only 2-8 scored: 6 s of speech, hypothesis silent there for 3 s.
    partial = der(ref, [Turn("x", 0, 5)], collar=0.0, uem=(2.0, 8.0))
    assert (partial.missed, partial.total) == pytest.approx((3.0, 6.0))


def test_der_invariant_to_labels_and_turn_order() -> None:
    ref = [Turn("A", 0, 4), Turn("B", 3.5, 9), Turn("C", 9.2, 12), Turn("A", 12.1, 15)]
    hyp = [Turn("1", 0, 3.8), Turn("2", 3.8, 9.5), Turn("3", 9.5, 11), Turn("1", 11, 15)]
    base = der(ref, hyp)
    renamed = {"1": "zz", "2": "aa", "3": "mm"}
    shuffled = [Turn(renamed[t.speaker], t.start, t.end) for t in reversed(hyp)]
    other = der(list(reversed(ref)), shuffled)
    assert (other.missed, other.false_alarm, other.confusion, other.total) == pytest.approx(
        (base.missed, base.false_alarm, base.confusion, base.total)
    )
    assert other.speaker_map == {r: renamed[h] for r, h in base.speaker_map.items()}


def test_der_edge_cases() -> None:
    assert der([], []) == DerResult()
    only_hyp = der([], [Turn("x", 0, 1)])
    assert only_hyp.false_alarm == pytest.approx(1.0)
    assert only_hyp.rate == math.inf
    assert der([Turn("A", 0, 1)], []).rate == 1.0
    with pytest.raises(ValueError):
        Turn("A", 2, 1)
    with pytest.raises(ValueError):
        der([Turn("A", 0, 1)], [], collar=-1)


def test_der_aggregate_weights_by_speech() -> None:
    long = der([Turn("A", 0, 90)], [Turn("x", 0, 90)], collar=0.0)
    short = der([Turn("A", 0, 10)], [], collar=0.0)
    assert aggregate([long, short]).rate == pytest.approx(0.1)


# --------------------------------------------------------------------------- readers


def test_read_rttm_text() -> None:
    text = (
        ";; comment\n"
        "SPEAKER rec1 1 0.500 1.900 <NA> <NA> LJ <NA> <NA>\n"
        "SPKR-INFO rec1 1 <NA> <NA> <NA> unknown LJ <NA> <NA>\n"
        "\n"
        "SPEAKER rec2 1 3.0 1.0 <NA> <NA> B <NA> <NA>\n"
    )
    assert read_rttm(text) == {
        "rec1": [Turn("LJ", 0.5, 2.4)],
        "rec2": [Turn("B", 3.0, 4.0)],
    }
    with pytest.raises(ValueError, match="line 1"):
        read_rttm("SPEAKER rec1 1 0.5\n")


def test_read_stm_text() -> None:
    text = (
        ";; comment\n"
        "rec1 1 A 0.5 2.4 <o,f0,male> Hello, world.\n"
        "rec1 1 inter_segment_gap 2.4 3.0\n"
        "rec2 1 B 3.0 4.0 second file\n"
        "rec1 1 B 3.0 4.0\n"
    )
    assert read_stm(text) == [
        StmSegment("A", 0.5, 2.4, "Hello, world."),
        StmSegment("B", 3.0, 4.0, "second file"),
        StmSegment("B", 3.0, 4.0, ""),
    ]
    assert [s.speaker for s in read_stm(text, file_id="rec2")] == ["B"]


def test_speaker_texts_joins_in_time_order() -> None:
    segments = [
        StmSegment("A", 5, 6, "later"),
        StmSegment("A", 0, 1, "first"),
        StmSegment("B", 2, 3, "middle"),
    ]
    assert speaker_texts(segments) == {"A": "first later", "B": "middle"}


# --------------------------------------------------------------------------- recorded data


def test_synthetic_reference_scores_perfectly_against_itself(speech_dir) -> None:
    synthetic = speech_dir / "synthetic" / "synthetic_conv_4spk"
    turns = read_rttm(synthetic.with_suffix(".rttm"))["synthetic_conv_4spk"]
    segments = read_stm(str(synthetic.with_suffix(".stm")))
    assert len(turns) == len(segments) == 15
    assert {t.speaker for t in turns} == {"LJ", "SS_reader", "MFA_michael", "LS_2412"}
    # The two files agree to the millisecond (the RTTM's durations are rounded, so one turn
    # end differs by 1 ms).
    for turn, segment in zip(turns, segments, strict=True):
        assert turn.speaker == segment.speaker
        assert (turn.start, turn.end) == pytest.approx((segment.start, segment.end), abs=0.0011)

    speech = sum(t.end - t.start for t in turns)
    same = der(turns, turns, collar=0.0)
    assert same.rate == 0.0
    assert same.total == pytest.approx(speech)
    assert der(turns, turns).rate == 0.0

    # Relabelled hypothesis: still perfect, and the map recovers the labels.
    relabel = {s: f"spk{i}" for i, s in enumerate(sorted({t.speaker for t in turns}))}
    renamed = [Turn(relabel[t.speaker], t.start, t.end) for t in turns]
    result = der(turns, renamed)
    assert result.rate == 0.0
    assert result.speaker_map == relabel

    # Everything given to one speaker: all but the longest-talking speaker is confusion.
    per_speaker: dict[str, float] = {}
    for t in turns:
        per_speaker[t.speaker] = per_speaker.get(t.speaker, 0.0) + t.end - t.start
    merged = der(turns, [Turn("one", t.start, t.end) for t in turns], collar=0.0)
    assert merged.confusion == pytest.approx(speech - max(per_speaker.values()))

    texts = speaker_texts(segments)
    same_words = cpwer(texts, texts)
    assert same_words.errors == 0
    assert same_words.ref_words == len(normalize_text(" ".join(texts.values())).split())
    shuffled = {f"h{i}": text for i, text in enumerate(reversed(list(texts.values())))}
    assert cpwer(texts, shuffled).errors == 0


# --------------------------------------------------------------------------- the field's scorers


def _perturbed(turns: list[Turn], rng: np.random.Generator) -> list[Turn]:
    """A plausible diarization of ``turns``: edges moved, a turn lost, one relabelled,
    labels renamed, and a false alarm."""
    out = []
    for t in turns:
        if rng.random() < 0.1:
            continue
        a = max(0.0, t.start + rng.uniform(-0.4, 0.4))
        b = max(a + 0.05, t.end + rng.uniform(-0.4, 0.4))
        who = t.speaker if rng.random() > 0.15 else "intruder"
        out.append(Turn(f"h_{who}", a, b))
    out.append(Turn("h_noise", turns[-1].end + 0.5, turns[-1].end + 1.5))
    return out


def test_der_is_pyannote_metrics_with_the_collar_on_each_side(speech_dir) -> None:
    """Our scorer is md-eval's (collar on each side of a boundary); pyannote.metrics splits
    its collar in two, so ours at 0.25 s equals theirs at 0.5 s, to the millisecond."""
    from pyannote.core import Annotation
    from pyannote.core import Segment as Span
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns: list[Turn]) -> Annotation:
        a = Annotation()
        for i, t in enumerate(turns):
            a[Span(t.start, t.end), i] = t.speaker
        return a

    rng = np.random.default_rng(0)
    refs = [
        read_rttm(speech_dir / "Picovoice-falcon/falcon_test.rttm"),
        read_rttm(speech_dir / "synthetic/synthetic_conv_4spk.rttm"),
    ]
    checked = 0
    for rttm in refs:
        turns = [t for ts in rttm.values() for t in ts]
        for _ in range(10):
            hyp = _perturbed(turns, rng)
            for collar in (0.0, 0.25):
                ours = der(turns, hyp, collar=collar)
                theirs = DiarizationErrorRate(collar=2 * collar, skip_overlap=False)(
                    annotation(turns), annotation(hyp), detailed=True
                )
                assert ours.rate == pytest.approx(theirs["diarization error rate"], abs=1e-9)
                assert ours.confusion == pytest.approx(theirs["confusion"], abs=1e-6)
                checked += 1
    assert checked == 40


def test_cpwer_is_meeteval(speech_dir) -> None:
    import meeteval
    from meeteval.io import SegLST

    reference = speaker_texts(read_stm(speech_dir / "synthetic/synthetic_conv_4spk.stm"))
    rng = np.random.default_rng(1)
    for _ in range(10):
        words = {spk: normalize_text(text).split() for spk, text in reference.items()}
        hypothesis: dict[str, str] = {}
        for spk, ws in words.items():
            kept = [w for w in ws if rng.random() > 0.1]  # deletions
            if rng.random() < 0.3:  # a speaker's words given to another
                hypothesis["merged"] = hypothesis.get("merged", "") + " " + " ".join(kept)
            else:
                hypothesis[f"h{spk}"] = " ".join(kept + ["extra"] * int(rng.integers(0, 3)))

        def seglst(texts: dict[str, str]) -> SegLST:
            return SegLST(
                [
                    {"session_id": "s", "speaker": k, "words": normalize_text(v), "start_time": 0}
                    for k, v in texts.items()
                ]
            )

        theirs = meeteval.wer.cpwer(seglst(reference), seglst(hypothesis))["s"]
        ours = cpwer(reference, hypothesis)
        assert (ours.errors, ours.ref_words) == (theirs.errors, theirs.length)
