#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it: `bash tools/test.sh [pytest args]`.
# Idempotent: a second run reuses .venv and skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=tools/apt.sh
source tools/apt.sh

# Debian packages some tests drive for real, and what tests/test_reapi.py's cluster needs from Debian
# (PostgreSQL): installed only where missing (root, as on CI), in one apt-get run.
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
    mapfile -t -O "${#need[@]}" need < <(bash tools/reapi-cluster.sh debian-packages)
    [ ${#need[@]} -gt 0 ] || return 0
    if [ "$(id -u)" = 0 ]; then
        apt_install "${need[@]}"
    else
        echo "note: missing ${need[*]} (install them with apt-get); tests that need them are skipped" >&2
    fi
}

# Three installs at once (they share nothing, and mostly wait on the network or on one core each): the
# Debian packages, BuildGrid 0.9.1 in a venv on the machine's Python 3.13 (pyenv's) for
# tests/test_reapi.py's cluster (tools/reapi-cluster.sh), and the test venv.
debian_packages &
debian=$!
(bash tools/reapi-cluster.sh install-buildgrid ||
    echo "note: the REAPI cluster could not be installed; tests/test_reapi.py is skipped" >&2) &
buildgrid=$!

source tools/venv.sh test
wait "$debian"  # a failed apt-get stops here
wait "$buildgrid"

# One pytest-xdist worker per core and one more: much of the suite waits on servers, downloads and cmake,
# and on the 2-core CI machine 3 workers beat 2 in both quiet full runs compared (588 vs 672 s, 617 vs 632 s).
# Tests sharing a module- or session-scoped fixture (a server, a cluster, a build) stay on one worker
# together (tests/conftest.py groups them). `-n 0` runs in this process.
exec .venv/bin/python -m pytest -q -n "$(( $(nproc) + 1 ))" --dist loadgroup "$@"
