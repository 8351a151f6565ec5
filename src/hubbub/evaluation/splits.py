"""Which recordings parameters may be chosen on, and which only report them.

The shared multi-speaker data is split once, here, into a tuning half and a test half:
every threshold of the speaker pipeline is picked on ``tune`` alone, and ``test`` figures
are reported beside them. Conversations built from single-speaker clips at test time are
split the same way, by their number. The single-speaker clips alternate too (every other
one in the manifest's order is ``tune``): when words turn final, and how often the open
utterance is decoded again, were chosen on those.
"""

from __future__ import annotations

import re

TUNE, TEST = "tune", "test"
FIXED = {
    "Picovoice-falcon/falcon_test": TUNE,
    "faster-whisper/stereo_diarization": TUNE,
    "synthetic/synthetic_conv_4spk": TEST,
    # wer_single, every other clip of the manifest
    "openai-whisper/jfk": TUNE,
    "cmusphinx-pocketsphinx/sense_and_sensibility_01_austen_64kb-0880": TUNE,
    "cmusphinx-pocketsphinx/sense_and_sensibility_01_austen_64kb-0920": TUNE,
    "cmusphinx-pocketsphinx/goforward": TUNE,
    "cmusphinx-pocketsphinx/cards_002": TUNE,
    "cmusphinx-pocketsphinx/cards_004": TUNE,
    "KoljaB-RealtimeSTT/LJ001-0002": TUNE,
    "KoljaB-RealtimeSTT/LJ001-0006": TUNE,
    "KoljaB-RealtimeSTT/LJ001-0013": TUNE,
    "QuentinFuxa-WhisperLiveKit/7902-96591-0000": TUNE,
    "lhotse/LJ002-0035": TUNE,
    "MFA/cold_corpus": TUNE,
    "Uberi-speech_recognition/english": TUNE,
}


def split_of(entry_id: str) -> str:
    """``tune`` or ``test`` for a manifest id (AMI-style excerpts alternate by number;
    built conversations too; single-speaker clips as listed; everything else is test)."""
    if entry_id in FIXED:
        return FIXED[entry_id]
    number = re.search(r"(\d+)$", entry_id)
    if number and ("debug_trn" in entry_id or entry_id.startswith("built/")):
        return TUNE if int(number.group(1)) % 2 == 0 else TEST
    return TEST
