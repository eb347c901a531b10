#!/usr/bin/env bash
# Set up (idempotent), lint, then run pytest with the given arguments.
# Exits with pytest's status; a lint failure alone still fails the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

lint=0
.venv/bin/ruff check . || lint=$?

tests=0
.venv/bin/python -m pytest "$@" || tests=$?

if [ "$tests" -ne 0 ]; then
    exit "$tests"
fi
if [ "$lint" -ne 0 ]; then
    echo "test.sh: tests passed but ruff check failed" >&2
fi
exit "$lint"
