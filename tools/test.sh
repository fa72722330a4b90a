#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it: `bash tools/test.sh [pytest args]`.
# Idempotent: a second run reuses .venv and skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages some tests drive for real. Installed only where missing (root, as on CI).
debian_packages() {
    local need=() pkg
    command -v cmake >/dev/null || need+=(cmake)
    command -v g++ >/dev/null || need+=(g++)
    command -v make >/dev/null || need+=(make)
    command -v nginx >/dev/null || need+=(nginx-light)
    command -v git >/dev/null || need+=(git)  # tpbuild affected / --changed-since compare with git revisions
    # The python_stub tests: the real r24.10 stub's build dependencies, and Debian's Python 3.11 (a shared
    # libpython in the loader's default path, headers, venv) that stubs embed and envs are based on.
    for pkg in rapidjson-dev libarchive-dev libboost1.81-dev zlib1g-dev python3.11-dev python3.11-venv; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    [ ${#need[@]} -gt 0 ] || return 0
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    else
        echo "note: missing ${need[*]} (install them with apt-get); tests that need them are skipped" >&2
    fi
}

# Beside the test venv's pip install (they share nothing, and both mostly wait on the network): the
# Debian packages, then what tests/test_reapi.py's BuildGrid cluster needs (tools/reapi-cluster.sh:
# PostgreSQL from Debian, after the other apt-get, and BuildGrid 0.9.1 in a venv on the machine's
# Python 3.13 (pyenv's)), installed here once, outside the run.
(
    debian_packages
    bash tools/reapi-cluster.sh install || echo "note: the REAPI cluster could not be installed; tests/test_reapi.py is skipped" >&2
) &
beside=$!

source tools/venv.sh test
wait "$beside"

# One pytest-xdist worker per core and one more: much of the suite waits on servers, downloads and cmake,
# and on the 2-core CI machine 3 workers beat 2 in both quiet full runs compared (588 vs 672 s, 617 vs 632 s).
# Tests sharing a module- or session-scoped fixture (a server, a cluster, a build) stay on one worker
# together (tests/conftest.py groups them). `-n 0` runs in this process.
exec .venv/bin/python -m pytest -q -n "$(( $(nproc) + 1 ))" --dist loadgroup "$@"
