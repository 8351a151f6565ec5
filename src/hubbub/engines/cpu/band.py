"""Is a session telephone audio? Its energy above 4.2 kHz, as a share of all of it.

A call that went through a telephone channel (300-3400 Hz, sampled at 8 kHz) holds next
to nothing above 4 kHz once resampled to 16 kHz: what a resampler lets through, -60 dB
or less for a decent one (-120 dB for the clips of the shared data put through
``hubbub.evaluation.conversations.telephone``). Every wideband recording there holds -44
dB or more (the lowest is JFK's 1961 broadcast; the next -33 dB). Silero's speech
probabilities run lower on telephone-band speech (median 0.6 instead of 0.96 on the same
speech): with the usual thresholds whole turns of a call went missing, so a session
known to be telephone-band cuts utterances with lower ones (``CpuEngineConfig.telephone_*``),
and the seconds heard before that was known again, if nothing of them was given out
(``hubbub.engines.cpu.utterances.Heard``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hubbub.audio import SAMPLE_RATE

EDGE_HZ = 4200.0  # past the 4 kHz edge, and the transition of a resampler's filter
LOW_HZ = 100.0
SIGNAL_RMS = 1e-3  # chunks quieter than -60 dBFS tell nothing about the band


@dataclass
class BandCheck:
    """Energy above ``EDGE_HZ`` and in all, summed over a session's audio with signal,
    until ``decide_after_s`` of it gives a verdict that then stays."""

    threshold_db: float = -50.0
    decide_after_s: float = 2.0
    high: float = 0.0
    total: float = 0.0
    seconds: float = 0.0
    telephone: bool | None = None  # None: not known yet

    def add(self, audio: np.ndarray) -> bool | None:
        if self.telephone is not None or len(audio) == 0:
            return self.telephone
        if float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) < SIGNAL_RMS:
            return None
        # A Hann window: a bare chunk's edges leak its loud low tones up the spectrum.
        power = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
        freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
        self.high += float(power[freqs >= EDGE_HZ].sum())
        self.total += float(power[freqs >= LOW_HZ].sum())
        self.seconds += len(audio) / SAMPLE_RATE
        if self.seconds >= self.decide_after_s and self.total > 0:
            self.telephone = bool(10 * np.log10(self.high / self.total + 1e-12) < self.threshold_db)
        return self.telephone
