#!/usr/bin/env bash
# The project's checks: lint, format, tests. Expects scripts/setup-dev.sh to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
OMP_NUM_THREADS=2 .venv/bin/python -m pytest "$@"
