"""Remote execution against local execution: 200 run actions of ~0.2 s each (a genrule that sleeps
0.2 s and writes its index), built by tpbuild with -j2 on this machine, then on a local BuildGrid
cluster (tools/reapi-cluster.sh) with 2 and with 4 `tpbuild worker`s.

    .venv/bin/python bench/reapi_bench.py [--actions 200] [--seconds 0.2] [--reps 2]

Each configuration gets a fresh workspace, local cache and cache salt (so neither the local cache nor
the REAPI ActionCache answers), and the configurations run round-robin `--reps` times; the table gives
the median wall time of each and its ratio to local -j2. The workers share this machine with the
build, the scheduler and PostgreSQL: what 4 workers gain here is concurrency of actions that wait
(sleep), not CPU. Results also go to bench/out/reapi.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tools" / "reapi-cluster.sh"


def workspace(root: Path, n: int, seconds: float, salt: str) -> None:
    root.mkdir(parents=True)
    (root / "tpbuild.toml").write_text(f'[cache]\nsalt = "{salt}"\n')
    per_pkg = 20
    for p in range(0, n, per_pkg):
        text = "".join(f'[genrule.g{i}]\nouts = ["o.txt"]\ncmd = "sleep {seconds}; echo {i} > $OUT"\n\n'
                       for i in range(p, min(n, p + per_pkg)))
        d = root / f"p{p // per_pkg:03d}"
        d.mkdir()
        (d / "BUILD.toml").write_text(text)


def build(root: Path, cache: Path, args: list[str]) -> float:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(root), "build", "//...", *args],
                       env={**os.environ, "TPBUILD_CACHE_DIR": str(cache)}, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"build failed ({' '.join(args)}):\n{p.stderr[-3000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actions", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=0.2)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()

    state = Path(tempfile.mkdtemp(prefix="tpbuild-reapi-bench-"))
    env = {**os.environ, "TPBUILD_REAPI_STATE": str(state), "TPBUILD_PYTHON": sys.executable}
    work = Path(tempfile.mkdtemp(prefix="tpbuild-reapi-bench-ws-"))
    extra: list[subprocess.Popen] = []
    try:
        up = subprocess.run(["bash", str(SCRIPT), "up", "--workers", "2"], env=env, capture_output=True, text=True)
        if up.returncode != 0:
            sys.exit(f"tools/reapi-cluster.sh up failed:\n{up.stderr}")
        endpoint = up.stdout.strip().splitlines()[-1]
        # -j bounds concurrent actions; remote ones wait on the network, so allow more than the workers.
        configs = {"local -j2": ["-j", "2"], "remote, 2 workers": ["-j", "16", "--remote-executor", endpoint],
                   "remote, 4 workers": ["-j", "16", "--remote-executor", endpoint]}
        times: dict[str, list[float]] = {c: [] for c in configs}
        run = 0
        for rep in range(args.reps + 1):  # round 0 warms up (imports, connections, PostgreSQL)
            for name, flags in configs.items():
                if name == "remote, 4 workers" and not extra:
                    extra = [subprocess.Popen([sys.executable, "-m", "tpbuild", "worker", "--executor", endpoint,
                                               "--name", f"worker-{i}"], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True) for i in (3, 4)]
                    time.sleep(2)
                if name == "remote, 2 workers" and extra:
                    for p in extra:
                        p.terminate()
                        p.wait()
                    extra = []
                    time.sleep(4)  # the scheduler forgets them after its keep-alive
                run += 1
                root = work / f"ws{run}"
                workspace(root, args.actions, args.seconds, salt=f"bench-{os.getpid()}-{run}")
                t = build(root, work / f"cache{run}", flags)
                if rep:
                    times[name].append(t)
                shutil.rmtree(root)
                shutil.rmtree(work / f"cache{run}")
    finally:
        for p in extra:
            p.terminate()
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(times["local -j2"])
    lines = [f"{args.actions} run actions of {args.seconds}s (median of {args.reps}; ratio to local -j2, "
             f"lower is faster)", "", "| configuration | seconds | ratio |", "|---|---:|---:|"]
    for name, ts in times.items():
        m = statistics.median(ts)
        lines.append(f"| {name} | {m:.1f} | {m / base:.2f} |")
    print("\n".join(lines))
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "reapi.json").write_text(json.dumps({"actions": args.actions, "seconds": args.seconds, "times": times},
                                               indent=2) + "\n")


if __name__ == "__main__":
    main()
