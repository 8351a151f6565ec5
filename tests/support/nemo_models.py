"""Random-weight NeMo models of the real classes, for tests and benchmarks (no hub access).

``tiny`` builds in about a second and runs the whole streaming path on a CPU; ``full``
has the compute of the real checkpoints (multitalker Parakeet: FastConformer d_model 1024,
24 layers, vocab 1024; streaming Sortformer: 17 + 18 layers, ~117M parameters) for
timing on a GPU. ``install_hf_cache`` lays the saved ``.nemo`` files out the way
``from_pretrained`` finds them with ``HF_HUB_OFFLINE=1``, so the engine's real loading
code runs on them.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from pathlib import Path

ASR_HUB = "nvidia/multitalker-parakeet-streaming-0.6b-v1"
DIAR_HUB = "nvidia/diar_streaming_sortformer_4spk-v2.1"
N_MELS = 128
CONTEXTS = [[70, 13], [70, 6], [70, 1], [70, 0]]


@dataclass(frozen=True)
class Size:
    asr_d: int
    asr_layers: int
    asr_heads: int
    asr_sub_channels: int
    pred_hidden: int
    joint_hidden: int
    vocab: int
    diar_d: int
    diar_layers: int
    diar_sub_channels: int
    tf_d: int
    tf_layers: int
    tf_inner: int


SIZES = {
    "tiny": Size(64, 2, 4, 32, 32, 32, 64, 32, 1, 16, 32, 1, 64),
    "full": Size(1024, 24, 8, 256, 640, 640, 1024, 512, 17, 256, 192, 18, 768),
}


def _preprocessor() -> dict:
    return {
        "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
        "sample_rate": 16000,
        "normalize": "NA",
        "window_size": 0.025,
        "window_stride": 0.01,
        "window": "hann",
        "features": N_MELS,
        "n_fft": 512,
        "frame_splicing": 1,
        "dither": 1e-5,
        "pad_to": 0,
    }


def train_tokenizer(folder: Path, vocab: int, seed: int = 0) -> Path:
    """A SentencePiece model with ``vocab`` pieces, trained on generated text."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    base = ["the", "quick", "brown", "fox", "speech", "meeting", "hello", "world", "we", "talk"]
    n_words = max(2000, vocab * 40)
    made = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(vocab)]
    lines = [" ".join(rng.choices(base + made, k=12)) for _ in range(n_words // 12)]
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=vocab,
        model_type="bpe",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        minloglevel=2,
    )
    proc = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    pieces = [proc.id_to_piece(i) for i in range(proc.get_piece_size())]
    (folder / "vocab.txt").write_text("\n".join(pieces) + "\n")
    return folder


def build_asr(size: str, tokenizer_dir: Path, seed: int = 0):
    """An ``EncDecMultiTalkerRNNTBPEModel`` with speaker kernels, cache-aware streaming."""
    import torch
    from nemo.collections.asr.models.multitalker_asr_models import EncDecMultiTalkerRNNTBPEModel
    from omegaconf import OmegaConf

    s = SIZES[size]
    torch.manual_seed(seed)
    cfg = {
        "sample_rate": 16000,
        "compute_eval_loss": False,
        "model_defaults": {
            "enc_hidden": s.asr_d,
            "pred_hidden": s.pred_hidden,
            "joint_hidden": s.joint_hidden,
            "num_speakers": 4,
        },
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "preprocessor": _preprocessor(),
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": N_MELS,
            "feat_out": -1,
            "n_layers": s.asr_layers,
            "d_model": s.asr_d,
            "subsampling": "dw_striding",
            "subsampling_factor": 8,
            "subsampling_conv_channels": s.asr_sub_channels,
            "causal_downsampling": True,
            "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos",
            "n_heads": s.asr_heads,
            "att_context_size": CONTEXTS,
            "att_context_style": "chunked_limited",
            "xscaling": True,
            "pos_emb_max_len": 5000,
            "conv_kernel_size": 9,
            "conv_norm_type": "layer_norm",
            "conv_context_size": "causal",
            "dropout": 0.0,
            "dropout_pre_encoder": 0.0,
            "dropout_emb": 0.0,
            "dropout_att": 0.0,
        },
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder",
            "normalization_mode": None,
            "random_state_sampling": False,
            "blank_as_pad": True,
            "prednet": {"pred_hidden": s.pred_hidden, "pred_rnn_layers": 1, "dropout": 0.0},
        },
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint",
            "log_softmax": None,
            "preserve_memory": False,
            "fuse_loss_wer": False,
            "jointnet": {"joint_hidden": s.joint_hidden, "activation": "relu", "dropout": 0.0},
        },
        "decoding": {"strategy": "greedy_batch", "greedy": {"max_symbols": 1}},
        "loss": {"loss_name": "default"},
        "spk_kernel_type": "ff",
        "spk_kernel_layers": [0],
        "add_bg_spk_kernel": True,
    }
    model = EncDecMultiTalkerRNNTBPEModel(cfg=OmegaConf.create(cfg))
    _audible(model)
    return model.eval()


def _audible(model) -> None:
    """Make an untrained model's output depend on the audio and the speaker, and sparse.

    Random weights make the joint's logits near-constant and the prediction network's
    feedback loops (one token repeated at every frame). Here the joint listens to the
    encoder only (one symbol per frame), louder, the speaker kernels are louder (so two
    speakers' instances differ), and the blank logit is raised until most frames are blank.
    """
    import torch

    with torch.no_grad():
        model.joint.pred.weight.zero_()
        model.joint.pred.bias.zero_()
        model.joint.enc.weight *= 3
        out = model.joint.joint_net[-1]
        out.weight *= 4
        out.bias[-1] += 11.0
        for kernels in (model.spk_kernels, model.bg_spk_kernels):
            kernels["0"][-1].weight *= 5


def build_diarizer(size: str, seed: int = 0):
    """A streaming ``SortformerEncLabelModel`` for 4 speakers, fed the ASR's mel features."""
    import torch
    from nemo.collections.asr.models import SortformerEncLabelModel
    from omegaconf import OmegaConf

    s = SIZES[size]
    torch.manual_seed(seed + 1)
    cfg = {
        "sample_rate": 16000,
        "pil_weight": 0.5,
        "ats_weight": 0.5,
        "max_num_of_spks": 4,
        "streaming_mode": True,
        "model_defaults": {"fc_d_model": s.diar_d, "tf_d_model": s.tf_d},
        "preprocessor": {**_preprocessor(), "normalize": "per_feature"},
        "sortformer_modules": {
            "_target_": "nemo.collections.asr.modules.sortformer_modules.SortformerModules",
            "num_spks": 4,
            "dropout_rate": 0.0,
            "fc_d_model": s.diar_d,
            "tf_d_model": s.tf_d,
            "spkcache_len": 188,
            "fifo_len": 188,
            "chunk_len": 14,
            "spkcache_update_period": 144,
            "chunk_left_context": 1,
            "chunk_right_context": 1,
            "spkcache_sil_frames_per_spk": 3,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": N_MELS,
            "feat_out": -1,
            "n_layers": s.diar_layers,
            "d_model": s.diar_d,
            "subsampling": "dw_striding",
            "subsampling_factor": 8,
            "subsampling_conv_channels": s.diar_sub_channels,
            "causal_downsampling": False,
            "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos",
            "n_heads": 8 if s.diar_d >= 256 else 4,
            "att_context_size": [-1, -1],
            "att_context_style": "regular",
            "xscaling": True,
            "untie_biases": True,
            "pos_emb_max_len": 5000,
            "conv_kernel_size": 9,
            "conv_norm_type": "batch_norm",
            "conv_context_size": None,
            "dropout": 0.0,
            "dropout_pre_encoder": 0.0,
            "dropout_emb": 0.0,
            "dropout_att": 0.0,
        },
        "transformer_encoder": {
            "_target_": "nemo.collections.asr.modules.transformer.transformer_encoders."
            "TransformerEncoder",
            "num_layers": s.tf_layers,
            "hidden_size": s.tf_d,
            "inner_size": s.tf_inner,
            "num_attention_heads": 8 if s.tf_d >= 128 else 4,
            "attn_score_dropout": 0.0,
            "attn_layer_dropout": 0.0,
            "ffn_dropout": 0.0,
            "hidden_act": "relu",
            "pre_ln": False,
            "pre_ln_final_layer_norm": True,
        },
        "loss": {"_target_": "nemo.collections.asr.losses.bce_loss.BCELoss", "weight": None},
    }
    return SortformerEncLabelModel(cfg=OmegaConf.create(cfg)).eval()


def install_hf_cache(cache: Path, hub_name: str, nemo_file: Path, rev: str = "0" * 40) -> Path:
    """Place ``nemo_file`` where ``from_pretrained(hub_name)`` looks with HF_HUB_OFFLINE=1."""
    name = hub_name.split("/")[1]
    repo = cache / f"models--{hub_name.replace('/', '--')}"
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    target = snap / f"{name}.nemo"
    if target.exists() or target.is_symlink():
        target.unlink()
    target.symlink_to(nemo_file.resolve())
    return target


def build_hub_cache(folder: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build both models, save them as .nemo and install them in a private HF cache."""
    folder.mkdir(parents=True, exist_ok=True)
    s = SIZES[size]
    tok = train_tokenizer(folder / "tokenizer", s.vocab, seed)
    asr_file, diar_file = folder / "asr.nemo", folder / "diar.nemo"
    build_asr(size, tok, seed).save_to(str(asr_file))
    build_diarizer(size, seed).save_to(str(diar_file))
    cache = folder / "hf"
    install_hf_cache(cache, ASR_HUB, asr_file)
    install_hf_cache(cache, DIAR_HUB, diar_file)
    return cache
