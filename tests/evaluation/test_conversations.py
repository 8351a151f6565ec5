"""Conversations built from real clips (hubbub.evaluation.conversations), as `hubbub eval
--built N [--telephone]` scores them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hubbub.audio import SAMPLE_RATE
from hubbub.engines.cpu.band import BandCheck
from hubbub.evaluation.runner import built
from hubbub.evaluation.splits import split_of


def test_built_conversations_have_exact_references_and_a_phone_version(speech_dir: Path):
    recordings = built(speech_dir / "manifest.json", 3, telephone=True)
    wide = [r for r in recordings if r.category == "built_conversations"]
    calls = [r for r in recordings if r.category == "built_telephone"]
    assert [r.id for r in wide] == [f"built/conversation_{k:02d}" for k in range(3)]
    assert [r.id for r in calls] == [f"built/telephone/conversation_{k:02d}" for k in range(3)]
    # a conversation and its call are one half of the data, and score against one reference
    assert (
        [split_of(r.id) for r in wide]
        == [split_of(r.id) for r in calls]
        == [
            "tune",
            "test",
            "tune",
        ]
    )
    for k, (conversation, call) in enumerate(zip(wide, calls, strict=True)):
        assert conversation.speakers == 2 + k == len({t.speaker for t in conversation.turns})
        assert call.turns == conversation.turns and call.words == conversation.words
        audio, phoned = conversation.load(), call.load()
        assert len(audio) == len(phoned) >= conversation.turns[-1].end * SAMPLE_RATE
        starts = [t.start for t in conversation.turns]
        assert starts == sorted(starts)
        # the call keeps the voice's level, loses what a phone line cannot carry
        level = 20 * np.log10(np.std(phoned) / np.std(audio))
        assert -8 < level < 1
        for samples, is_call in ((audio, False), (phoned, True)):
            check = BandCheck()
            check.add(samples)
            assert check.telephone is is_call
