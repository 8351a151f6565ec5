#!/usr/bin/env bash
# Set up a development/test environment: system packages, test voices, a venv with
# hubbub and its test extras. Idempotent; fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned (the CPU wheel; an unpinned torch pulls a multi-GB CUDA build),
# then hubbub with its test and NeMo extras under that pin.
.venv/bin/python -m pip install -q torch==2.13.0
echo 'torch==2.13.0' > .venv/torch-pin.txt
.venv/bin/python -m pip install -q -c .venv/torch-pin.txt -e ".[test,nemo]"
PYTHON=.venv/bin/python bash scripts/install-test-voices.sh

# Browser tests (tests/test_browser.py): Debian's Chromium, driven by Playwright for Python
# (installed above with the test extra; never `playwright install`, it downloads browsers).
# Store tests: Debian's PostgreSQL server (tests start their own cluster on a free port);
# replica tests: nginx as the load balancer in front of two transcribers.
need=()
for p in chromium chromium-driver postgresql nginx; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || need+=("$p")
done
if ((${#need[@]})); then
    echo "setup-dev: apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
