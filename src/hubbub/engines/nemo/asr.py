"""One multitalker ASR step for every (session, active speaker) row at once.

All rows of a session share its pre-encoded chunk; what makes a row that speaker's is the
speaker kernel, fed by the diarizer's activity for the speaker (``spk``) and for everyone
else (``bg``), and the speaker's own encoder caches and decoder state. Speaker targets
are model-global state in NeMo: they are set for exactly this call and cleared after it.

The decoder continues from each row's saved state with an empty hypothesis, so what comes
back is only this chunk's tokens: no hypothesis grows over the session, and nothing is
re-detokenised.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from hubbub.engines.nemo.state import SpeakerSlot


@dataclass
class Rows:
    """R rows of one step: row i is speaker ``slots[i]`` of some session."""

    slots: list[SpeakerSlot]
    chunk: torch.Tensor  # (R, F, d) pre-encoded features of each row's session
    spk: torch.Tensor  # (R, F) the row's speaker's activity
    bg: torch.Tensor  # (R, F) 1 where another speaker of the session is active

    def __getitem__(self, part: slice) -> Rows:
        return Rows(self.slots[part], self.chunk[part], self.spk[part], self.bg[part])


@dataclass
class RowTokens:
    ids: list[int]
    frames: list[int]  # frame of each token within this chunk, 0..F-1


def initial_slot(asr, index: int, device: torch.device) -> SpeakerSlot:
    channel, time, length = asr.encoder.get_initial_cache_state(batch_size=1, device=device)
    return SpeakerSlot(index, channel[:, 0], time[:, 0], length[0])


def asr_step(asr, rows: Rows, batch_limit: int) -> list[RowTokens]:
    out: list[RowTokens] = []
    for start in range(0, len(rows.slots), batch_limit):
        out += _forward(asr, rows[start : start + batch_limit])
    return out


def _forward(asr, rows: Rows) -> list[RowTokens]:
    from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis

    slots, chunk = rows.slots, rows.chunk
    lengths = torch.full((len(slots),), chunk.shape[1], device=chunk.device, dtype=torch.long)
    asr.set_speaker_targets(rows.spk, rows.bg)
    try:
        encoded, encoded_len, channel, time, cache_len = asr.encoder.cache_aware_stream_step(
            processed_signal=chunk,
            processed_signal_length=lengths,
            cache_last_channel=torch.stack([s.cache_channel for s in slots], dim=1),
            cache_last_time=torch.stack([s.cache_time for s in slots], dim=1),
            cache_last_channel_len=torch.stack([s.cache_len for s in slots]),
            keep_all_outputs=False,
            bypass_pre_encode=True,
        )
    finally:
        asr.clear_speaker_targets()
    partial = [Hypothesis(score=0.0, y_sequence=None, dec_state=s.dec_state) for s in slots]
    hyps = asr.decoding.rnnt_decoder_predictions_tensor(
        encoder_output=encoded,
        encoded_lengths=encoded_len,
        return_hypotheses=True,
        partial_hypotheses=partial,
    )
    result = []
    for i, (slot, hyp) in enumerate(zip(slots, hyps, strict=True)):
        ids = _ints(hyp.y_sequence)
        frames = [t - slot.frames for t in _ints(hyp.timestamp)]
        slot.frames += int(encoded_len[i])
        slot.dec_state = _own(hyp.dec_state)
        # Copies, so that no slot keeps the whole batch's cache tensors alive.
        slot.cache_channel = channel[:, i].float().clone()
        slot.cache_time = time[:, i].float().clone()
        slot.cache_len = cache_len[i].clone()
        # Decoders without per-token frames: the chunk's last frame is the safe guess.
        frames = (frames + [int(encoded_len[i]) - 1] * len(ids))[: len(ids)]
        result.append(RowTokens(ids, frames))
    return result


def _ints(values) -> list[int]:
    if values is None:
        return []
    if isinstance(values, torch.Tensor):
        return [int(v) for v in values.flatten().tolist()]
    if isinstance(values, dict):  # some decoders return {"timestep": [...]}
        return _ints(values.get("timestep"))
    return [int(v) for v in values]


def _own(value: Any) -> Any:
    """A copy of a decoder state whose tensors are its own, not views of the batch's."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, list | tuple):
        return type(value)(_own(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value, **{f.name: _own(getattr(value, f.name)) for f in dataclasses.fields(value)}
        )
    return value
