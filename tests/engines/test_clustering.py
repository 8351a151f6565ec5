import numpy as np

from hubbub.engines.cpu.clustering import OnlineClustering
from hubbub.engines.cpu.diarization import split_turns


def _voice(rng: np.random.Generator, dim: int = 32) -> np.ndarray:
    v = rng.standard_normal(dim)
    return v / np.linalg.norm(v)


def _sample(rng: np.random.Generator, centre: np.ndarray, noise: float = 0.3) -> np.ndarray:
    v = centre + noise * rng.standard_normal(len(centre)) / np.sqrt(len(centre))
    return v / np.linalg.norm(v)


def test_each_voice_keeps_one_label():
    rng = np.random.default_rng(1)
    voices = [_voice(rng) for _ in range(3)]
    c = OnlineClustering(max_speakers=8, threshold=0.6)
    order = [0, 1, 2, 0, 1, 2, 2, 0, 1, 0]
    labels = [c.assign(_sample(rng, voices[v]), 3.0) for v in order]
    assert labels == order
    assert c.n_speakers == 3


def test_max_speakers_caps_new_labels():
    rng = np.random.default_rng(2)
    voices = [_voice(rng) for _ in range(4)]
    c = OnlineClustering(max_speakers=2, threshold=0.6)
    labels = [c.assign(_sample(rng, v), 3.0) for v in voices]
    assert set(labels) == {0, 1}
    assert c.n_speakers == 2


def test_short_segment_never_founds_a_speaker():
    rng = np.random.default_rng(3)
    a, b = _voice(rng), _voice(rng)
    c = OnlineClustering(max_speakers=4, threshold=0.6, min_new_speaker_s=1.0)
    assert c.assign(_sample(rng, a), 3.0) == 0
    assert c.assign(_sample(rng, b), 0.4) == 0  # too short to trust: joins the closest
    assert c.assign(_sample(rng, b), 2.0) == 1
    assert c.peek(_sample(rng, b)) == 1
    assert c.n_speakers == 2


def test_split_turns_finds_a_speaker_change():
    rng = np.random.default_rng(4)
    a, b = _voice(rng), _voice(rng)
    seq = np.stack([_sample(rng, a) for _ in range(8)] + [_sample(rng, b) for _ in range(6)])
    turns = split_turns(seq)
    assert [(t.first, t.last) for t in turns] == [(0, 8), (8, 14)]
    same = np.stack([_sample(rng, a) for _ in range(14)])
    assert len(split_turns(same)) == 1
