"""The NeMo engine on tiny random-weight models of the real classes, loaded the real way.

The models are built once per run, saved as .nemo files and laid out as a private
Hugging Face cache, so ``from_pretrained("nvidia/...")`` (offline) loads them.
"""

from __future__ import annotations

import json
import os
import weakref
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nemo")
torch = pytest.importorskip("torch")

from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from hubbub.audio import float_to_pcm16  # noqa: E402
from hubbub.decode import load_audio  # noqa: E402
from hubbub.engines.base import ChunkInput, SessionOptions  # noqa: E402
from hubbub.settings import Settings  # noqa: E402

from support.nemo_models import ASR_HUB, DIAR_HUB, build_hub_cache  # noqa: E402

CLIPS = [
    "Picovoice-falcon/falcon_test.flac",
    "openai-whisper/jfk.flac",
    "MFA/acoustic_corpus.flac",
]


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    import huggingface_hub.constants as hf

    torch.set_num_threads(1)
    cache = build_hub_cache(tmp_path_factory.mktemp("nemo-models"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HUB_CACHE", str(cache))
        mp.setattr(hf, "HF_HUB_OFFLINE", True)
        mp.setattr(hf, "HF_HUB_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def engine(hub_cache):
    """Built by the factory from settings: hub names -> from_pretrained -> the tiny models."""
    from hubbub.engines.factory import create_engine

    eng = create_engine(Settings(engine="nemo", nemo={"device": "cpu", "precision": "fp32"}))
    eng.warmup()
    return eng


@pytest.fixture(scope="module")
def clips(speech_dir: Path) -> list[np.ndarray]:
    return [load_audio(speech_dir / name) for name in CLIPS]


def stream(engine, audios: list[np.ndarray], starts: list[int] | None = None, opts=None):
    """Step sessions together (session i joins at step starts[i]); return every update."""
    starts = starts or [0] * len(audios)
    sessions = [engine.open_session(f"s{i}", opts or SessionOptions()) for i in range(len(audios))]
    updates: list[list] = [[] for _ in audios]
    pos, step, chunk = [0] * len(audios), 0, engine.chunk_samples
    while any(p <= len(a) for p, a in zip(pos, audios, strict=True)):
        batch, owners = [], []
        for i, audio in enumerate(audios):
            if step < starts[i] or pos[i] > len(audio):
                continue
            piece = audio[pos[i] : pos[i] + chunk]
            pos[i] += chunk
            last = pos[i] >= len(audio)
            pos[i] = len(audio) + 1 if last else pos[i]
            batch.append(ChunkInput(sessions[i], piece, flush=last))
            owners.append(i)
        step += 1
        for i, update in zip(owners, engine.step(batch) if batch else [], strict=True):
            updates[i].append(update)
    for s in sessions:
        engine.close_session(s)
    return updates


def finals(updates) -> list[tuple]:
    return [
        (f.id, f.speaker, f.start, f.end, f.text, f.overlap, tuple(w.text for w in f.words))
        for u in updates
        for f in u.finals
    ]


def test_loaded_through_hub_names_with_real_streaming_knobs(engine):
    from nemo.collections.asr.models import SortformerEncLabelModel
    from nemo.collections.asr.models.multitalker_asr_models import EncDecMultiTalkerRNNTBPEModel

    assert engine.name == "nemo"
    assert isinstance(engine.models.asr, EncDecMultiTalkerRNNTBPEModel)
    assert isinstance(engine.models.diar, SortformerEncLabelModel)
    assert engine.config.asr_model == ASR_HUB and engine.config.diar_model == DIAR_HUB
    assert engine.models.asr.encoder.att_context_size == [70, 13]
    assert engine.chunk_samples == 17920  # 1.12 s
    assert engine.models.diar.sortformer_modules.spkcache_update_period == 144
    assert engine.capacity >= 1  # measured at warmup


def test_local_nemo_files_load_with_restore_from(hub_cache):
    from hubbub.engines.nemo import NemoEngine, NemoEngineConfig

    snap = next((hub_cache / f"models--{ASR_HUB.replace('/', '--')}" / "snapshots").iterdir())
    asr_file = next(snap.glob("*.nemo")).resolve()
    diar_file = asr_file.parent / "diar.nemo"
    eng = NemoEngine(
        NemoEngineConfig(
            asr_model=str(asr_file), diar_model=str(diar_file), device="cpu", latency="160ms"
        )
    )
    assert eng.chunk_samples == 2560 and eng.models.asr.encoder.att_context_size == [70, 1]
    with pytest.raises(FileNotFoundError):
        NemoEngine(NemoEngineConfig(asr_model="/nowhere/model.nemo", device="cpu"))


def test_mel_frames_equal_offline_features(engine, clips):
    from hubbub.engines.nemo.features import LAG, PcmWindow

    audio, fe, g = clips[1], engine.frontend, engine.geometry
    with torch.inference_mode():
        full, _ = engine.models.asr.preprocessor(
            input_signal=torch.from_numpy(audio)[None], length=torch.tensor([len(audio)])
        )
        window = PcmWindow(g.window_samples)
        for n in range(1, 6):
            window.push(audio[(n - 1) * g.chunk_samples : n * g.chunk_samples])
            mel = fe.mel([window.samples], [n])[0]
            end = n * g.chunk_frames - LAG
            start = 0 if n == 1 else end - g.chunk_frames - g.cache_frames
            assert torch.equal(mel[-(end - start) :], full[0, :, start:end].T)


def test_batched_concat_and_pad_equals_nemos():
    from nemo.collections.asr.modules.sortformer_modules import SortformerModules

    from hubbub.engines.nemo.diarizer import concat_and_pad

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        parts = [torch.randn(5, n, 7, generator=g) for n in (12, 9, 3)]
        lengths = [torch.randint(0, n + 1, (5,), generator=g) for n in (12, 9)]
        lengths.append(torch.full((5,), 3))
        want, want_len = SortformerModules.concat_and_pad(parts, lengths)
        got, got_len = concat_and_pad(parts, lengths)
        assert torch.equal(got, want) and torch.equal(got_len, want_len)


def test_streams_real_speech_through_the_contract(engine, clips):
    audio = clips[0]
    updates = stream(engine, [audio])[0]
    segs = [f for u in updates for f in u.finals]
    assert segs, "the tiny model emits words"
    ids = [s.id for s in segs]
    assert ids == [f"s0-{i}" for i in range(1, len(ids) + 1)]
    assert {s.speaker for s in segs} <= {"S1", "S2", "S3", "S4"}
    duration = len(audio) / 16000
    for s in segs:
        assert s.words and s.text == " ".join(w.text for w in s.words)
        assert 0 <= s.start <= s.end <= duration + 1e-6
        assert all(s.start <= w.start <= w.end <= s.end for w in s.words)
        # Word times are 80 ms frame indices (words from the flush's padding: the end).
        frames = [w.start / 0.08 for w in s.words if w.start != round(duration, 3)]
        assert all(abs(f - round(f)) < 1e-6 for f in frames)
    assert updates[-1].audio_processed_s == pytest.approx(duration)
    assert updates[-1].partials == []  # a flush turns every tail final
    tails = [p for u in updates for p in u.partials]
    assert tails and all(p.id == f"s0-partial-{p.speaker}" for p in tails)
    assert engine.models.asr.spk_targets is None  # cleared after every call


def test_each_word_is_final_a_chunk_and_a_step_after_it_is_decoded(engine, clips):
    """Tokens are never revised, so a word is final as soon as it is complete: the step
    that decodes the next word's start, or the one after."""
    updates = stream(engine, [clips[2]])[0]
    first_seen: dict[tuple[str, float], float] = {}  # (speaker, start) -> decoded by
    for u in updates:
        for seg in u.partials + u.finals:
            for w in seg.words:
                first_seen.setdefault((seg.speaker, w.start), u.audio_processed_s)
    chunk = engine.chunk_samples / 16000
    waits = [
        u.audio_processed_s - first_seen[(seg.speaker, w.start)]
        for u in updates[:-1]  # the last update is the flush
        for seg in u.finals
        for w in seg.words
    ]
    assert len(waits) > 20
    assert max(waits) <= chunk + 1e-6  # one step, one chunk of audio, after it is heard


def test_overlapping_speakers_each_get_a_tail_and_finals_carry_overlap(engine, clips):
    # The random diarizer hears two speakers at once through most of this clip.
    updates = stream(engine, [clips[0]])[0]
    both = [u for u in updates if len({p.speaker for p in u.partials}) >= 2]
    assert both, "two speakers talking at once -> two partial tails in one update"
    a, b = both[0].partials[:2]
    assert a.start < b.end and b.start < a.end
    assert any(f.overlap for u in updates for f in u.finals)


def test_batched_steps_equal_each_session_alone(engine, clips):
    alone = [finals(stream(engine, [audio])[0]) for audio in clips]
    together = stream(engine, clips, starts=[0, 3, 7])
    for i, updates in enumerate(together):
        got = [(f"s0-{x[0].split('-')[1]}", *x[1:]) for x in finals(updates)]
        assert got == alone[i], f"session {i} differs when batched"


def test_background_targets_follow_speaker_ids_not_positions(engine):
    from hubbub.engines.nemo.engine import _Advance

    s = engine.open_session("bg", SessionOptions())
    frames = engine.geometry.out_frames
    probs = torch.zeros((1, frames, 4))
    probs[0, :, 1] = 0.9  # speakers 1 and 3 talk: a non-contiguous active set
    probs[0, frames // 2 :, 3] = 0.8
    s.diar.recent[:] = probs[0, -1]
    chunk = torch.zeros((1, frames, engine.models.asr.encoder.d_model))
    rows, _ = engine._rows([_Advance(s, np.zeros(0), 0)], probs, chunk)
    bg = {slot.index: rows.bg[i] for i, slot in enumerate(rows.slots)}
    assert sorted(bg) == [1, 3]
    assert torch.equal(bg[1], (probs[0, :, 3] > 0.5).float())
    assert torch.equal(bg[3], (probs[0, :, 1] > 0.5).float())
    engine.close_session(s)


def test_max_speakers_limits_asr_instances(engine, clips):
    updates = stream(engine, [clips[0]], opts=SessionOptions(max_speakers=1))[0]
    assert {f.speaker for u in updates for f in u.finals} == {"S1"}


def test_finalize_mid_stream_keeps_the_stream_clock(engine, clips):
    audio = clips[1]
    s = engine.open_session("flush", SessionOptions())
    chunk, cut = engine.chunk_samples, len(audio) // 2
    got = []
    for start in range(0, cut, chunk):
        piece = audio[start : min(start + chunk, cut)]
        got += engine.step([ChunkInput(s, piece, flush=start + chunk >= cut)])[0].finals
    assert s.audio_s == pytest.approx(cut / 16000) and s.pad_samples > 0
    before = len(got)
    for start in range(cut, len(audio), chunk):
        piece = audio[start : start + chunk]
        u = engine.step([ChunkInput(s, piece, flush=start + chunk >= len(audio))])[0]
        got += u.finals
    assert all(f.end <= cut / 16000 + 1e-6 for f in got[:before])
    after = got[before:]
    assert after and all(cut / 16000 - 0.2 <= f.start <= len(audio) / 16000 for f in after)
    engine.close_session(s)


def test_close_session_frees_its_state(engine, clips):
    s = engine.open_session("closing", SessionOptions())
    chunk = engine.chunk_samples
    for start in range(0, 4 * chunk, chunk):
        engine.step([ChunkInput(s, clips[0][start : start + chunk])])
    assert s.slots and s.tensors()
    refs = [weakref.ref(slot.cache_channel) for slot in s.slots.values()]
    refs.append(weakref.ref(s.diar.spkcache))
    engine.close_session(s)
    assert s.tensors() == {} and not s.slots
    # Freed at once, without a garbage collection: nothing else holds them, no cycles.
    assert all(r() is None for r in refs), "nothing else holds a closed session's tensors"


def test_long_stream_state_stays_bounded(engine, clips):
    """15 minutes of audio in 1.12 s chunks: every tensor and buffer keeps its size."""
    audio = np.concatenate([clips[0], clips[2], clips[1]] * 12)[: 15 * 60 * 16000]
    s = engine.open_session("long", SessionOptions())
    chunk = engine.chunk_samples
    shapes, open_words, finals_seen = [], [], 0
    for i, start in enumerate(range(0, len(audio) - chunk + 1, chunk)):
        u = engine.step([ChunkInput(s, audio[start : start + chunk])])[0]
        finals_seen += len(u.finals)
        assert len(u.finals) <= 4 and len(u.partials) <= 4  # update size is bounded too
        if i % 50 == 49:
            shapes.append(s.tensors())
            open_words.append(max(sl.words.open_words for sl in s.slots.values()))
            for sl in s.slots.values():
                assert sl.dec_state is not None and _state_numel(sl.dec_state) < 10_000
    assert finals_seen > 50
    assert all(sh == shapes[-1] for sh in shapes[1:]), "tensor shapes never change"
    longest = engine.config.max_segment_s / 0.08 + 14
    assert max(open_words) <= longest
    assert s.audio_s == pytest.approx(len(audio) // chunk * chunk / 16000)
    engine.close_session(s)


def _state_numel(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, list | tuple):
        return sum(_state_numel(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_state_numel(getattr(value, f)) for f in value.__dataclass_fields__)
    return 0


def test_bf16_autocast_path_runs(hub_cache, clips):
    from hubbub.engines.nemo import NemoEngine, NemoEngineConfig
    from hubbub.engines.nemo.models import load_models
    from hubbub.engines.nemo.presets import preset

    cfg = NemoEngineConfig(device="cpu", capacity=1)
    models = load_models(cfg, preset(cfg.latency))
    models.autocast_dtype = torch.bfloat16  # CUDA's setting, exercised on the CPU
    # oneDNN has a bf16 LSTM only on CPUs with bf16 instructions (AVX-512 BF16, AMX): off,
    # ATen's own kernels run the same autocast path on any CPU.
    with torch.backends.mkldnn.flags(enabled=False):
        updates = stream(NemoEngine(cfg, models), [clips[1]])[0]
    assert any(u.finals for u in updates)


def test_live_service_streams_over_websocket(engine, clips, tmp_path):
    from hubbub.transcriber.app import create_app

    from support.servers import serve

    settings = Settings(engine="nemo", data_dir=str(tmp_path), max_sessions=2)
    pcm = float_to_pcm16(clips[0])
    with serve(create_app(settings, engine=engine)) as url:
        messages = []
        with connect(url.replace("http://", "ws://") + "/v1/stream", max_size=None) as ws:
            ws.send(json.dumps({"type": "start", "sample_rate": 16000, "max_speakers": 4}))
            messages.append(json.loads(ws.recv(timeout=30)))
            for i in range(0, len(pcm), 4001):
                ws.send(pcm[i : i + 4001])
            ws.send(json.dumps({"type": "stop"}))
            try:
                while True:
                    messages.append(json.loads(ws.recv(timeout=60)))
            except ConnectionClosed:
                pass
    assert messages[0]["type"] == "ready" and messages[0]["engine"] == "nemo"
    assert messages[-1]["type"] == "ended"
    updates = [m for m in messages if m["type"] == "transcript"]
    segs = [s for u in updates for s in u["finals"]]
    assert segs and len({s["id"] for s in segs}) == len(segs)
    assert any(len(u["partials"]) >= 2 for u in updates)
    assert updates[-1]["audio_processed_s"] == pytest.approx(len(clips[0]) / 16000, abs=0.05)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_a_failed_step_leaves_sessions_as_they_were(engine, clips, monkeypatch):
    """The scheduler retries a failed batch session by session: nothing may advance twice."""
    import hubbub.engines.nemo.engine as module

    real, calls = module.asr_step, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # after the diarizer and the windows have moved on
            raise RuntimeError("injected")
        return real(*args, **kwargs)

    expected = finals(stream(engine, [clips[1]])[0])
    monkeypatch.setattr(module, "asr_step", flaky)
    s = engine.open_session("s0", SessionOptions())
    chunk, audio, got = engine.chunk_samples, clips[1], []
    for start in range(0, len(audio), chunk):
        item = ChunkInput(s, audio[start : start + chunk], flush=start + chunk >= len(audio))
        try:
            update = engine.step([item])[0]
        except RuntimeError:
            update = engine.step([item])[0]  # the scheduler's retry
        got.append(update)
    assert calls["n"] > 3
    assert finals(got) == expected
    engine.close_session(s)


def test_tokens_equal_nemos_own_multitalker_streaming(engine, clips):
    """Same models, same clip: NeMo's SpeakerTaggedASR (file simulation, one session) and
    the batched engine give the same tokens per speaker, at the same frames.

    NeMo's background-speaker ids are taken by position, not id: that bug is patched in
    the reference (the random diarizer hears speakers 0 and 2, where it matters).
    """
    import inspect
    import textwrap

    import nemo.collections.asr.parts.utils.multispk_transcribe_utils as mtu
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer
    from omegaconf import OmegaConf

    asr, diar, chunk = engine.models.asr, engine.models.diar, engine.chunk_samples
    steps = len(clips[0]) // chunk
    audio = clips[0][: steps * chunk + 3000]  # NeMo's last, partial chunk is not compared

    s = engine.open_session("ours", SessionOptions())
    words: dict[str, list] = {}
    for k in range(steps):
        update = engine.step([ChunkInput(s, audio[k * chunk : (k + 1) * chunk])])[0]
        for seg in update.finals:
            words.setdefault(seg.speaker, []).extend(seg.words)
    for seg in update.partials:
        words.setdefault(seg.speaker, []).extend(seg.words)
    engine.close_session(s)

    manager = mtu.MultiTalkerInstanceManager
    src = textwrap.dedent(inspect.getsource(manager.get_active_speakers_info))
    bug = "inactive_speaker_ids = [i for i in range(len(speaker_ids)) if i != speaker_id]"
    src = src.replace(bug, "inactive_speaker_ids = [i for i in speaker_ids if i != speaker_id]")
    fixed: dict = {}
    exec(src, mtu.__dict__, fixed)
    cfg = OmegaConf.create(
        {
            "deploy_mode": True,
            "fix_prev_words_count": 5,
            "update_prev_words_sentence": 5,
            "ignored_initial_frame_steps": 5,
            "att_context_size": [70, 13],
            "max_num_of_spks": 4,
            "cache_gating": True,
            "cache_gating_buffer_size": 2,
            "binary_diar_preds": False,
            "masked_asr": False,
            "batch_size": 1,
            "generate_realtime_scripts": False,
            "log": False,
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(manager, "get_active_speakers_info", fixed["get_active_speakers_info"])
        mp.setattr(diar, "async_streaming", False)  # NeMo's one-session path is synchronous
        streamer = mtu.SpeakerTaggedASR(cfg, asr, diar)
        buffer = CacheAwareStreamingAudioBuffer(model=asr, online_normalization=False)
        buffer.append_audio(audio)
        with torch.inference_mode():
            for k, (feats, lengths) in enumerate(iter(buffer)):
                if k == steps:
                    break
                streamer.perform_parallel_streaming_stt_spk(
                    step_num=k,
                    chunk_audio=feats,
                    chunk_lengths=lengths,
                    is_buffer_empty=False,
                    drop_extra_pre_encoded=0 if k == 0 else 2,
                )
    asr.clear_speaker_targets()
    state = streamer.instance_manager.batch_asr_states[0]
    reference = {
        f"S{k + 1}": state.previous_hypothesis[k]
        for k in state.get_speakers()
        if state.previous_hypothesis[k] is not None
    }
    assert sorted(reference) == sorted(words) and len(reference) >= 2
    for speaker, hyp in reference.items():
        text = asr.tokenizer.ids_to_text([int(i) for i in hyp.y_sequence])
        assert "".join(w.text for w in words[speaker]) == text.replace(" ", "")
        frames = {round(int(t) * 0.08, 3) for t in hyp.timestamp}
        assert all(w.start in frames for w in words[speaker])
