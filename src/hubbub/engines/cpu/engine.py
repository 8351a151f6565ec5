"""The CPU engine: Silero VAD -> utterances -> Whisper (CT2) -> phrases -> speakers.

One ``step`` advances every session in the batch by one chunk: the VAD runs per session
(its LSTM state is per session); all finished utterances go through Whisper in one
beam-search call (with word timing), their phrases through the speaker encoder in one
call, and all open utterances due a refresh through one greedy call. That refresh gives
the partial text and, where two refreshes in a row agree, words that turn final while the
utterance goes on (hubbub.engines.cpu.commits); the utterance's final decode continues
from them. A session's speakers get a first guess per segment as it becomes final, a
better one for the whole utterance when it ends, and a second look every so often and at
the end (hubbub.engines.cpu.speakers); both may relabel segments already given out.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hubbub.audio import SAMPLE_RATE, HighPass
from hubbub.engines.base import (
    ChunkInput,
    Engine,
    EngineSession,
    EngineUpdate,
    SessionOptions,
)
from hubbub.engines.cpu.band import BandCheck
from hubbub.engines.cpu.clusters import centre
from hubbub.engines.cpu.commits import OpenText, Piece
from hubbub.engines.cpu.config import CpuEngineConfig
from hubbub.engines.cpu.embedder import HOP, SpeakerEmbedder, window_starts
from hubbub.engines.cpu.phrases import Phrase, change_point, merge_short, phrases
from hubbub.engines.cpu.speakers import SpeakerTracker
from hubbub.engines.cpu.utterances import Heard, Utterance, UtteranceTracker
from hubbub.engines.cpu.vad import FRAME, SileroVad, VadStream
from hubbub.engines.cpu.whisper import AsrResult, WhisperAsr
from hubbub.transcript import Segment, Word, join_words

PARTIAL_VOICE_S = 3.0  # a partial's speaker is guessed from its last seconds
PIECE_VOICE_S = 1.6  # an early final's speaker, from at least this much audio up to its end
MAX_EDGE_S = 0.5  # how far a segment may reach past its words to where speech was heard
SKIP_S = 0.5  # a decode whose new words start this far past the final ones skipped some
SILENT_TAIL_S = 1.0  # an utterance's audio past its final words that should hold words
CATCH_UP_S = 0.5  # a live session further behind than this refreshes less often
STATE_EVERY_S = 5.0  # the speakers' state goes out at most this often, or with a new label


@dataclass
class CpuSession(EngineSession):
    highpass: HighPass = field(default_factory=HighPass)
    band: BandCheck = field(default_factory=BandCheck)
    vad: VadStream = field(default_factory=VadStream)
    tracker: UtteranceTracker = field(default_factory=UtteranceTracker)
    heard: Heard = field(default_factory=Heard)  # until the band is known
    speakers: SpeakerTracker = field(default_factory=SpeakerTracker)
    last_partial_at: int = 0
    partial: Segment | None = None
    open_text: OpenText | None = None  # the open utterance's words already final
    last_final: tuple[float, int] | None = None  # end and speaker of the latest final
    state_at: float = -STATE_EVERY_S  # audio time the speakers' state was last given out
    state_labels: int = 0  # the labels used when it was


@dataclass
class _Final:
    """One finished utterance on its way to segments."""

    utterance: Utterance
    text: OpenText  # its words already final, if any
    words: list[Word] = field(default_factory=list)  # the final decode's, past those
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
        """Audio settled in finals: before the open utterance, or its last final word."""
        s = self.session
        if self.flushed:
            return s.audio_s
        settled = s.tracker.settled() / SAMPLE_RATE
        if s.open_text is not None and s.open_text.words:
            return max(settled, s.open_text.end_s)
        return settled


@dataclass
class _Refresh:
    """One open utterance decoded again: its partial text, and words turning final."""

    work: _Work
    utterance: Utterance
    text_heard: str = ""
    words: list[Word] = field(default_factory=list)  # past the final ones, session clock
    tokens: list[list[int]] = field(default_factory=list)  # each word's tokens
    final: int = 0  # how many of ``words`` turn final now

    @property
    def text(self) -> OpenText:
        text = self.work.session.open_text
        assert text is not None  # an open utterance always has one (CpuEngine._advance)
        return text


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
        self.redecoded = 0  # decodes repeated without their prefix (CpuEngine._decode)

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
            band=BandCheck(cfg.telephone_db),
            tracker=UtteranceTracker(cfg.utterances),
            speakers=SpeakerTracker(
                max_speakers=min(options.max_speakers or cfg.max_speakers, cfg.max_speakers),
                threshold=cfg.speaker_threshold,
                min_new_s=cfg.min_new_speaker_s,
                cluster_cos=cfg.cluster_cos,
                short_speaker_s=cfg.short_speaker_s,
                short_join_cos=cfg.short_join_cos,
                short_margin=cfg.short_margin,
                refine_every_s=cfg.refine_every_s,
                max_items=cfg.max_speaker_items,
            ),
        )

    def close_session(self, session: EngineSession) -> None:
        # All state lives in the session object: dropping its buffers frees everything.
        assert isinstance(session, CpuSession)
        session.tracker = UtteranceTracker(self.config.utterances)
        session.heard = Heard()
        session.speakers = SpeakerTracker()
        session.partial = None
        session.open_text = None
        session.last_final = None

    # -- one step: advance, finalize, speakers, partials, second looks -------------------

    def step(self, batch: Sequence[ChunkInput]) -> list[EngineUpdate]:
        # A step that raises leaves every session as it was, so that the scheduler can
        # retry them one by one: what a step changes is copied first (~0.3 ms a session).
        saved = [copy.deepcopy(item.session.__dict__) for item in batch]
        try:
            return self._step(batch)
        except BaseException:
            for item, state in zip(batch, saved, strict=True):
                item.session.__dict__.update(state)
            raise

    def _step(self, batch: Sequence[ChunkInput]) -> list[EngineUpdate]:
        work = [self._advance(item) for item in batch]
        self._finalize(work)
        self._refresh(work)
        for w in work:
            speakers = w.session.speakers
            if speakers.refine_due or (w.flushed and speakers.items):
                changed = speakers.refine()
                w.relabel.update({sid: speakers.name(label) for sid, label in changed.items()})
        return [
            EngineUpdate(
                w.session,
                finals=w.finals,
                partials=[w.session.partial] if w.session.partial else [],
                committed_s=w.committed_s,
                idle=w.idle,
                relabel=w.relabel,
                state=self._state(w),
            )
            for w in work
        ]

    @staticmethod
    def _state(w: _Work) -> str | None:
        """The speakers' voices, with finals that may have changed them: often enough that
        a replica taking the session over labels speakers as this one did."""
        s, speakers = w.session, w.session.speakers
        if not (w.finals or w.relabel) or not speakers.sums:
            return None
        if speakers.next_label == s.state_labels and s.audio_s - s.state_at < STATE_EVERY_S:
            return None
        s.state_at, s.state_labels = s.audio_s, speakers.next_label
        return speakers.export()

    def restore(self, session: EngineSession, state: str) -> None:
        assert isinstance(session, CpuSession)
        session.speakers.restore(state)
        session.state_labels = session.speakers.next_label

    def _advance(self, item: ChunkInput) -> _Work:
        s = item.session
        assert isinstance(s, CpuSession)
        audio = s.highpass(item.audio)
        probs = self.vad(s.vad, audio)
        s.samples_in += len(audio)
        undecided = s.band.telephone is None
        if undecided:
            s.heard.add(s.tracker, audio, probs)
        utterances = s.tracker.push(audio, probs)
        if undecided and (verdict := s.band.add(audio)) is not None:
            if verdict:
                utterances = self._as_a_call(s, utterances)
            s.heard = Heard()
        if item.flush:
            utterances += s.tracker.flush()
        open_utt = s.tracker.open_utterance()
        closed = [_Final(u, self._text_of(s, u, utterances, open_utt)) for u in utterances]
        want_partial = None
        if open_utt is not None:
            if s.open_text is None or s.open_text.start != open_utt.start:
                s.open_text = OpenText(open_utt.start)
            # Refresh on the step nearest the interval: with 0.32 s chunks, waiting for a
            # full 1.0 s made it every 1.28 s. A live session that has fallen behind
            # refreshes less often until it catches up (finals do not wait for refreshes).
            since = s.samples_in - s.last_partial_at + self.chunk_samples // 2
            interval = self.config.partial_interval_s + max(0.0, item.behind_s - CATCH_UP_S)
            due = since >= interval * SAMPLE_RATE
            if due and open_utt.duration_s >= self.config.min_partial_s:
                want_partial = open_utt
        else:
            s.partial = None
            s.open_text = None
        return _Work(s, closed, want_partial, flushed=item.flush)

    def _as_a_call(self, s: CpuSession, utterances: list[Utterance]) -> list[Utterance]:
        """The session is a phone call: its utterances are cut with a call's thresholds
        from now on, and its last seconds again if nothing of them was given out yet
        (Silero scores a call's speech lower: its first words, "Hello?", went missing)."""
        cfg = self.config
        call = cfg.utterances.model_copy(
            update={"onset": cfg.telephone_onset, "offset": cfg.telephone_offset}
        )
        given_out = s.last_final is not None or (s.open_text is not None and s.open_text.words)
        if utterances or given_out or not s.heard.holds(s.tracker):
            s.tracker.config = call
            return utterances
        s.tracker, utterances = s.heard.recut(call)
        return utterances

    @staticmethod
    def _text_of(
        s: CpuSession, u: Utterance, closed: list[Utterance], open_utt: Utterance | None
    ) -> OpenText:
        """The words of a closed utterance already final. Cut at the length bound, the
        next utterance starts where it ends, and final words said past the cut go on to
        it as its prefix."""
        text = s.open_text
        if text is None or text.start != u.start:
            return OpenText(u.start)
        s.open_text = None
        starts = {x.start for x in closed} | ({open_utt.start} if open_utt else set())
        if u.end in starts:
            s.open_text = text.split(u.end_s, u.end)
        return text

    # -- finals: words, phrases, voices, speakers --------------------------------------

    def _decode(
        self,
        rows: list[tuple[Utterance, OpenText, str | None]],
        final: bool,
        **options: Any,
    ) -> list[AsrResult]:
        """Each open or closed utterance decoded on from its final words. Whisper, made
        to continue from them, now and then skips what follows ("...probably good."
        then "Thanks.", never "All right."): a row whose new words start well past the
        final ones, or a closed one with nothing new after a second more of audio, is
        decoded again whole (its repeated words are dropped later, by their times)."""
        results = self.asr.transcribe(
            [u.audio for u, _, _ in rows],
            languages=[lang for _, _, lang in rows],
            prefixes=[t.prefix for _, t, _ in rows],
            **options,
        )

        def skipped(u: Utterance, t: OpenText, r: AsrResult) -> bool:
            if not t.words:
                return False
            if r.words:
                return u.start_s + r.words[0].start - t.end_s > SKIP_S
            return final and u.end_s - t.end_s > SILENT_TAIL_S

        redo = [i for i, (u, t, _) in enumerate(rows) if skipped(u, t, results[i])]
        again = self.asr.transcribe(
            [rows[i][0].audio for i in redo], languages=[rows[i][2] for i in redo], **options
        )
        for i, result in zip(redo, again, strict=True):
            results[i] = result
        self.redecoded += len(redo)
        return results

    def _finalize(self, work: list[_Work]) -> None:
        todo = [(w, f) for w in work for f in w.closed]
        results = self._decode(
            [(f.utterance, f.text, w.session.options.language) for w, f in todo],
            final=True,
            beam_size=self.config.beam_size,
            min_window_s=self.config.final_window_s,
        )
        for (_, f), result in zip(todo, results, strict=True):
            if not result.looks_hallucinated and result.words:
                words = self._timed(f.utterance, result.words)
                f.words = words[f.text.echoed(words) :]
            if f.text.words or f.words:
                f.phrases = self._phrases(f.utterance, f.text.words + f.words)
        pieces = [self._audio_of(f.utterance, p) for _, f in todo for p in f.phrases]
        vectors = self.embedder.embed_audio(pieces)
        pos = 0
        for _, f in todo:
            f.embeddings = vectors[pos : pos + len(f.phrases)]
            pos += len(f.phrases)
        for w in work:
            for f in w.closed:
                w.session.speakers.settle()
                w.finals += self._segments(w, f)

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

    def _bridged(self, s: CpuSession, start: float, label: int) -> float:
        """Where a new utterance's first final starts: back at the latest final's end when
        both are one speaker's and only a short pause lies between (a breath inside a
        turn is still the speaker's turn)."""
        if s.last_final is None:
            return start
        end, speaker = s.last_final
        if speaker == label and 0 < start - end <= self.config.bridge_s:
            return end
        return start

    def _segments(self, w: _Work, f: _Final) -> list[Segment]:
        """Each phrase a speaker; the final decode's words become segments, one per run of
        one speaker; the utterance's early finals take the speaker of most of their words
        (relabelled if their first guess differs)."""
        s = w.session
        if f.embeddings is None or not f.phrases:
            return []
        labels = [
            s.speakers.assign(e, p.duration) for p, e in zip(f.phrases, f.embeddings, strict=True)
        ]
        runs: list[list[int]] = []  # phrase indices, one list per run of one speaker
        for i, label in enumerate(labels):
            if runs and labels[runs[-1][0]] == label:
                runs[-1].append(i)
            else:
                runs.append([i])
        run_of = {id(wd): r for r, idx in enumerate(runs) for i in idx for wd in f.phrases[i].words}
        members: list[list[str]] = [[] for _ in runs]  # segment ids of each run

        def run_for(words: list[Word]) -> int:
            weights: dict[int, float] = {}
            for word in words:
                if id(word) in run_of:
                    r = run_of[id(word)]
                    weights[r] = weights.get(r, 0.0) + max(word.end - word.start, 0.02)
            return max(weights, key=weights.__getitem__) if weights else -1

        for piece in f.text.pieces:
            r = run_for(piece.words)
            if r >= 0:
                members[r].append(piece.segment_id)
                label = labels[runs[r][0]]
                if label != piece.speaker:
                    w.relabel[piece.segment_id] = s.speakers.name(label)
        # Whisper's word times run late at the edges; the VAD knows where speech began and
        # ended: an utterance's first and last segments reach out to it (a little).
        pad = self.config.utterances.speech_pad_s
        utt = f.utterance
        speech = (utt.start_s + pad, utt.end_s - pad)
        groups: list[tuple[int, list[Word]]] = []
        for word in f.words:
            r = run_of[id(word)]
            if groups and groups[-1][0] == r:
                groups[-1][1].append(word)
            else:
                groups.append((r, [word]))
        out = []
        before = f.text.segment_end
        for n, (r, words) in enumerate(groups):
            start, end = words[0].start, words[-1].end
            if n == 0 and before is not None:  # on from the utterance's early finals
                start = min(start, before)
            elif n == 0:
                start = max(min(start, speech[0]), start - MAX_EDGE_S)
                start = self._bridged(s, start, labels[runs[r][0]])
            if n == len(groups) - 1:
                end = min(max(end, speech[1]), end + MAX_EDGE_S)
            s.last_final = (end, labels[runs[r][0]])
            seg = Segment(
                id=s.next_segment_id(),
                speaker=s.speakers.name(labels[runs[r][0]]),
                start=round(start, 3),
                end=round(end, 3),
                text=join_words(words),
                words=words,
            )
            members[r].append(seg.id)
            out.append(seg)
        # The second looks cluster runs: more speech per item than a segment may hold.
        for r, idx in enumerate(runs):
            durations = np.array([f.phrases[i].duration for i in idx])
            voice = centre(f.embeddings[idx], durations)
            s.speakers.remember(members[r], voice, float(durations.sum()), labels[idx[0]])
        return out

    # -- the open utterance: partial text and words that turn final early ---------------

    def _refresh(self, work: list[_Work]) -> None:
        early = self.config.commit == "agreement"
        rows = [_Refresh(w, w.want_partial) for w in work if w.want_partial is not None]
        results = self._decode(
            [(r.utterance, r.text, r.work.session.options.language) for r in rows],
            final=False,
            beam_size=self.config.refresh_beam_size,
            min_window_s=self.config.refresh_window_s,
            word_timestamps=early,
        )
        holdback, after = self.config.commit_holdback_s, self.config.commit_after_s
        heard: list[_Refresh] = []
        for r, result in zip(rows, results, strict=True):
            r.work.session.last_partial_at = r.work.session.samples_in
            if result.looks_hallucinated or not result.text:
                r.text.guess = []  # nothing to agree with next time
                continue
            r.text_heard = result.text
            words = self._timed(r.utterance, result.words)
            echo = r.text.echoed(words)
            r.words, r.tokens = words[echo:], result.word_tokens[echo:]
            if early:
                r.final = r.text.to_commit(r.words, r.utterance.end_s, holdback, after)
            heard.append(r)
        # One encoder call for every voice this needs: each open utterance's latest seconds
        # (the partial's speaker), and each early final's, up to its end.
        tail = int(PARTIAL_VOICE_S * SAMPLE_RATE)
        clips = [r.utterance.audio[-tail:] for r in heard]
        clips += [
            self._voice_before(r.utterance, r.words[r.final - 1].end) for r in heard if r.final
        ]
        voices = self.embedder.embed_audio(clips)
        piece_voices = iter(voices[len(heard) :])
        for r, voice in zip(heard, voices, strict=False):
            s = r.work.session
            if r.final:
                r.work.finals.append(self._commit(s, r, next(piece_voices)))
            rest = r.words[r.final :]
            if early and not rest:
                s.partial = None
                continue
            guess = s.speakers.peek(voice) if voice.any() else max(0, s.speakers.next_label - 1)
            s.partial = Segment(
                id=f"{s.id}-partial",
                speaker=s.speakers.name(guess),
                start=round(rest[0].start if rest else r.utterance.start_s, 3),
                end=round(r.utterance.end_s, 3),
                text=join_words(rest) if early else r.text_heard,
            )

    def _commit(self, s: CpuSession, r: _Refresh, voice: np.ndarray) -> Segment:
        """Words final before their utterance ends: a segment, with the speaker their
        voice suggests now (the utterance's end takes a better look)."""
        words = r.words[: r.final]
        start, end = words[0].start, words[-1].end
        if voice.any():
            heard = min(PIECE_VOICE_S, end - r.utterance.start_s)
            label = s.speakers.guess(voice, end - words[0].start, heard)
        else:
            label = max(0, s.speakers.next_label - 1)
        before = r.text.segment_end
        if before is not None:  # on from the utterance's last final: no hole between them
            start = min(start, before)
        else:  # the utterance's first words reach back to where speech began
            speech_start = r.utterance.start_s + self.config.utterances.speech_pad_s
            start = self._bridged(s, max(min(start, speech_start), start - MAX_EDGE_S), label)
        if r.final < len(r.words):  # up to the next word heard, which is not final yet
            end = max(end, min(r.words[r.final].start, end + MAX_EDGE_S))
        s.last_final = (end, label)
        seg = Segment(
            id=s.next_segment_id(),
            speaker=s.speakers.name(label),
            start=round(start, 3),
            end=round(end, 3),
            text=join_words(words),
            words=words,
        )
        r.text.add(Piece(seg.id, label, words, seg.end), r.tokens[: r.final])
        return seg

    @staticmethod
    def _voice_before(utt: Utterance, end_s: float) -> np.ndarray:
        """The utterance's audio up to ``end_s``: its last PIECE_VOICE_S at least."""
        b = int((end_s - utt.start_s) * SAMPLE_RATE)
        return utt.audio[max(0, b - int(PIECE_VOICE_S * SAMPLE_RATE)) : max(b, 0)]
