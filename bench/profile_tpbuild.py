"""cProfile of one tpbuild command with its worker threads included.

`python -m cProfile` sees only the main thread, but the scheduler runs every action on a thread pool,
so a clean build's real work would be missing from the profile. Each new thread gets its own profiler
(started from a `threading.setprofile` hook) and all are merged into one stats file. Imports happen
inside the profile on purpose: they are part of what a no-op build costs.

    python bench/profile_tpbuild.py OUT.prof -- -C WS build //... -j 2
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out, argv = sys.argv[1], sys.argv[3:]
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_thread(_frame, _event, _arg) -> None:
        p = cProfile.Profile()
        with lock:
            profiles.append(p)
        p.enable()  # replaces this hook for the rest of the thread

    threading.setprofile(start_in_thread)
    main_profile = cProfile.Profile()
    main_profile.enable()
    try:
        from tpbuild.cli import main as tpbuild_main

        code = tpbuild_main(argv)
    finally:
        main_profile.disable()
        threading.setprofile(None)
    stats = pstats.Stats(main_profile)
    for p in profiles:
        stats.add(p)
    stats.dump_stats(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
