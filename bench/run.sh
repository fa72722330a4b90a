#!/usr/bin/env bash
# The benchmark from one command on a fresh machine: `bash bench/run.sh [bench/run.py options]`.
# Installs tpbuild and the peers it is compared with (doit and ninja from PyPI via the `bench` extra,
# make from Debian), then runs bench/run.py. A peer that still cannot be installed is skipped by
# run.py with the reason printed. Idempotent: a second run reuses .venv-bench and what is installed.
# tpbuild is measured as users install it: a regular install of the checkout (reinstalled each run), in
# a venv of its own, not the editable one the tests use, whose finder is imported at every start.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-bench source tools/venv.sh bench release

if ! command -v make >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make
    else
        echo "note: make is missing and this is not root (apt-get install make); make is skipped" >&2
    fi
fi

exec .venv-bench/bin/python bench/run.py "$@"
