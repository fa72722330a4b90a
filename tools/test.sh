#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it: `bash tools/test.sh [pytest args]`.
# Idempotent: a second run reuses .venv and skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

# Debian packages some tests drive for real. Installed only where missing (root, as on CI).
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    else
        echo "note: missing ${need[*]} (install them with apt-get); tests that need them are skipped" >&2
    fi
fi

exec .venv/bin/python -m pytest -q "$@"
