"""The CPU engine: Silero VAD -> utterances -> d-vector speaker turns -> Whisper (CT2).

One ``step`` advances every session in the batch by one chunk: VAD runs per session
(its LSTM state is per session), then all new speaker-embedding windows of all sessions
go through the embedder in one call, all finished utterances through Whisper in one
beam-search call (with word timing), and all due partials in one greedy call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hubbub.audio import SAMPLE_RATE, HighPass
from hubbub.engines.base import (
    ChunkInput,
    Engine,
    EngineSession,
    EngineUpdate,
    SessionOptions,
)
from hubbub.engines.cpu.clustering import OnlineClustering
from hubbub.engines.cpu.diarization import split_turns
from hubbub.engines.cpu.embedder import (
    HOP,
    N_FFT,
    STRIDE_FRAMES,
    SpeakerEmbedder,
    frames_in,
    windows_from,
    windows_in,
)
from hubbub.engines.cpu.utterances import Utterance, UtteranceConfig, UtteranceTracker
from hubbub.engines.cpu.vad import FRAME, SileroVad, VadStream
from hubbub.engines.cpu.whisper import AsrResult, WhisperAsr
from hubbub.transcript import Segment, Word, join_words


@dataclass(frozen=True)
class CpuEngineConfig:
    model: str = "tiny.en"
    compute_type: str = "int8"
    threads: int = 2
    beam_size: int = 5
    # Finals are decoded on windows of at least this many seconds, partials on the
    # smallest that fit. Whisper was trained on 30 s windows; on wer_single finals on
    # 5 s+ / 12 s+ / 18 s+ / 30 s windows gave 39 / 37 / 33 / 36 word errors of 327
    # (whole-file: 32), and an 18 s window costs half of a 30 s one (131 vs 262 ms).
    final_window_s: float = 18.0
    partial_interval_s: float = 1.0
    min_partial_s: float = 0.6
    speaker_threshold: float = 0.6
    change_threshold: float = 0.5
    max_speakers: int = 8
    chunk_s: float = 0.32  # 10 VAD frames: how late an utterance end can be noticed
    utterances: UtteranceConfig = field(default_factory=UtteranceConfig)


@dataclass
class _Embeddings:
    """Window embeddings of the open utterance, computed as its audio arrives."""

    start: int = -1  # absolute sample where the utterance (and its features) begin
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, 40), np.float32))
    next_window: int = 0
    vectors: list[np.ndarray] = field(default_factory=list)


@dataclass
class CpuSession(EngineSession):
    highpass: HighPass = field(default_factory=HighPass)
    vad: VadStream = field(default_factory=VadStream)
    tracker: UtteranceTracker = field(default_factory=UtteranceTracker)
    clusters: OnlineClustering = field(default_factory=OnlineClustering)
    emb: _Embeddings = field(default_factory=_Embeddings)
    last_partial_at: int = 0
    partial: Segment | None = None


@dataclass
class _Closed:
    utterance: Utterance
    prior: list[np.ndarray]  # embeddings computed while the utterance was open
    windows: np.ndarray  # feature windows still to embed
    embeddings: np.ndarray | None = None


@dataclass
class _Work:
    """What one step computes for one session, filled in phase by phase."""

    session: CpuSession
    closed: list[_Closed]
    open_windows: np.ndarray
    want_partial: Utterance | None = None
    flushed: bool = False

    @property
    def idle(self) -> bool:
        return not self.closed and not self.session.tracker.in_speech

    @property
    def committed_s(self) -> float:
        s = self.session
        return s.audio_s if self.flushed else s.tracker.settled() / SAMPLE_RATE


class CpuEngine(Engine):
    name = "cpu"

    def __init__(self, config: CpuEngineConfig | None = None) -> None:
        self.config = config or CpuEngineConfig()
        self.chunk_samples = int(self.config.chunk_s * SAMPLE_RATE) // FRAME * FRAME
        self.max_speakers = self.config.max_speakers
        self.vad = SileroVad()
        self.embedder = SpeakerEmbedder()
        self.asr = WhisperAsr(
            self.config.model, compute_type=self.config.compute_type, threads=self.config.threads
        )

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(SAMPLE_RATE) * 0.01).astype(np.float32)
        self.asr.transcribe([noise], beam_size=1, word_timestamps=False)
        self.embedder.embed(windows_from(self.embedder.features(noise))[0])

    def open_session(self, session_id: str, options: SessionOptions) -> CpuSession:
        cfg = self.config
        cap = min(options.max_speakers or cfg.max_speakers, cfg.max_speakers)
        return CpuSession(
            id=session_id,
            options=options,
            tracker=UtteranceTracker(cfg.utterances),
            clusters=OnlineClustering(max_speakers=cap, threshold=cfg.speaker_threshold),
        )

    def close_session(self, session: EngineSession) -> None:
        # All state lives in the session object: dropping its buffers frees everything.
        assert isinstance(session, CpuSession)
        session.tracker = UtteranceTracker(self.config.utterances)
        session.emb = _Embeddings()
        session.partial = None

    # -- one step: advance, embed, finalize, partials --------------------------------

    def step(self, batch: Sequence[ChunkInput]) -> list[EngineUpdate]:
        work = [self._advance(item) for item in batch]
        self._embed(work)
        finals = self._finalize(work)
        self._partials(work)
        return [
            EngineUpdate(
                w.session,
                finals=f,
                partials=[w.session.partial] if w.session.partial else [],
                committed_s=w.committed_s,
                idle=w.idle,
            )
            for w, f in zip(work, finals, strict=True)
        ]

    def _advance(self, item: ChunkInput) -> _Work:
        s = item.session
        assert isinstance(s, CpuSession)
        audio = s.highpass(item.audio)
        probs = self.vad(s.vad, audio)
        s.samples_in += len(audio)
        utterances = s.tracker.push(audio, probs)
        if item.flush:
            utterances += s.tracker.flush()
        closed = []
        for utt in utterances:
            windows = self._new_windows(s.emb, utt)
            prior = s.emb.vectors if s.emb.start == utt.start else []
            closed.append(_Closed(utt, prior, windows))
            s.emb = _Embeddings()
        open_utt = s.tracker.open_utterance()
        open_windows = np.zeros((0, 80, 40), np.float32)
        want_partial = None
        if open_utt is not None:
            open_windows = self._new_windows(s.emb, open_utt)
            # Refresh on the step nearest the interval: with 0.32 s chunks, waiting for a
            # full 1.0 s made it every 1.28 s.
            since = s.samples_in - s.last_partial_at + self.chunk_samples // 2
            due = since >= self.config.partial_interval_s * SAMPLE_RATE
            if due and open_utt.duration_s >= self.config.min_partial_s:
                want_partial = open_utt
        else:
            s.partial = None
        return _Work(s, closed, open_windows, want_partial, flushed=item.flush)

    def _new_windows(self, emb: _Embeddings, utt: Utterance) -> np.ndarray:
        """Feature windows of ``utt`` not embedded yet (features computed incrementally)."""
        if emb.start != utt.start:
            emb.start, emb.features, emb.next_window, emb.vectors = (
                utt.start,
                emb.features[:0],
                0,
                [],
            )
        fit = frames_in(len(utt.audio))
        if len(emb.features) > fit:
            # Cut at its length bound, the utterance ends before audio already embedded:
            # forget what lies past its end (the next utterance starts there).
            keep = min(len(emb.vectors), windows_in(fit))
            emb.features, emb.vectors = emb.features[:fit], emb.vectors[:keep]
            emb.next_window = keep * STRIDE_FRAMES
        tail = utt.audio[len(emb.features) * HOP :]
        if len(tail) >= N_FFT:
            emb.features = np.concatenate([emb.features, self.embedder.features(tail)])
        windows, emb.next_window = windows_from(emb.features, emb.next_window)
        return windows

    def _embed(self, work: list[_Work]) -> None:
        stacks = [c.windows for w in work for c in w.closed] + [w.open_windows for w in work]
        vectors = self.embedder.embed(np.concatenate(stacks)) if stacks else None
        pos = 0

        def take(n: int) -> np.ndarray:
            nonlocal pos
            assert vectors is not None
            pos += n
            return vectors[pos - n : pos]

        for w in work:
            for c in w.closed:
                new = take(len(c.windows))
                c.embeddings = np.concatenate([np.array(c.prior).reshape(-1, new.shape[1]), new])
        for w in work:
            w.session.emb.vectors.extend(take(len(w.open_windows)))

    def _finalize(self, work: list[_Work]) -> list[list[Segment]]:
        todo = [(w.session, c) for w in work for c in w.closed]
        results = self.asr.transcribe(
            [c.utterance.audio for _, c in todo],
            beam_size=self.config.beam_size,
            min_window_s=self.config.final_window_s,
        )
        out: dict[str, list[Segment]] = {w.session.id: [] for w in work}
        for (session, closed), result in zip(todo, results, strict=True):
            out[session.id] += self._segments(session, closed, result)
        return [out[w.session.id] for w in work]

    def _segments(self, s: CpuSession, closed: _Closed, result: AsrResult) -> list[Segment]:
        utt = closed.utterance
        if result.looks_hallucinated or not result.words:
            return []
        assert closed.embeddings is not None
        words = [
            w.model_copy(
                update={
                    "start": round(utt.start_s + min(w.start, utt.duration_s), 3),
                    "end": round(utt.start_s + min(w.end, utt.duration_s), 3),
                }
            )
            for w in result.words
        ]
        embs = closed.embeddings
        if len(embs) == 0:
            # Too short to embed: the voice of the last speaker is the best guess.
            speakers = [(0.0, utt.duration_s, max(0, s.clusters.n_speakers - 1))]
        else:
            turns = split_turns(embs, threshold=self.config.change_threshold)
            speakers = []
            for t in turns:
                a, b = t.bounds_s(len(embs), utt.duration_s)
                speakers.append((a, b, s.clusters.assign(t.embedding, b - a)))
        return self._split_words(s, utt, words, speakers)

    def _split_words(
        self,
        s: CpuSession,
        utt: Utterance,
        words: list[Word],
        speakers: list[tuple[float, float, int]],
    ) -> list[Segment]:
        """Group consecutive words by the speaker whose turn holds their midpoint."""
        groups: list[tuple[int, list[Word]]] = []
        for w in words:
            mid = (w.start + w.end) / 2 - utt.start_s
            spk = next((k for a, b, k in speakers if mid < b), speakers[-1][2])
            if groups and groups[-1][0] == spk:
                groups[-1][1].append(w)
            else:
                groups.append((spk, [w]))
        return [
            Segment(
                id=s.next_segment_id(),
                speaker=s.clusters.label(spk),
                start=ws[0].start,
                end=ws[-1].end,
                text=join_words(ws),
                words=ws,
            )
            for spk, ws in groups
        ]

    def _partials(self, work: list[_Work]) -> None:
        todo = [w for w in work if w.want_partial is not None]
        results = self.asr.transcribe(
            [w.want_partial.audio for w in todo if w.want_partial is not None],
            beam_size=1,
            word_timestamps=False,
        )
        for w, result in zip(todo, results, strict=True):
            s, utt = w.session, w.want_partial
            assert utt is not None
            s.last_partial_at = s.samples_in
            if result.looks_hallucinated or not result.text:
                continue
            vectors = s.emb.vectors
            guess = s.clusters.peek(np.mean(vectors, axis=0)) if vectors else 0
            s.partial = Segment(
                id=f"{s.id}-partial",
                speaker=s.clusters.label(guess),
                start=round(utt.start_s, 3),
                end=round(utt.start_s + utt.duration_s, 3),
                text=result.text,
            )
