#!/usr/bin/env bash
# A one-command REAPI cluster on 127.0.0.1: PostgreSQL (BuildGrid's scheduler database), BuildGrid
# 0.9.1 (CAS, ByteStream, ActionCache, Execution and Bots on one port) and N `tpbuild worker`s.
#
#   tools/reapi-cluster.sh up [--workers N] [--property K=V]...   start (installs what is missing); prints
#                                                                 the endpoint (grpc://127.0.0.1:PORT) last
#   tools/reapi-cluster.sh down                                   stop everything it started, delete its state
#   tools/reapi-cluster.sh status                                 what runs, and the endpoint
#   tools/reapi-cluster.sh install                                only install what is missing
#   tools/reapi-cluster.sh install-buildgrid                      only BuildGrid's venv (no root needed)
#   tools/reapi-cluster.sh debian-packages                        print the Debian packages `install` would
#                                                                 apt-get (tools/test.sh installs them with its
#                                                                 own in one apt-get run, beside install-buildgrid)
#
# Environment:
#   TPBUILD_REAPI_STATE   state directory (default /tmp/tpbuild-reapi): the database cluster, config, logs,
#                         pids. Several clusters can run at once in different state directories.
#   TPBUILD_REAPI_HOME    where BuildGrid's venv is installed once (default ~/.cache/tpbuild-reapi)
#   TPBUILD_PYTHON        the interpreter the workers run on: one where tpbuild is installed (default:
#                         this checkout's .venv/bin/python). Workers run `{python}` actions (env builds)
#                         with it, so it must have tpbuild's rule sets too.
#   PYTHON313             a Python 3.13 for BuildGrid (default: pyenv's 3.13, else python3.13 on PATH)
#
# Installs (idempotent, only what is missing): Debian's `postgresql` (as root, with apt-get), and a venv
# with buildgrid==0.9.1 and its dependencies pinned (tools/reapi-requirements.txt). The database cluster
# is this script's own (initdb in the state directory, run as the `postgres` user when root, loopback
# TCP and a socket in the state directory): the system's cluster is never touched.
#
# Tuned for speed on one machine, not for production: the CAS is in memory (LRU, 2 GB), the scheduler and
# bots poll every 0.05 s, a bot silent for 3 s is presumed dead and its job requeued.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
STATE=${TPBUILD_REAPI_STATE:-/tmp/tpbuild-reapi}
HOME_DIR=${TPBUILD_REAPI_HOME:-${HOME:-/root}/.cache/tpbuild-reapi}
BGD_VENV=$HOME_DIR/buildgrid-0.9.1
WORKER_PY=${TPBUILD_PYTHON:-$REPO/.venv/bin/python}
PG_BIN=""
# shellcheck source=tools/apt.sh
source "$HERE/apt.sh"

die() { echo "reapi-cluster: $*" >&2; exit 1; }
say() { echo "reapi-cluster: $*" >&2; }

free_port() {
    "$WORKER_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

find_pg() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && PG_BIN=$d
    done
    [ -n "$PG_BIN" ]
}

debian_packages() {  # what install_pg would apt-get: for a caller installing it with its own packages
    find_pg || echo postgresql
}

install_pg() {
    find_pg && return
    [ "$(id -u)" = 0 ] || die "PostgreSQL is missing: install Debian's 'postgresql' package (as root: apt-get install postgresql)"
    say "installing postgresql (apt-get)"
    apt_install postgresql  # the system cluster it would start stays stopped: we run our own
    find_pg || die "postgresql installed, but no initdb under /usr/lib/postgresql/*/bin"
}

python313() {
    if [ -n "${PYTHON313:-}" ]; then echo "$PYTHON313"; return; fi
    local p
    for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 "$(command -v python3.13 || true)"; do
        [ -x "$p" ] && { echo "$p"; return; }
    done
    die "BuildGrid 0.9.1 needs Python 3.13: none found (pyenv install 3.13, or set PYTHON313)"
}

install_bgd() {
    local want
    want=$(sha256sum "$HERE/reapi-requirements.txt" | cut -c1-16)
    if [ -x "$BGD_VENV/bin/bgd" ] && [ "$(cat "$BGD_VENV/.requirements" 2>/dev/null)" = "$want" ]; then
        return
    fi
    local py
    py=$(python313)
    say "installing BuildGrid 0.9.1 into $BGD_VENV (Python: $py)"
    # Built in place (a venv's scripts name their interpreter by path); complete once .requirements is written.
    rm -rf "$BGD_VENV"
    mkdir -p "$HOME_DIR"
    "$py" -m venv "$BGD_VENV"
    "$BGD_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/reapi-requirements.txt" \
        2>&1 | grep -v "is ignored: it is neither" >&2 || true
    "$BGD_VENV/bin/python" -c "import buildgrid" 2>/dev/null || die "BuildGrid did not install (see above)"
    echo "$want" > "$BGD_VENV/.requirements"
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_pg() {
    local port=$1 data=$STATE/pg
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"
        [ "$(id -u)" = 0 ] && chown postgres: "$data"
        chmod 700 "$data"
        as_pg "$PG_BIN/initdb" -D "$data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
    fi
    touch "$STATE/logs/postgres.log"
    [ "$(id -u)" = 0 ] && chown postgres: "$STATE/run" "$STATE/logs/postgres.log"
    as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$STATE/logs/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $STATE/run -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null || { tail -20 "$STATE/logs/postgres.log" >&2; die "PostgreSQL did not start"; }
    as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -qtAc \
        "SELECT 1 FROM pg_database WHERE datname='bgd'" postgres | grep -q 1 ||
        as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres bgd
}

write_config() {
    local port=$1 pgport=$2
    cat > "$STATE/bgd.yml" <<EOF
server:
  - !channel
    address: "127.0.0.1:$port"
    insecure-mode: true

connections:
  - !sql-connection &sql
    connection-string: postgresql://postgres@127.0.0.1:$pgport/bgd
    pool-size: 10
    max-overflow: 20

storages:
  - !lru-storage &cas
    size: 2048M

caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false

schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
    poll-interval: 0.05
    bot-poll-interval: 0.05
    bot-session-keepalive-timeout: 3
    session-expiry-timer-interval: 0.5
    max-job-attempts: 5
    property-set: !dynamic-property-set
      match-property-keys: [container-image, pool]
    assigners:
      - !priority-age-assigner
        count: 1
        interval: 0.05

instances:
  - name: ""
    services:
      - !action-cache
        cache: *ac
      - !execution
        scheduler: *scheduler
        operation-stream-keepalive-timeout: 2
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas

thread-pool-size: 64
maximum-concurrent-rpcs: 200
EOF
}

wait_port() {  # a TCP port accepting connections, or the process gone
    local port=$1 pidfile=$2 i
    for i in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then  # bash's connect: no interpreter per try
            return 0
        fi
        alive "$pidfile" || return 1
        sleep 0.1
    done
    return 1
}

start_worker() {
    local n=$1; shift
    local endpoint
    endpoint=$(cat "$STATE/endpoint")
    setsid "$WORKER_PY" -m tpbuild worker --executor "$endpoint" --name "worker-$n" "$@" \
        >"$STATE/logs/worker-$n.log" 2>&1 < /dev/null &
    echo $! > "$STATE/run/worker-$n.pid"
}

cmd_up() {
    local workers=2 props=()
    while [ $# -gt 0 ]; do
        case $1 in
            --workers) workers=$2; shift 2 ;;
            --workers=*) workers=${1#*=}; shift ;;
            --property) props+=(--property "$2"); shift 2 ;;
            *) die "unknown option $1 (see the top of $0)" ;;
        esac
    done
    if alive "$STATE/run/bgd.pid"; then
        say "already running"
        cat "$STATE/endpoint"
        return
    fi
    [ -x "$WORKER_PY" ] || die "no Python with tpbuild at $WORKER_PY: run 'source tools/venv.sh test' first or set TPBUILD_PYTHON"
    "$WORKER_PY" -c "import tpbuild.reapi" 2>/dev/null ||
        die "$WORKER_PY cannot import tpbuild.reapi: install tpbuild with the 'reapi' extra"
    install_pg
    install_bgd
    mkdir -p "$STATE/logs" "$STATE/run"
    chmod 755 "$STATE"
    local pgport port
    pgport=$(free_port)
    port=$(free_port)
    echo "$pgport" > "$STATE/run/pg.port"
    start_pg "$pgport"
    "$BGD_VENV/bin/bgd" migrate apply "postgresql://postgres@127.0.0.1:$pgport/bgd" >"$STATE/logs/migrate.log" 2>&1 ||
        { tail -20 "$STATE/logs/migrate.log" >&2; die "bgd migrate failed"; }
    write_config "$port" "$pgport"
    echo "grpc://127.0.0.1:$port" > "$STATE/endpoint"
    setsid "$BGD_VENV/bin/bgd" server start "$STATE/bgd.yml" >"$STATE/logs/bgd.log" 2>&1 < /dev/null &
    echo $! > "$STATE/run/bgd.pid"
    wait_port "$port" "$STATE/run/bgd.pid" || { tail -30 "$STATE/logs/bgd.log" >&2; die "BuildGrid did not start"; }
    local i
    for i in $(seq 1 "$workers"); do
        start_worker "$i" "${props[@]}"
    done
    say "BuildGrid on $(cat "$STATE/endpoint") with $workers worker(s); logs in $STATE/logs"
    cat "$STATE/endpoint"
}

stop_pids() {  # the process groups this script started (pid files), TERM to all at once, then KILL
    local f pid i live=()
    for f in "$@"; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            live+=("$pid")
        fi
        rm -f "$f"
    done
    [ ${#live[@]} -gt 0 ] || return 0
    for i in $(seq 1 50); do kill -0 "${live[@]}" 2>/dev/null || break; sleep 0.1; done  # until all are gone
    for pid in "${live[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}

cmd_down() {
    [ -d "$STATE" ] || { say "nothing runs in $STATE"; return; }
    stop_pids "$STATE"/run/worker-*.pid "$STATE/run/bgd.pid"
    if [ -f "$STATE/pg/postmaster.pid" ] && find_pg; then
        as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    # Only what `up` created: the state directory is this script's own.
    rm -rf "$STATE/pg" "$STATE/run" "$STATE/logs" "$STATE/bgd.yml" "$STATE/endpoint"
    rmdir "$STATE" 2>/dev/null || true
    say "stopped"
}

cmd_status() {
    if ! alive "$STATE/run/bgd.pid"; then
        echo "not running ($STATE)"
        return 1
    fi
    local f n=0
    for f in "$STATE"/run/worker-*.pid; do alive "$f" && n=$((n + 1)); done
    echo "BuildGrid $(cat "$STATE/endpoint"), $n worker(s) alive, state in $STATE"
}

case ${1:-} in
    up) shift; cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    install) install_pg; install_bgd ;;
    install-buildgrid) install_bgd ;;
    debian-packages) debian_packages ;;
    *) die "usage: $0 up [--workers N] [--property K=V]... | down | status | install | install-buildgrid | debian-packages" ;;
esac
