"""Audio released at the pace of speech: the one clock for every real-time sender.

``hubbub stream``, the load test, the benchmarks and ``transcribe(realtime=True)`` send
audio no faster than it would have been spoken; they all ask a ``Pacer`` when."""

from __future__ import annotations

import asyncio
import time


class Pacer:
    """Audio at time ``t`` of a stream is due ``t / speed`` seconds after the first call
    (``speed`` <= 0: as fast as possible)."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self._t0: float | None = None

    def delay(self, audio_s: float) -> float:
        """Seconds to wait before sending the audio that starts at ``audio_s``."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        if self.speed <= 0:
            return 0.0
        return max(0.0, self._t0 + audio_s / self.speed - now)

    def wait(self, audio_s: float) -> None:
        time.sleep(self.delay(audio_s))

    async def until(self, audio_s: float) -> None:
        await asyncio.sleep(self.delay(audio_s))

    @property
    def elapsed_s(self) -> float:
        """Wall seconds since the first call (0 before it)."""
        return 0.0 if self._t0 is None else time.monotonic() - self._t0
