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
.venv/bin/python -m pip install -q -e ".[test]"
PYTHON=.venv/bin/python bash scripts/install-test-voices.sh

# Browser tests (tests/test_browser.py): Debian's Chromium, driven by Playwright for Python
# (installed above with the test extra; never `playwright install`, it downloads browsers).
need=()
for p in chromium chromium-driver; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || need+=("$p")
done
if ((${#need[@]})); then
    echo "setup-dev: apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
