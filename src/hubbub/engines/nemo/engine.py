"""The NeMo engine: streaming Sortformer + multitalker Parakeet, one batched step.

A step advances every session in the batch by one chunk:
  1. each session's rolling PCM window -> mel frames, all sessions in one call;
  2. both models' pre-encoders (sessions at their first step apart from later ones);
  3. the diarizer, batched over sessions -> speaker activity per 80 ms frame;
  4. cache gating: a speaker's ASR instance runs while heard in the last chunks;
  5. the ASR, batched over (session x active speaker) rows, each with its speaker kernel
     targets, its own caches and decoder state;
  6. new tokens -> words per speaker; each complete word becomes final (or, with
     commit='sentence', finished sentences and pauses do).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hubbub.audio import SAMPLE_RATE
from hubbub.engines.base import (
    ChunkInput,
    Engine,
    EngineSession,
    EngineUpdate,
    SessionOptions,
)
from hubbub.engines.nemo.asr import Rows, asr_step, initial_slot
from hubbub.engines.nemo.config import NemoEngineConfig
from hubbub.engines.nemo.diarizer import diarize_step, initial_memory
from hubbub.engines.nemo.features import LAG, ChunkGeometry, MelFrontend, PcmWindow
from hubbub.engines.nemo.models import Models, load_models
from hubbub.engines.nemo.presets import FRAME_S, MEL_HOP, preset
from hubbub.engines.nemo.state import NemoSession, SpeakerSlot
from hubbub.engines.nemo.words import SpeakerWords, Token
from hubbub.transcript import Segment

log = logging.getLogger(__name__)

# A flush pads the last chunk with silence; when less than this much silence follows the
# last real sample, its final mel frames (which trail the audio by LAG frames plus half an
# STFT window) are still unread, and one more chunk of silence is stepped.
FLUSH_TAIL = LAG * MEL_HOP + 256


@dataclass
class _Advance:
    session: NemoSession
    audio: np.ndarray  # exactly one chunk
    pad_before: int  # the session's padding before this step's audio, in samples


class NemoEngine(Engine):
    name = "nemo"
    languages = frozenset({"en"})  # the multitalker Parakeet checkpoint is English

    def __init__(self, config: NemoEngineConfig | None = None, models: Models | None = None):
        self.config = config or NemoEngineConfig()
        self.preset = preset(self.config.latency)
        self.models = models or load_models(self.config, self.preset)
        asr, diar = self.models.asr, self.models.diar
        self.device = self.models.device
        self.geometry = ChunkGeometry.of(self.preset, asr.encoder.streaming_cfg)
        self.chunk_samples = self.geometry.chunk_samples
        self.max_speakers = min(self.config.max_speakers, diar.sortformer_modules.n_spk)
        self.frontend = MelFrontend(asr.preprocessor, self.geometry, self.device)
        self.capacity = self.config.capacity or (32 if self.device.type == "cuda" else 1)
        self.force_speakers: int | None = None  # benchmarks: run this many ASR rows a session
        vocab = asr.tokenizer.vocab_size
        self._pieces = list(asr.tokenizer.ids_to_tokens(list(range(vocab))))
        self._detok = asr.tokenizer.ids_to_text

    # -- lifecycle -----------------------------------------------------------------

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        session = self.open_session("warmup", SessionOptions())
        for _ in range(3):
            noise = (rng.standard_normal(self.chunk_samples) * 0.01).astype(np.float32)
            self.step([ChunkInput(session, noise)])
        self.close_session(session)
        if self.config.capacity == 0:
            self.capacity = self.measure_capacity()
            log.info("nemo engine: %d live sessions fit on %s", self.capacity, self.device)

    def open_session(self, session_id: str, options: SessionOptions) -> NemoSession:
        gating = self.config.gating_chunks * self.geometry.out_frames
        return NemoSession(
            id=session_id,
            options=options,
            window=PcmWindow(self.geometry.window_samples),
            diar=initial_memory(self.models.diar, gating, self.device),
        )

    def close_session(self, session: EngineSession) -> None:
        assert isinstance(session, NemoSession)
        # The session's tensors form no reference cycles (no NeMo hypothesis or instance
        # manager is kept), so dropping them frees their memory at once: no gc.collect(),
        # which costs ~0.4 s with NeMo loaded and would stall every stream.
        session.release()

    # -- one step ------------------------------------------------------------------

    def step(self, batch: Sequence[ChunkInput]) -> list[EngineUpdate]:
        if not batch:
            return []
        chunk = self.chunk_samples
        for item in batch:
            n, s = len(item.audio), item.session
            if not isinstance(s, NemoSession) or s.closed:
                raise ValueError(f"session {s.id} is not an open NeMo session")
            if n > chunk or (n < chunk and not item.flush):
                raise ValueError(f"a chunk holds {chunk} samples, not {n}")
        sessions = [item.session for item in batch if isinstance(item.session, NemoSession)]
        snapshots = [s.snapshot() for s in sessions]
        try:
            return self._step(batch)
        except BaseException:
            # Leave every session as it was: the scheduler retries them one by one.
            for s, snap in zip(sessions, snapshots, strict=True):
                s.restore(snap)
            raise

    def _step(self, batch: Sequence[ChunkInput]) -> list[EngineUpdate]:
        chunk = self.chunk_samples
        first: list[_Advance] = []
        extra: list[_Advance] = []
        for item in batch:
            s = item.session
            assert isinstance(s, NemoSession)
            audio = np.asarray(item.audio, np.float32)
            pad = chunk - len(audio)
            first.append(_Advance(s, np.pad(audio, (0, pad)), s.pad_samples))
            if item.flush and pad < FLUSH_TAIL:
                extra.append(_Advance(s, np.zeros(chunk, np.float32), s.pad_samples))
                pad += chunk
            s.samples_in += len(audio)
            s.pad_samples += pad
        with torch.inference_mode(), self._autocast():
            self._advance(first)
            if extra:
                self._advance(extra)
        return [self._update(item) for item in batch]

    def _autocast(self):
        dtype = self.models.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _advance(self, work: list[_Advance]) -> None:
        asr, diar = self.models.asr, self.models.diar
        sessions = [w.session for w in work]
        for w in work:
            assert w.session.window is not None
            w.session.window.push(w.audio)
            w.session.steps += 1
        windows = [s.window.samples for s in sessions if s.window is not None]
        mel = self.frontend.mel(windows, [s.steps for s in sessions])
        first = torch.tensor([s.steps == 1 for s in sessions])
        asr_chunk = self.frontend.pre_encode(asr.encoder, mel, first)
        diar_chunk = self.frontend.pre_encode(diar.encoder, mel, first)
        memories = [s.diar for s in sessions if s.diar is not None]
        probs = diarize_step(diar, diar_chunk, memories)
        rows, owners = self._rows(work, probs, asr_chunk)
        if rows is None:
            return
        results = asr_step(asr, rows, self.config.max_asr_batch)
        flags = (rows.bg > 0.5).cpu().numpy()
        for (w, slot), tokens, bg in zip(owners, results, flags, strict=True):
            s, base = w.session, (w.session.steps - 1) * self.geometry.out_frames
            offset = w.pad_before / SAMPLE_RATE
            assert slot.words is not None
            slot.words.add(
                [
                    Token(
                        id=tid,
                        piece=self._pieces[tid] if tid < len(self._pieces) else "",
                        start=min(max(0.0, (base + fr) * FRAME_S - offset), s.audio_s),
                        end=min(max(0.0, (base + fr + 1) * FRAME_S - offset), s.audio_s),
                        overlap=bool(bg[min(fr, len(bg) - 1)]),
                    )
                    for tid, fr in zip(tokens.ids, tokens.frames, strict=True)
                ]
            )

    def _rows(self, work: list[_Advance], probs: torch.Tensor, asr_chunk: torch.Tensor):
        """One ASR row per (session, speaker heard lately), targets from the diarizer.

        Everything is computed for the whole batch at once (one transfer to the host):
        a row's background is every other speaker of its session active in this chunk,
        by speaker id, not by position in the active list.
        """
        cfg = self.config
        n_spk = probs.shape[2]
        caps = [
            min(w.session.options.max_speakers or self.max_speakers, self.max_speakers)
            for w in work
        ]
        allowed = torch.tensor([[k < c for k in range(n_spk)] for c in caps], device=probs.device)
        recent = torch.stack([w.session.diar.recent for w in work if w.session.diar is not None])
        heard = ((recent > cfg.activity).any(1) & allowed).cpu().tolist()
        owners: list[tuple[_Advance, SpeakerSlot]] = []
        index: list[tuple[int, int]] = []
        for b, w in enumerate(work):
            active = [k for k in range(n_spk) if heard[b][k]]
            if self.force_speakers is not None:
                active = list(range(min(self.force_speakers, caps[b])))
            for k in active:
                owners.append((w, w.session.slots.get(k) or self._new_slot(w.session, k)))
                index.append((b, k))
        if not index:
            return None, owners
        b_idx = torch.tensor([b for b, _ in index], device=probs.device)
        k_idx = torch.tensor([k for _, k in index], device=probs.device)
        on = (probs > cfg.activity) & allowed[:, None, :]  # (B, F, n_spk)
        spk = probs[b_idx, :, k_idx]
        if cfg.binary_targets:
            spk = (spk > cfg.activity).float()
        others = on.sum(-1)[b_idx] - on[b_idx, :, k_idx].long()
        rows = Rows(
            slots=[slot for _, slot in owners],
            chunk=asr_chunk[b_idx],
            spk=spk.to(asr_chunk.dtype),
            bg=(others > 0).to(asr_chunk.dtype),
        )
        return rows, owners

    def _new_slot(self, s: NemoSession, k: int) -> SpeakerSlot:
        slot = initial_slot(self.models.asr, k, self.device)
        cfg = self.config
        slot.words = SpeakerWords(
            f"S{k + 1}",
            self._detok,
            pause_s=cfg.pause_s,
            max_segment_s=cfg.max_segment_s,
            per_word=cfg.commit == "word",
            word_gap_s=cfg.word_gap_s,
        )
        s.slots[k] = slot
        return slot

    def _update(self, item: ChunkInput) -> EngineUpdate:
        s = item.session
        assert isinstance(s, NemoSession)
        now = s.audio_s
        finals: list[Segment] = []
        partials: list[Segment] = []
        for k in sorted(s.slots):
            words = s.slots[k].words
            assert words is not None
            finals += words.close(now, flush=item.flush)
            tail = words.partial(f"{s.id}-partial-{words.label}")
            if tail is not None:
                partials.append(tail)
        finals.sort(key=lambda seg: (seg.start, seg.end))
        finals = [seg.model_copy(update={"id": s.next_segment_id()}) for seg in finals]
        partials.sort(key=lambda seg: seg.start)
        return EngineUpdate(s, finals, partials, self._committed(s, item.flush), idle=False)

    def _committed(self, s: NemoSession, flush: bool) -> float:
        """Audio before the first word still open, and before the newest two chunks
        (whose tokens the encoder's look-ahead and the decoder may still emit)."""
        if flush:
            return s.audio_s
        pending = [w.pending_from for slot in s.slots.values() if (w := slot.words) is not None]
        starts = [p for p in pending if p is not None]
        frontier = s.audio_s - 2 * self.preset.chunk_s
        return max(0.0, min([frontier, *starts]))

    # -- capacity --------------------------------------------------------------------

    def measure_capacity(self, target: float = 0.5, speakers: int = 2) -> int:
        """Live sessions whose batched step fits in ``target`` of a chunk's duration.

        Steps grow 1, 2, 4, ... sessions with ``speakers`` ASR rows each (a lively
        meeting), until a step takes longer than ``target`` x chunk duration.
        """
        limit = 512 if self.device.type == "cuda" else 8
        budget = target * self.preset.chunk_s
        rng = np.random.default_rng(1)
        best, n = 1, 1
        self.force_speakers = speakers
        try:
            while n <= limit:
                try:
                    took = self.time_steps(n, rng)
                except torch.OutOfMemoryError:
                    log.warning("nemo engine: %d sessions do not fit in device memory", n)
                    break
                if took > budget:
                    break
                best, n = n, n * 2
        finally:
            self.force_speakers = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return best

    def time_steps(self, n: int, rng: np.random.Generator, steps: int = 3) -> float:
        """Median seconds of one batched step of ``n`` sessions (after one warm step)."""
        sessions = [self.open_session(f"probe-{i}", SessionOptions()) for i in range(n)]
        times = []
        try:
            for i in range(steps + 1):
                noise = (rng.standard_normal((n, self.chunk_samples)) * 0.01).astype(np.float32)
                t0 = time.perf_counter()
                self.step([ChunkInput(s, a) for s, a in zip(sessions, noise, strict=True)])
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - t0)
        finally:
            for s in sessions:
                s.release()
        return float(np.median(times))
