#!/usr/bin/env bash
# Fetch, here, the wheels NeMo needs on the GPU machine (Python 3.12, x86-64, no network
# there; its image already has torch, transformers, numpy, scipy, ...). Checked on an H200
# machine (torch 2.11.0+cu130, Python 3.12.3) on 2026-11-28.
# The versions are the ones the tests run with. Pure-Python packages that PyPI ships only
# as source are built into wheels here. Output: .whl/ (kept out of git).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY="${PYTHON:-python3}"
PKGS=(
    nemo-toolkit==3.0.0 annotated-types==0.8.0 antlr4-python3-runtime==4.9.3
    braceexpand==0.1.7 cytoolz==1.2.0 datasets==5.2.0 dill==0.4.1 hydra-core==1.3.2
    intervaltree==3.2.1 kaldialign==0.12.0 lhotse==1.33.0 librosa==0.11.0
    multiprocess==0.70.19 nv-one-logger-core==2.3.1
    nv-one-logger-pytorch-lightning-integration==2.3.1
    nv-one-logger-training-telemetry==2.3.1 omegaconf==2.3.0 overrides==7.7.0
    pydantic==2.14.4 pydantic-core==2.50.5 soundfile==0.14.0 strenum==0.4.15
    toml==0.10.2 typing-inspection==0.4.5 webdataset==1.0.2
    # the image's lightning is newer than nv-one-logger accepts; the rest are imported by
    # NeMo's ASR collection (lhotse, librosa, text normalisers) and missing from the image
    lightning==2.4.0 cffi==2.1.1 pycparser==3.12 audioread==3.1.0 decorator==5.3.1
    soxr==1.1.0 pooch==1.9.0 platformdirs==4.14.8 num2words==0.5.14 docopt==0.6.2
    jiwer==4.0.0 RapidFuzz==3.14.6 text-unidecode==1.3 smart_open==9.0.2 aistore==2.0.0
    whisper_normalizer==0.1.15 indic_numtowords==1.1.0 text2num==3.1.0 lazy-importer==0.1.0
    more-itertools==11.2.1
)
for pkg in "${PKGS[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "$pkg" 2>/dev/null \
        || "$PY" -m pip wheel -q --no-deps -w .whl "$pkg"
done
du -sh .whl
