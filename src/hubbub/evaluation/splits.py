"""Which recordings parameters may be chosen on, and which only report them.

The shared multi-speaker data is split once, here, into a tuning half and a test half:
every threshold of the speaker pipeline is picked on ``tune`` alone, and ``test`` figures
are reported beside them. Conversations built from single-speaker clips at test time are
split the same way, by their number.
"""

from __future__ import annotations

import re

TUNE, TEST = "tune", "test"
FIXED = {
    "Picovoice-falcon/falcon_test": TUNE,
    "faster-whisper/stereo_diarization": TUNE,
    "synthetic/synthetic_conv_4spk": TEST,
}


def split_of(entry_id: str) -> str:
    """``tune`` or ``test`` for a manifest id (AMI-style excerpts alternate by number;
    built conversations too; everything else is test)."""
    if entry_id in FIXED:
        return FIXED[entry_id]
    number = re.search(r"(\d+)$", entry_id)
    if number and ("debug_trn" in entry_id or entry_id.startswith("built/")):
        return TUNE if int(number.group(1)) % 2 == 0 else TEST
    return TEST
