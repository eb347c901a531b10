#!/usr/bin/env bash
# Set up (idempotent), lint, then run pytest with the given arguments.
# Exits with pytest's status; a lint failure alone still fails the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

# Podman 5 builds (scripts/provision-podman5.sh) join the system Podman: every
# Podman test then runs once per binary. Required in CI and with
# EDGEPRUNE_PODMAN5=1: provisioned (downloaded once, then cached), and a
# failure fails the run. EDGEPRUNE_PODMAN5=0 leaves them out. Otherwise the
# cached builds are used when there are any, with a loud warning when not.
is_ci() { case "${CI:-}" in "" | 0 | [Ff][Aa][Ll][Ss][Ee] | [Nn][Oo]) return 1 ;; esac; }
podman5="${EDGEPRUNE_PODMAN5:-}"
is_ci && podman5=1
builds=""
case "$podman5" in
1)
    export EDGEPRUNE_PODMAN5=1 # tests/test_podman5.py then insists on both builds
    builds="$(bash scripts/provision-podman5.sh)" || {
        echo "test.sh: Podman 5 could not be provisioned (see above); not testing without it" >&2
        exit 1
    }
    ;;
0) echo "test.sh: EDGEPRUNE_PODMAN5=0: testing the system Podman only" >&2 ;;
*)
    builds="$(bash scripts/provision-podman5.sh --cached)" || {
        bar="########################################################################"
        printf '%s\n%s\n%s\n%s\n' "$bar" \
            "test.sh: WARNING: no Podman 5 tests for the build(s) named above;" \
            "test.sh: EDGEPRUNE_PODMAN5=1 bash scripts/test.sh downloads them." "$bar" >&2
    }
    ;;
esac
if [ -n "$builds" ]; then
    EDGEPRUNE_PODMAN_BINARIES="${EDGEPRUNE_PODMAN_BINARIES:+$EDGEPRUNE_PODMAN_BINARIES:}$(paste -sd: <<<"$builds")"
    export EDGEPRUNE_PODMAN_BINARIES
    echo "test.sh: Podman binaries besides the system's: $EDGEPRUNE_PODMAN_BINARIES" >&2
fi

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
