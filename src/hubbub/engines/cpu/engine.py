"""The CPU engine: Silero VAD -> utterances -> Whisper (CT2) -> phrases -> speakers.

One ``step`` advances every session in the batch by one chunk: the VAD runs per session
(its LSTM state is per session); all finished utterances go through Whisper in one
beam-search call (with word timing), their phrases through the speaker encoder in one
call, and all due partials through one greedy call. A session's speakers get a first guess
per segment as it becomes final, and a second look every so often and at the end
(hubbub.engines.cpu.speakers), which may relabel segments already given out.
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
from hubbub.engines.cpu.config import CpuEngineConfig
from hubbub.engines.cpu.embedder import HOP, SpeakerEmbedder, window_starts
from hubbub.engines.cpu.phrases import Phrase, change_point, merge_short, phrases
from hubbub.engines.cpu.speakers import SpeakerTracker, unit
from hubbub.engines.cpu.utterances import Utterance, UtteranceTracker
from hubbub.engines.cpu.vad import FRAME, SileroVad, VadStream
from hubbub.engines.cpu.whisper import AsrResult, WhisperAsr
from hubbub.transcript import Segment, Word, join_words

PARTIAL_VOICE_S = 3.0  # a partial's speaker is guessed from its last seconds
MAX_EDGE_S = 0.5  # how far a segment may reach past its words to where speech was heard


@dataclass
class CpuSession(EngineSession):
    highpass: HighPass = field(default_factory=HighPass)
    vad: VadStream = field(default_factory=VadStream)
    tracker: UtteranceTracker = field(default_factory=UtteranceTracker)
    speakers: SpeakerTracker = field(default_factory=SpeakerTracker)
    last_partial_at: int = 0
    partial: Segment | None = None


@dataclass
class _Final:
    """One finished utterance on its way to segments."""

    utterance: Utterance
    result: AsrResult | None = None
    phrases: list[Phrase] = field(default_factory=list)
    embeddings: np.ndarray | None = None


@dataclass
class _Work:
    """What one step computes for one session, filled in phase by phase."""

    session: CpuSession
    closed: list[_Final]
    want_partial: Utterance | None = None
    flushed: bool = False
    finals: list[Segment] = field(default_factory=list)
    relabel: dict[str, str] = field(default_factory=dict)

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
        self.languages = self.asr.languages

    def warmup(self) -> None:
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(SAMPLE_RATE) * 0.01).astype(np.float32)
        self.asr.transcribe([noise], beam_size=1, word_timestamps=False)
        self.embedder.embed_audio([noise])

    def open_session(self, session_id: str, options: SessionOptions) -> CpuSession:
        cfg = self.config
        return CpuSession(
            id=session_id,
            options=options,
            highpass=HighPass(cfg.highpass_hz),
            tracker=UtteranceTracker(cfg.utterances),
            speakers=SpeakerTracker(
                max_speakers=min(options.max_speakers or cfg.max_speakers, cfg.max_speakers),
                threshold=cfg.speaker_threshold,
                min_new_s=cfg.min_new_speaker_s,
                cluster_cos=cfg.cluster_cos,
                short_speaker_s=cfg.short_speaker_s,
                short_join_cos=cfg.short_join_cos,
                refine_every_s=cfg.refine_every_s,
                max_items=cfg.max_speaker_items,
            ),
        )

    def close_session(self, session: EngineSession) -> None:
        # All state lives in the session object: dropping its buffers frees everything.
        assert isinstance(session, CpuSession)
        session.tracker = UtteranceTracker(self.config.utterances)
        session.speakers = SpeakerTracker()
        session.partial = None

    # -- one step: advance, finalize, speakers, partials, second looks -------------------

    def step(self, batch: Sequence[ChunkInput]) -> list[EngineUpdate]:
        work = [self._advance(item) for item in batch]
        self._finalize(work)
        self._partials(work)
        for w in work:
            speakers = w.session.speakers
            if speakers.refine_due or (w.flushed and speakers.items):
                changed = speakers.refine()
                w.relabel = {sid: speakers.name(label) for sid, label in changed.items()}
        return [
            EngineUpdate(
                w.session,
                finals=w.finals,
                partials=[w.session.partial] if w.session.partial else [],
                committed_s=w.committed_s,
                idle=w.idle,
                relabel=w.relabel,
            )
            for w in work
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
        open_utt = s.tracker.open_utterance()
        want_partial = None
        if open_utt is not None:
            # Refresh on the step nearest the interval: with 0.32 s chunks, waiting for a
            # full 1.0 s made it every 1.28 s.
            since = s.samples_in - s.last_partial_at + self.chunk_samples // 2
            due = since >= self.config.partial_interval_s * SAMPLE_RATE
            if due and open_utt.duration_s >= self.config.min_partial_s:
                want_partial = open_utt
        else:
            s.partial = None
        return _Work(s, [_Final(u) for u in utterances], want_partial, flushed=item.flush)

    # -- finals: words, phrases, voices, speakers --------------------------------------

    def _finalize(self, work: list[_Work]) -> None:
        todo = [(w, f) for w in work for f in w.closed]
        results = self.asr.transcribe(
            [f.utterance.audio for _, f in todo],
            beam_size=self.config.beam_size,
            min_window_s=self.config.final_window_s,
            languages=[w.session.options.language for w, _ in todo],
        )
        for (_, f), result in zip(todo, results, strict=True):
            if not result.looks_hallucinated and result.words:
                f.result = result
                f.phrases = self._phrases(f.utterance, self._timed(f.utterance, result.words))
        pieces = [self._audio_of(f.utterance, p) for _, f in todo for p in f.phrases]
        vectors = self.embedder.embed_audio(pieces)
        pos = 0
        for _, f in todo:
            f.embeddings = vectors[pos : pos + len(f.phrases)]
            pos += len(f.phrases)
        for w in work:
            for f in w.closed:
                w.finals += self._segments(w.session, f)

    @staticmethod
    def _timed(utt: Utterance, words: list[Word]) -> list[Word]:
        """Word times on the session clock, inside the utterance."""
        return [
            w.model_copy(
                update={
                    "start": round(utt.start_s + min(w.start, utt.duration_s), 3),
                    "end": round(utt.start_s + min(w.end, utt.duration_s), 3),
                }
            )
            for w in words
        ]

    @staticmethod
    def _audio_of(utt: Utterance, p: Phrase) -> np.ndarray:
        a = max(0, int((p.start - utt.start_s) * SAMPLE_RATE))
        b = int((p.end - utt.start_s) * SAMPLE_RATE)
        return utt.audio[a:b]

    def _phrases(self, utt: Utterance, words: list[Word]) -> list[Phrase]:
        """Where the speaker may change: pauses and sentence ends, then voice changes
        inside long stretches without either."""
        cfg = self.config
        out: list[Phrase] = []
        for p in merge_short(phrases(words, cfg.phrase_gap_s), cfg.min_phrase_s):
            out += self._split_by_voice(utt, p) if p.duration >= cfg.split_phrase_s else [p]
        return merge_short(out, cfg.min_phrase_s)

    def _split_by_voice(self, utt: Utterance, p: Phrase) -> list[Phrase]:
        """Cut a long phrase at the word boundary nearest to where the voice changes."""
        cfg = self.config
        features = self.embedder.features(self._audio_of(utt, p))
        length = int(cfg.embed_window_s * SAMPLE_RATE / HOP)
        stride = int(cfg.embed_stride_s * SAMPLE_RATE / HOP)
        starts = window_starts(len(features), length, stride)
        embs = self.embedder.embed([features.window(s, length) for s in starts])
        k = change_point(embs, cfg.change_threshold)
        if k is None or len(p.words) < 2:
            return [p]
        at = p.start + (starts[k] + length / 2) * HOP / SAMPLE_RATE
        cut = min(range(1, len(p.words)), key=lambda i: abs(p.words[i].start - at))
        first, second = Phrase(p.words[:cut]), Phrase(p.words[cut:])
        return self._split_by_voice(utt, first) + self._split_by_voice(utt, second)

    def _segments(self, s: CpuSession, f: _Final) -> list[Segment]:
        """Each phrase a speaker (first guess); neighbouring phrases of one speaker join."""
        if f.result is None or f.embeddings is None:
            return []
        groups: list[tuple[int, list[int]]] = []
        for i, (p, e) in enumerate(zip(f.phrases, f.embeddings, strict=True)):
            label = s.speakers.assign(e, p.duration)
            if groups and groups[-1][0] == label:
                groups[-1][1].append(i)
            else:
                groups.append((label, [i]))
        # Whisper's word times run late at the edges; the VAD knows where speech began and
        # ended: an utterance's first and last segments reach out to it (a little).
        pad = self.config.utterances.speech_pad_s
        utt = f.utterance
        speech = (utt.start_s + pad, utt.start_s + utt.duration_s - pad)
        out = []
        for n, (label, idx) in enumerate(groups):
            words = [w for i in idx for w in f.phrases[i].words]
            start, end = words[0].start, words[-1].end
            if n == 0:
                start = max(min(start, speech[0]), start - MAX_EDGE_S)
            if n == len(groups) - 1:
                end = min(max(end, speech[1]), end + MAX_EDGE_S)
            seg = Segment(
                id=s.next_segment_id(),
                speaker=s.speakers.name(label),
                start=round(start, 3),
                end=round(end, 3),
                text=join_words(words),
                words=words,
            )
            durations = np.array([f.phrases[i].duration for i in idx])
            voice = unit((f.embeddings[idx] * durations[:, None]).sum(axis=0))
            s.speakers.remember(seg.id, voice, float(durations.sum()), label)
            out.append(seg)
        return out

    # -- partials ---------------------------------------------------------------------

    def _partials(self, work: list[_Work]) -> None:
        todo = [w for w in work if w.want_partial is not None]
        utts = [w.want_partial for w in todo if w.want_partial is not None]
        results = self.asr.transcribe(
            [u.audio for u in utts],
            beam_size=1,
            word_timestamps=False,
            languages=[w.session.options.language for w in todo],
        )
        tail = int(PARTIAL_VOICE_S * SAMPLE_RATE)
        voices = self.embedder.embed_audio([u.audio[-tail:] for u in utts])
        for w, utt, result, voice in zip(todo, utts, results, voices, strict=True):
            s = w.session
            s.last_partial_at = s.samples_in
            if result.looks_hallucinated or not result.text:
                continue
            guess = s.speakers.peek(voice) if voice.any() else max(0, s.speakers.next_label - 1)
            s.partial = Segment(
                id=f"{s.id}-partial",
                speaker=s.speakers.name(guess),
                start=round(utt.start_s, 3),
                end=round(utt.start_s + utt.duration_s, 3),
                text=result.text,
            )
