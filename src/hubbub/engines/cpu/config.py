"""Every knob of the CPU engine. Reached from settings as ``HUBBUB_CPU__<FIELD>`` (and
``HUBBUB_CPU__UTTERANCES__<FIELD>``); the defaults are the measured ones."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hubbub.protocol import SpeakerCap


class UtteranceConfig(BaseModel):
    """How speech probabilities become utterances (``HUBBUB_CPU__UTTERANCES__*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    onset: float = Field(0.5, ge=0, le=1, description="VAD probability that opens one")
    offset: float = Field(0.35, ge=0, le=1, description="below this a frame is silence")
    min_silence_s: float = Field(0.5, gt=0, le=10, description="silence that closes one")
    speech_pad_s: float = Field(0.3, ge=0, le=2, description="audio kept before an onset")
    min_speech_s: float = Field(0.25, ge=0, le=10, description="shorter ones are dropped")
    max_utterance_s: float = Field(15.0, ge=2, le=30, description="cut when longer")
    cut_search_s: float = Field(2.0, gt=0, le=10, description="where a cut may fall")


class CpuEngineConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(
        "tiny.en",
        description="Whisper model: a CTranslate2 folder, 'tiny.en' (bundled), 'base' (the "
        "'base' extra, multilingual), or a faster-whisper name (downloaded once)",
    )
    compute_type: str = Field("int8", description="CTranslate2 compute type")
    threads: int = Field(2, ge=1, le=256, description="CPU threads for Whisper")
    beam_size: int = Field(5, ge=1, le=16, description="beam width for finals")
    # Finals are decoded on windows of at least this many seconds, partials on the
    # smallest that fit. Whisper was trained on 30 s windows; on wer_single finals on
    # 5 s+ / 12 s+ / 18 s+ / 30 s windows gave 39 / 37 / 33 / 36 word errors of 327
    # (whole-file: 32), and an 18 s window costs half of a 30 s one (131 vs 262 ms).
    final_window_s: float = Field(
        18.0, ge=5.0, le=30.0, description="shortest Whisper window for finals"
    )
    # The open utterance is decoded again every partial_interval_s: its partial text, and
    # the words two decodes in a row agree on turn final (hubbub.engines.cpu.commits).
    # Chosen on the tuning half of wer_single (hubbub.evaluation.splits) streamed as one
    # session (bench/commit_policy.py; word errors of ~160, final p50 after the word):
    # 1.0 s / greedy: 25, 1.5 s; 1.0 s / beam 5: 25, 1.5 s; 0.64 s / beam 5: 24, 1.2 s.
    # Greedy decodes agree on their own slips (an utterance's first "And" dropped,
    # "Corbus"), which can then no longer be mended. Then commit_after_s: 0 s: 24, 1.15 s;
    # 1.5 s: 21, 1.22 s; 2 s: 23, 1.38 s (holdback 0.5 s instead of 0.3: 23, 1.21 s):
    # Whisper on an utterance's first second guesses ("And so am I"). Finals only at
    # utterance ends: 21, 2.4 s. On the test half: 16 errors of 157, 1.26 s, against
    # 11, 3.24 s at utterance ends: commit="utterance" is the accurate, slower choice.
    partial_interval_s: float = Field(
        0.64, gt=0, description="how often the open utterance is decoded again"
    )
    commit: Literal["agreement", "utterance"] = Field(
        "agreement",
        description="when words turn final: 'agreement' (two decodes in a row agree, while "
        "the utterance goes on) or 'utterance' (only when it ends)",
    )
    commit_holdback_s: float = Field(
        0.3, ge=0, le=5, description="audio that must follow a word before it turns final"
    )
    commit_after_s: float = Field(
        1.5, ge=0, le=30, description="no word turns final before its utterance is this long"
    )
    refresh_window_s: float = Field(
        5.0, ge=5.0, le=30.0, description="shortest Whisper window for the open utterance"
    )
    refresh_beam_size: int = Field(
        5, ge=1, le=16, description="beam width for the open utterance (1: greedy)"
    )
    min_partial_s: float = Field(0.6, ge=0, description="no partial for a shorter utterance")
    # Speakers (hubbub.engines.cpu.phrases, .speakers, .spectral): chosen on the tuning
    # half of the shared conversations (hubbub.evaluation.splits).
    phrase_gap_s: float = Field(
        0.25, ge=0, le=2, description="a pause this long between words may change speaker"
    )
    min_phrase_s: float = Field(0.6, ge=0, le=5, description="shorter phrases join a neighbour")
    split_phrase_s: float = Field(
        3.0, ge=1, le=30, description="phrases this long are also split where the voice changes"
    )
    embed_window_s: float = Field(1.0, ge=0.5, le=3, description="voice-change window")
    embed_stride_s: float = Field(0.25, ge=0.05, le=1.5, description="voice-change step")
    change_threshold: float = Field(
        0.65, ge=-1, le=1, description="cosine below which a long phrase splits in two"
    )
    bridge_s: float = Field(
        1.0, ge=0, le=5, description="a pause this short between one speaker's finals is theirs"
    )
    speaker_threshold: float = Field(
        0.7, ge=-1, le=1, description="prior cosine to join a known speaker (adapts per session)"
    )
    min_new_speaker_s: float = Field(
        1.0, ge=0, le=10, description="shorter segments never found a speaker"
    )
    cluster_cos: float = Field(
        0.7, ge=-1, le=1, description="second looks: mean cosine that makes one speaker"
    )
    short_speaker_s: float = Field(
        2.0, ge=0, le=30, description="a speaker with less speech than this, and..."
    )
    short_join_cos: float = Field(
        0.6, ge=-1, le=1, description="...at least this like the only other, is that other"
    )
    short_margin: float = Field(
        0.18, ge=0, le=2, description="...or this much more like one other than the next"
    )
    refine_every_s: float = Field(
        20.0, gt=0, description="speech between second looks at all speakers"
    )
    max_speaker_items: int = Field(
        400, ge=10, le=10_000, description="segments kept per session for second looks"
    )
    max_speakers: SpeakerCap = Field(8, description="speaker labels per session at most")
    chunk_s: float = Field(
        0.32, gt=0, le=2, description="audio per step: how late an utterance end is seen"
    )
    highpass_hz: float = Field(50.0, ge=0, le=300, description="high-pass before the VAD (0: off)")
    # Telephone-band sessions (hubbub.engines.cpu.band): Silero scores their speech lower.
    # Chosen on the tuning half of the built conversations through a phone channel
    # (`hubbub eval --built 20 --telephone`, bench/speaker_sweep.py), onset / offset: DER,
    # live DER, WER: 0.5 / 0.35 (the usual): 11.6%, 15.4%, 12.9%; 0.35 / 0.25: 11.2%, 17.3%,
    # 11.7%; 0.25 / 0.15: 12.2%, 20.8%, 10.8%; 0.2 / 0.1: 12.8%, 23.9%, 10.2%. Lower ones
    # find more words but join more turns into one utterance (more confused speakers).
    telephone_db: float = Field(
        -50.0, ge=-200, le=0, description="less energy above 4.2 kHz than this: a phone call"
    )
    telephone_onset: float = Field(0.35, ge=0, le=1, description="VAD onset on a phone call")
    telephone_offset: float = Field(0.25, ge=0, le=1, description="VAD offset on a phone call")
    utterances: UtteranceConfig = Field(default_factory=UtteranceConfig)
