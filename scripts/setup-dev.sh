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
