#!/usr/bin/env bash
# Idempotent set-up on Debian 12/13: Podman, a repo-local .venv, edgeprune
# installed editable with its test extras. Safe to run again: every step is
# skipped when already done; the package is reinstalled only when
# pyproject.toml (or the interpreter) changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP="$VENV/.edgeprune-installed"
export DEBIAN_FRONTEND=noninteractive

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
    if [ "$APT_UPDATED" -eq 0 ]; then
        apt-get update -q >/dev/null
        APT_UPDATED=1
    fi
    apt-get install -y -q "$@" >/dev/null
}

python_ok() {  # $1: interpreter; true when it is Python >= 3.11
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

# 1. Podman (system package: 4.3 on Debian 12, 5.4 on Debian 13).
if command -v podman >/dev/null; then
    say "podman present: $(podman --version 2>/dev/null || echo "$(command -v podman)")"
elif is_root; then
    say "installing podman with apt-get"
    apt_install podman
    say "installed $(podman --version)"
else
    die "podman is not installed and we are not root; run this script as root" \
        "or install it first (apt-get install podman)"
fi

# 2. Python >= 3.11.
if ! command -v python3 >/dev/null; then
    is_root || die "python3 is not installed; install python3 (>= 3.11) or run as root"
    say "installing python3 with apt-get"
    apt_install python3 python3-venv
fi
python_ok python3 || die "python3 >= 3.11 is required, found $(python3 --version 2>&1)"

# 3. The virtual environment (recreated when broken or too old).
if [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python" && [ -x "$VENV/bin/pip" ]; then
    say "$VENV present ($("$VENV/bin/python" --version))"
else
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        # Debian splits ensurepip into python3-venv.
        rm -rf "$VENV"
        is_root || die "python3 -m venv failed; install python3-venv (as root: apt-get install python3-venv)"
        say "installing python3-venv with apt-get"
        apt_install python3-venv
        python3 -m venv "$VENV" || die "python3 -m venv failed even with python3-venv installed"
    fi
    say "created $VENV ($("$VENV/bin/python" --version))"
fi

# 4. edgeprune + test extras, only when pyproject.toml or the interpreter changed.
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$VENV/bin/python" --version 2>&1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/edgeprune" ]; then
    say "edgeprune already installed in $VENV (pyproject.toml unchanged)"
else
    say "installing edgeprune[test] into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    echo "$want" >"$STAMP"
    say "installed edgeprune[test]"
fi
