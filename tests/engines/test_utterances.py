"""Utterance cutting from VAD scores: where a long stretch of speech is cut."""

import itertools

import numpy as np

from hubbub.audio import SAMPLE_RATE
from hubbub.engines.cpu.config import UtteranceConfig
from hubbub.engines.cpu.utterances import Heard, UtteranceTracker
from hubbub.engines.cpu.vad import FRAME


def _run(probs: list[float], cfg: UtteranceConfig) -> tuple[list, np.ndarray]:
    """Feed audio whose samples count up (so pieces can be traced), 10 frames at a time."""
    audio = np.arange(len(probs) * FRAME, dtype=np.float32)
    tracker, out = UtteranceTracker(cfg), []
    for i in range(0, len(probs), 10):
        out += tracker.push(audio[i * FRAME : (i + 10) * FRAME], np.array(probs[i : i + 10]))
    return out + tracker.flush(), audio


def test_a_long_utterance_is_cut_at_its_quietest_moment_and_nothing_is_lost():
    cfg = UtteranceConfig(max_utterance_s=3.0, cut_search_s=1.0)
    frames = int(8 * SAMPLE_RATE / FRAME)  # 8 s of speech without a pause
    probs = [0.95] * frames
    dip = int(2.5 * SAMPLE_RATE / FRAME)  # a breath, 0.5 s before the bound
    probs[dip] = 0.2
    utts, audio = _run(probs, cfg)

    # The first cut falls in the breath, not at 3.0 s (the middle of a word).
    assert utts[0].start == 0
    assert utts[0].start + len(utts[0].audio) == dip * FRAME + FRAME // 2
    # Each piece starts where the last ended, holds exactly that audio, and stays in bounds.
    for prev, nxt in itertools.pairwise(utts):
        assert nxt.start == prev.start + len(prev.audio)
    assert utts[-1].start + len(utts[-1].audio) == len(audio)
    assert np.array_equal(np.concatenate([u.audio for u in utts]), audio)
    assert all(u.duration_s <= cfg.max_utterance_s for u in utts)


def test_without_a_quiet_moment_the_cut_comes_at_the_bound():
    cfg = UtteranceConfig(max_utterance_s=3.0, cut_search_s=1.0)
    utts, _ = _run([0.95] * int(4 * SAMPLE_RATE / FRAME), cfg)
    first_end = utts[0].start + len(utts[0].audio)
    assert 3.0 - FRAME / SAMPLE_RATE <= first_end / SAMPLE_RATE <= 3.0


def test_heard_audio_is_cut_again_with_other_thresholds():
    """A phone call's speech scores low: what the usual thresholds missed, the heard
    chunks cut again with a call's find, at the same samples; and only the latest
    seconds are kept."""
    usual, call = UtteranceConfig(), UtteranceConfig(onset=0.35, offset=0.25)
    second = SAMPLE_RATE // FRAME
    probs = [0.0] * 2 * second + [0.4] * second + [0.0] * 2 * second  # speech at 2-3 s
    audio = np.arange(len(probs) * FRAME, dtype=np.float32)
    tracker, heard, closed = UtteranceTracker(usual), Heard(max_s=4.0), []
    for i in range(0, len(probs), 10):
        chunk, scores = audio[i * FRAME : (i + 10) * FRAME], np.array(probs[i : i + 10])
        heard.add(tracker, chunk, scores)
        closed += tracker.push(chunk, scores)
    assert closed == [] and tracker.open_utterance() is None
    assert heard.holds(tracker)

    again, found = heard.recut(call)
    assert len(found) == 1 and again.open_utterance() is None
    start = 2 * second * FRAME - int(call.speech_pad_s * SAMPLE_RATE)
    assert found[0].start == start
    assert np.array_equal(found[0].audio, audio[start : found[0].end])
    assert found[0].end_s >= 3.0
    assert 4.0 * SAMPLE_RATE <= heard.samples < 4.0 * SAMPLE_RATE + 10 * FRAME
