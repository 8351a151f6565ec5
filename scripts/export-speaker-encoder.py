"""Export the GE2E speaker encoder that ships in the ``resemblyzer`` wheel to ONNX.

hubbub runs the encoder with onnxruntime alone; torch is needed only here, once:

    pip install torch==2.13.0 && pip install --no-deps resemblyzer==0.1.4
    python scripts/export-speaker-encoder.py

The network (3-layer LSTM over 40-band mel frames, a linear layer, ReLU, L2 norm) is
rebuilt from its published shape and loaded with the wheel's ``pretrained.pt`` (Resemblyzer,
Apache-2.0, Corentin Jemine / Resemble AI; a GE2E encoder after Wan et al. 2018), without
importing resemblyzer itself (its audio module pulls librosa and webrtcvad). The ONNX file goes
beside the CPU engine, and must agree with torch to a cosine of 0.9999999 on random input.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "src/hubbub/engines/cpu/models/ge2e.onnx"


class Ge2eEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        return raw / torch.norm(raw, dim=1, keepdim=True)


def weights() -> Path:
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("resemblyzer is not installed: pip install --no-deps resemblyzer==0.1.4")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


def main() -> None:
    model = Ge2eEncoder()
    state = torch.load(weights(), map_location="cpu")["model_state"]
    missing, _ = model.load_state_dict(state, strict=False)
    assert not missing, f"weights missing for {missing}"
    model.eval()
    example = torch.rand(2, 160, 40)
    torch.onnx.export(
        model,
        (example,),
        OUT,
        input_names=["mels"],
        output_names=["embedding"],
        dynamic_axes={"mels": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(OUT), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for frames in (40, 100, 160, 300):
        x = rng.random((3, frames, 40), dtype=np.float32) * rng.random() * 10
        ours = session.run(None, {"mels": x})[0]
        with torch.no_grad():
            theirs = model(torch.from_numpy(x)).numpy()
        a, b = ours.astype(np.float64), theirs.astype(np.float64)
        cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cos.min() >= 0.9999999, (frames, cos)
    print(
        f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB); onnxruntime == torch (cos >= 0.9999999)"
    )


if __name__ == "__main__":
    main()
