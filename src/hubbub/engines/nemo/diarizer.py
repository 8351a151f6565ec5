"""One streaming Sortformer step for many sessions at once.

NeMo's ``forward_streaming_step`` pre-encodes its own input; here the pre-encoded chunk
comes in (sessions at their first step and later ones are pre-encoded apart, then
joined), and the rest is NeMo's asynchronous update, in which every session keeps its own
speaker-cache and FIFO fill level. Each session's memory is gathered into one
``StreamingSortformerState`` and scattered back afterwards.
"""

from __future__ import annotations

import torch

from hubbub.engines.nemo.state import DiarMemory


def initial_memory(diar, gating_frames: int, device: torch.device) -> DiarMemory:
    mods = diar.sortformer_modules
    s = mods.init_streaming_state(batch_size=1, async_streaming=True, device=device)
    return DiarMemory(
        spkcache=s.spkcache[0],
        spkcache_preds=s.spkcache_preds[0],
        spkcache_length=s.spkcache_lengths[0],
        fifo=s.fifo[0],
        fifo_length=s.fifo_lengths[0],
        mean_sil_emb=s.mean_sil_emb[0],
        n_sil_frames=s.n_sil_frames[0],
        recent=torch.zeros((gating_frames, mods.n_spk), device=device),
    )


def _gather(memories: list[DiarMemory]):
    from nemo.collections.asr.modules.sortformer_modules import StreamingSortformerState

    s = StreamingSortformerState()
    s.spkcache = torch.stack([m.spkcache for m in memories])
    s.spkcache_preds = torch.stack([m.spkcache_preds for m in memories])
    s.spkcache_lengths = torch.stack([m.spkcache_length for m in memories])
    s.fifo = torch.stack([m.fifo for m in memories])
    s.fifo_lengths = torch.stack([m.fifo_length for m in memories])
    s.mean_sil_emb = torch.stack([m.mean_sil_emb for m in memories])
    s.n_sil_frames = torch.stack([m.n_sil_frames for m in memories])
    return s


def concat_and_pad(
    parts: list[torch.Tensor], lengths: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """NeMo's ``SortformerModules.concat_and_pad`` as one gather instead of a Python loop
    over sessions (each slice there reads a length off the device: a sync per session).

    Row b of the result is the first ``lengths[i][b]`` frames of each ``parts[i][b]`` in
    turn, then zeros; returns it and the total lengths.
    """
    joined = torch.cat(parts, dim=1)  # (B, sum of maxima, d)
    sizes = torch.stack(lengths, dim=1)  # (B, parts)
    total = sizes.sum(1)
    width = int(total.max())
    pos = torch.arange(width, device=joined.device)[None, :]  # (1, W)
    starts = torch.cumsum(sizes, 1) - sizes  # where each part begins in the output
    offsets = torch.cumsum(torch.tensor([0] + [p.shape[1] for p in parts[:-1]]), 0)
    source = torch.zeros_like(pos.expand(len(joined), -1))
    for i in range(len(parts)):  # parts, not sessions: three
        inside = (pos >= starts[:, i : i + 1]) & (pos < starts[:, i : i + 1] + sizes[:, i : i + 1])
        source = torch.where(inside, pos - starts[:, i : i + 1] + int(offsets[i]), source)
    out = torch.gather(joined, 1, source[..., None].expand(-1, -1, joined.shape[2]))
    valid = pos < total[:, None]
    return out * valid[..., None].to(out.dtype), total


def diarize_step(diar, chunk: torch.Tensor, memories: list[DiarMemory]) -> torch.Tensor:
    """Advance every session by its pre-encoded chunk (B, F, d); return (B, F, n_spk).

    Updates ``memories`` in place with copies (no view keeps a batch tensor alive).
    """
    mods = diar.sortformer_modules
    state = _gather(memories)
    lengths = torch.full((chunk.shape[0],), chunk.shape[1], device=chunk.device)
    embs, emb_lengths = concat_and_pad(
        [state.spkcache, state.fifo, chunk.to(state.spkcache.dtype)],
        [state.spkcache_lengths, state.fifo_lengths, lengths],
    )
    encoded, encoded_lengths = diar.frontend_encoder(
        processed_signal=embs, processed_signal_length=emb_lengths, bypass_pre_encode=True
    )
    preds = diar.forward_infer(emb_seq=encoded, emb_seq_length=encoded_lengths)
    preds = mods.apply_mask_to_preds(preds, encoded_lengths)
    state, chunk_preds = mods.streaming_update_async(
        streaming_state=state, chunk=chunk.float(), chunk_lengths=lengths, preds=preds.float()
    )
    for i, m in enumerate(memories):
        m.spkcache = state.spkcache[i].float().clone()
        m.spkcache_preds = state.spkcache_preds[i].float().clone()
        m.spkcache_length = state.spkcache_lengths[i].clone()
        m.fifo = state.fifo[i].float().clone()
        m.fifo_length = state.fifo_lengths[i].clone()
        m.mean_sil_emb = state.mean_sil_emb[i].float().clone()
        m.n_sil_frames = state.n_sil_frames[i].clone()
        m.recent = torch.cat([m.recent, chunk_preds[i].float()])[-len(m.recent) :].clone()
    return chunk_preds.float()
