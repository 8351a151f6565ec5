"""A three-voice conversation made at test time, streamed through the CPU engine.

The voices are synthetic (espeak-ng/MBROLA and Piper), so the reference is exact: who
spoke when, and what they said. The engine must find exactly three speakers, keep each
voice's label when it comes back, and get each turn's words right.
"""

from __future__ import annotations

import numpy as np
import pytest

from hubbub.engines.base import ChunkInput, SessionOptions
from hubbub.evaluation.metrics import wer
from hubbub.recordings import transcribe_many
from hubbub.transcript import Transcript, Word

from support.voices import Conversation, Turn, available_voices, make_conversation

# Distinct sentences, each long enough (>= 2.5 s spoken) for a reliable speaker embedding.
LINES = [
    "Good morning everyone, thank you for joining the planning meeting today.",
    "Thanks. I finished the budget review and the numbers look better than last year.",
    "That is great news. The new warehouse in the north is almost ready to open.",
    "Wonderful. Can we move the opening to the second week of March?",
    "I think so, but we still need to hire two more drivers before then.",
    "I can post the job advert this afternoon and start interviews on Monday.",
]
ORDER = [0, 1, 2, 0, 1, 2]  # every voice speaks, then comes back
GAP_S = 0.8
MAX_TURN_WER = 0.35


@pytest.fixture(scope="module")
def conversation() -> Conversation:
    voices = available_voices()
    assert len(voices) >= 3, f"only {voices} work: run scripts/install-test-voices.sh"
    turns = [(voices[v], line) for v, line in zip(ORDER, LINES, strict=True)]
    conv = make_conversation(turns, gap_s=GAP_S, pad_s=0.5)
    for t in conv.turns:
        assert t.end - t.start >= 2.5, f"turn too short for a reliable embedding: {t}"
    return conv


@pytest.fixture(scope="module")
def transcript(cpu_engine, conversation: Conversation) -> Transcript:
    transcripts = transcribe_many(cpu_engine, {"conv": conversation.audio})
    return transcripts["conv"]


def _words_in(transcript: Transcript, turn: Turn) -> list[tuple[str, Word]]:
    """(speaker, word) for every final word whose middle lies in the turn (or its gaps)."""
    lo, hi = turn.start - GAP_S / 2, turn.end + GAP_S / 2
    return [
        (seg.speaker, w)
        for seg in transcript.segments
        for w in seg.words
        if lo <= (w.start + w.end) / 2 < hi
    ]


def _describe(transcript: Transcript) -> str:
    return "\n".join(
        f"{s.speaker} {s.start:6.2f}-{s.end:6.2f} {s.text}" for s in transcript.segments
    )


def test_three_speakers_found(transcript: Transcript) -> None:
    assert len(transcript.speakers) == 3, _describe(transcript)


def test_speakers_in_the_right_order(conversation: Conversation, transcript: Transcript) -> None:
    # Map hypothesis labels to voices by first appearance, then check every turn.
    label_of: dict[str, str] = {}
    got = []
    for turn in conversation.turns:
        speakers = [spk for spk, _ in _words_in(transcript, turn)]
        assert speakers, f"no words for {turn}\n{_describe(transcript)}"
        majority = max(set(speakers), key=speakers.count)
        # A turn belongs to one speaker: no word of it may go to another label.
        assert set(speakers) == {majority}, (turn, speakers, _describe(transcript))
        label_of.setdefault(turn.speaker, majority)
        got.append(majority)
    assert len(set(label_of.values())) == 3, (label_of, _describe(transcript))
    assert got == [label_of[t.speaker] for t in conversation.turns], _describe(transcript)


def test_words_of_every_turn(conversation: Conversation, transcript: Transcript) -> None:
    for turn in conversation.turns:
        hyp = " ".join(w.text.strip() for _, w in _words_in(transcript, turn))
        result = wer(turn.text, hyp)
        assert result.rate <= MAX_TURN_WER, (turn.text, hyp, result)


def test_no_words_outside_the_turns(conversation: Conversation, transcript: Transcript) -> None:
    placed = sum(len(_words_in(transcript, t)) for t in conversation.turns)
    total = sum(len(s.words) for s in transcript.segments)
    assert placed == total, _describe(transcript)


def test_partials_refresh_about_every_second(cpu_engine, conversation: Conversation) -> None:
    """While a voice speaks, what the page shows of it changes every ~1 s of audio: new
    partial text, or words that turned final."""
    session = cpu_engine.open_session("partials", SessionOptions())
    chunk = cpu_engine.chunk_samples
    shown: list[tuple[float, float, str]] = []  # the partial tail last seen
    gaps: list[float] = []
    fresh_at: float | None = None  # when something new was last shown, while speaking
    audio = conversation.audio
    for i in range(0, len(audio), chunk):
        piece = audio[i : i + chunk]
        upd = cpu_engine.step([ChunkInput(session, piece, i + chunk >= len(audio))])[0]
        assert all(p.text.strip() for p in upd.partials)
        tail = [(p.start, p.end, p.text) for p in upd.partials]
        if upd.idle:
            fresh_at = None
        elif upd.finals or tail != shown:
            if fresh_at is not None:
                gaps.append(session.audio_s - fresh_at)
            fresh_at = session.audio_s
        shown = tail
    cpu_engine.close_session(session)
    assert len(gaps) >= 10, gaps
    assert float(np.median(gaps)) <= 1.0, gaps
