# Sourced by tools/test.sh and tools/reapi-cluster.sh: Debian packages installed as root, with one
# `apt-get update` per machine set-up (tools/test.sh installs what both need in one apt-get run).
# Services the packages would start (PostgreSQL's system cluster, nginx) stay stopped: the tests and the
# REAPI cluster start their own, on free ports, and the system's are never touched.
apt_install() {
    local policy=/usr/sbin/policy-rc.d created="" rc=0
    apt-get update -qq
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
    if [ -n "$created" ]; then rm -f "$policy"; fi
    return "$rc"
}
