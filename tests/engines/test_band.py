"""Phone calls (hubbub.engines.cpu.band): told apart from wideband audio, and their
speech found with the VAD thresholds that suit it."""

from __future__ import annotations

import numpy as np

from hubbub.audio import SAMPLE_RATE, HighPass
from hubbub.decode import load_audio
from hubbub.engines.cpu import CpuEngine, CpuEngineConfig
from hubbub.engines.cpu.band import BandCheck
from hubbub.evaluation.conversations import build_conversations, telephone
from hubbub.evaluation.metrics import wer
from hubbub.recordings import transcribe_many

CHUNK = 5120  # the engine's 0.32 s steps


def verdict(audio: np.ndarray) -> bool | None:
    check, highpass = BandCheck(), HighPass()
    for i in range(0, len(audio), CHUNK):
        check.add(highpass(audio[i : i + CHUNK]))
    return check.telephone


def test_a_phone_call_is_told_from_wideband_audio(speech_dir):
    conversation = load_audio(speech_dir / "synthetic/synthetic_conv_4spk.flac")[: 20 * SAMPLE_RATE]
    old_broadcast = load_audio(speech_dir / "openai-whisper/jfk.flac")  # the least bright
    assert verdict(conversation) is False and verdict(old_broadcast) is False
    assert verdict(telephone(conversation)) is True
    assert verdict(telephone(old_broadcast)) is True
    # Silence tells nothing, and neither do the first moments of speech.
    assert verdict(np.zeros(10 * SAMPLE_RATE, np.float32)) is None
    assert verdict(telephone(conversation)[:SAMPLE_RATE]) is None


def test_a_phone_calls_speech_is_transcribed(speech_dir):
    """Several voices through a phone channel: with the usual VAD thresholds whole turns
    go missing (19 of 32 words, measured; 2 with a call's); a session found to be a call
    keeps them."""
    names = [
        "KoljaB-RealtimeSTT/LJ001-0002",
        "cmusphinx-pocketsphinx/cards_005",
        "QuentinFuxa-WhisperLiveKit/7902-96591-0000",
        "Uberi-speech_recognition/english",
        "cmusphinx-pocketsphinx/cards_002",
        "cmusphinx-pocketsphinx/cards_001",
    ]
    gap = np.zeros(SAMPLE_RATE, np.float32)
    turns = [part for n in names for part in (load_audio(speech_dir / f"{n}.flac"), gap)]
    call = telephone(np.concatenate(turns))
    reference = " ".join((speech_dir / f"{n}.txt").read_text() for n in names)
    heard = {}
    for onset, offset in ((0.35, 0.25), (0.5, 0.35)):  # a call's thresholds; the usual ones
        config = CpuEngineConfig(telephone_onset=onset, telephone_offset=offset)
        heard[onset] = transcribe_many(CpuEngine(config), {"call": call})["call"].text
    as_call, as_usual = wer(reference, heard[0.35]), wer(reference, heard[0.5])
    assert as_call.deletions <= 3 and as_call.rate <= 0.25, heard[0.35]
    assert as_usual.deletions >= 3 * max(as_call.deletions, 1), heard


def test_a_calls_first_words_are_cut_again_once_it_is_known_to_be_a_call(speech_dir):
    """A call is known after 2 s of its audio; words said before that were cut with the
    usual thresholds and went missing ("one two three" of this call: 5 words deleted,
    measured); cut again with a call's, they are heard."""
    conversation = build_conversations(speech_dir / "manifest.json", 11)[10]
    reference = " ".join(seg.text for seg in conversation.segments)
    assert reference.lower().startswith("one two three")
    call = telephone(conversation.audio)
    text = transcribe_many(CpuEngine(CpuEngineConfig()), {"call": call})["call"].text
    assert wer(reference, text).deletions <= 2, text
