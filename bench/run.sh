#!/usr/bin/env bash
# The benchmark from one command on a fresh machine: `bash bench/run.sh [bench/run.py options]`.
# Installs tpbuild and the peers it is compared with (doit and ninja from PyPI via the `bench` extra,
# make from Debian), then runs bench/run.py. A peer that still cannot be installed is skipped by
# run.py with the reason printed. Idempotent: a second run reuses .venv and what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

source tools/venv.sh bench

if ! command -v make >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make
    else
        echo "note: make is missing and this is not root (apt-get install make); make is skipped" >&2
    fi
fi

exec .venv/bin/python bench/run.py "$@"
