"""Rewrites tests/durations.json, the seconds each test took, from a `--durations=0` run's output on stdin:
`bash tools/test.sh --durations=0 | .venv/bin/python tests/durations.py`. tests/conftest.py orders the
xdist work units by it (longest first); a test missing from it counts as short, so a stale file only
makes a run a little slower, never wrong."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

LINE = re.compile(r"^([0-9.]+)s (?:setup|call|teardown) +(.+)$")


def main() -> None:
    seconds: Counter[str] = Counter()
    for line in sys.stdin:
        m = LINE.match(line.strip())
        if m:
            nodeid = m.group(2)
            if nodeid.rfind("@") > nodeid.rfind("]"):  # xdist's @group suffix (as xdist itself parses it)
                nodeid = nodeid.rsplit("@", 1)[0]
            seconds[nodeid] += float(m.group(1))
    kept = {nodeid: round(s, 1) for nodeid, s in sorted(seconds.items()) if s >= 1}  # the rest count as short
    Path(__file__).with_name("durations.json").write_text(json.dumps(kept, indent=0) + "\n")


if __name__ == "__main__":
    main()
