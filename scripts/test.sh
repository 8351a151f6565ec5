#!/usr/bin/env bash
# The project's checks: lint, format, tests. Expects scripts/setup-dev.sh to have run.
# With no arguments, the tests that start services run a second time with every service
# storing in PostgreSQL (HUBBUB_TEST_STORE, tests/conftest.py): both backends must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
OMP_NUM_THREADS=2 .venv/bin/python -m pytest "$@"
if [ "$#" -eq 0 ]; then
    echo "== again on PostgreSQL: the tests whose services use the store"
    HUBBUB_TEST_STORE=postgresql OMP_NUM_THREADS=2 .venv/bin/python -m pytest -q \
        tests/transcriber tests/web tests/cli tests/e2e tests/test_api.py tests/test_client.py \
        --ignore=tests/transcriber/test_replicas.py
fi
