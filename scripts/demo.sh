#!/usr/bin/env bash
# Set up (idempotent), then run `edgeprune demo` with the given arguments.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Set-up chatter goes to stderr so the demo's own output stays clean.
bash scripts/setup.sh >&2
exec .venv/bin/edgeprune demo "$@"
