"""Offline scoring used by ``hubbub eval``: WER, cpWER and DER against reference files."""

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

__all__ = [
    "DerResult",
    "StmSegment",
    "Turn",
    "WerResult",
    "aggregate",
    "cpwer",
    "der",
    "normalize_text",
    "read_rttm",
    "read_stm",
    "speaker_texts",
    "wer",
]
