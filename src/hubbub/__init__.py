"""hubbub: self-hosted live multi-speaker transcription.

For library use, the same small surface the CLI stands on::

    import hubbub

    t = hubbub.transcribe("meeting.wav", max_speakers=4)   # -> hubbub.Transcript
    for seg in t.segments:
        print(f"{seg.start:7.2f}  {t.name(seg.speaker)}: {seg.text}")
    print(hubbub.export(t, "srt"))

    # A running transcriber (or web app), live, surviving dropped connections:
    client = hubbub.TranscriberClient("http://127.0.0.1:8765")
    stream = await client.open_resumable()

Names are imported when first used, so ``import hubbub`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "transcribe": "hubbub.recordings",
    "Transcript": "hubbub.transcript",
    "Segment": "hubbub.transcript",
    "Word": "hubbub.transcript",
    "export": "hubbub.transcript",
    "Settings": "hubbub.settings",
    "TranscriberClient": "hubbub.client",
    "TranscriberError": "hubbub.client",
}
__all__ = [
    "Segment",
    "Settings",
    "TranscriberClient",
    "TranscriberError",
    "Transcript",
    "Word",
    "__version__",
    "export",
    "transcribe",
]

if TYPE_CHECKING:
    from hubbub.client import TranscriberClient, TranscriberError
    from hubbub.recordings import transcribe
    from hubbub.settings import Settings
    from hubbub.transcript import Segment, Transcript, Word, export


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hubbub' has no attribute {name!r}")
