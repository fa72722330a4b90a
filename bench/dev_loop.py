"""The model author's loop: time from saving an edit of model.py to the new answer being served.

    .venv/bin/python bench/dev_loop.py [--reps 10] [--no-peer] [--out FILE]

On a copy of the examples, one model without an env (`//models/add_sub`) is edited `--reps` times;
each edit changes what OUTPUT0 adds, so the new answer is recognisable. The clock starts when the
edited file is written and closed, and stops when an inference request (Triton's HTTP client, polled
every 5 ms) gets the new answer.

- **tpbuild dev**: one `tpbuild dev //models/add_sub` process, watching. After each answer the bench
  waits for the loop's cycle line, so the next edit finds it idle (the test run that follows the
  reload is not timed). Run twice: as it is, and with `--no-auto-complete`.
- **peer, restart**: what the author does by hand without it, scripted at its fastest:
  `tpbuild build //models/add_sub`, stop the server, start it on the built model, load it, ask.
  (Triton's poll mode is no faster: it rescans every `--repository-poll-secs`, at least 1 s.)

Prints the median, min and max of each, how much of it was the server's reload (as `tpbuild dev`
reports it), and the ratio of the medians; `--out` writes them as JSON.
The machine's load matters (the reload starts a Python stub process): say what else was running.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

REPO = Path(__file__).resolve().parent.parent
MODEL = "models/add_sub/1/model.py"
WAIT = 300


def edit(ws: Path, k: int) -> float:
    """Make OUTPUT0 = a + b + k; the time the save finished."""
    p = ws / MODEL
    text = re.sub(r'"OUTPUT0": a \+ b( \+ \d+)?,', f'"OUTPUT0": a + b + {k},', p.read_text())
    with open(p, "w") as f:
        f.write(text)
    return time.perf_counter()


def answer(client) -> float | None:
    a = np.ones((1, 4), dtype=np.float32)
    ins = []
    for name in ("INPUT0", "INPUT1"):
        t = httpclient.InferInput(name, [1, 4], "FP32")
        t.set_data_from_numpy(a)
        ins.append(t)
    try:
        return float(client.infer("add_sub", ins).as_numpy("OUTPUT0")[0, 0])
    except Exception:  # between versions, or not loaded yet
        return None


def served_after(client, k: int, t0: float) -> float:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if answer(client) == 2 + k:
            return time.perf_counter() - t0
        time.sleep(0.005)
    raise SystemExit(f"the answer for edit {k} was not served within {WAIT}s")


class DevProcess:
    def __init__(self, ws: Path, env: dict, flags: list[str]):
        argv = [sys.executable, "-m", "tpbuild", "-C", str(ws), "dev", "//models/add_sub", *flags]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: [self.lines.append(line.rstrip()) for line in self.proc.stdout],
                         daemon=True).start()

    def wait_for(self, pattern: str, after: int = 0) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if m := rx.search(line):
                    return m
            if self.proc.poll() is not None:
                raise SystemExit("tpbuild dev exited:\n" + "\n".join(self.lines))
            time.sleep(0.02)
        raise SystemExit(f"tpbuild dev never printed {pattern!r}:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def bench_dev(ws: Path, env: dict, ks: range, flags: list[str]) -> tuple[list[float], list[float]]:
    dev = DevProcess(ws, env, flags)
    try:
        url = dev.wait_for(r"serving on HTTP http://(\S+)")[1]
        dev.wait_for(r"^-- build OK")
        client = httpclient.InferenceServerClient(url)
        times, reloads = [], []
        for k in ks:
            at = len(dev.lines)
            times.append(served_after(client, k, edit(ws, k)))
            reloads.append(float(dev.wait_for(r"add_sub\): rebuilt, reloaded in ([\d.]+)s", at)[1]))
            dev.wait_for(r"^-- build OK", at)
        return times, reloads
    finally:
        dev.stop()


def bench_restart(ws: Path, env: dict, ks: range) -> list[float]:
    from tpbuild_triton.server import TritonServer

    repo = ws.parent / "restart-repository"
    repo.mkdir()
    (repo / "add_sub").symlink_to(ws / "tpbuild-out/models/add_sub/add_sub")
    times = []
    srv = None
    try:
        for k in ks:
            t0 = edit(ws, k)
            subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(ws), "build", "//models/add_sub"], env=env,
                           check=True, capture_output=True)
            if srv is not None:
                srv.stop()
            srv = TritonServer(repo, explicit_models=True, log_path=ws.parent / "restart-server.log")
            srv.start()
            srv.load("add_sub")
            times.append(served_after(httpclient.InferenceServerClient(f"127.0.0.1:{srv.http_port}"), k, t0))
    finally:
        if srv is not None:
            srv.stop()
    return times


def stats(xs: list[float]) -> dict:
    return {"median_s": round(statistics.median(xs), 3), "min_s": round(min(xs), 3), "max_s": round(max(xs), 3),
            "samples_s": [round(x, 3) for x in xs]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-peer", action="store_true", help="skip the restart peer")
    ap.add_argument("--out", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tpbuild-bench-dev-") as tmp:
        ws = Path(tmp) / "examples"
        shutil.copytree(REPO / "examples", ws, ignore=shutil.ignore_patterns("tpbuild-out", "__pycache__"))
        env = {**os.environ, "TPBUILD_CACHE_DIR": str(Path(tmp) / "cache"), "PYTHONUNBUFFERED": "1"}
        result = {"cpus": os.cpu_count(), "reps": args.reps, "load_avg_1m_before": round(os.getloadavg()[0], 2)}
        # Each loop edits in a range of its own, so no edit restores what is already served.
        for i, (name, flags) in enumerate((("tpbuild dev", []), ("tpbuild dev --no-auto-complete", ["--no-auto-complete"]))):
            served, reloads = bench_dev(ws, env, range(1000 * i + 1, 1000 * i + args.reps + 1), flags)
            result[name] = {**stats(served), "reload_median_s": round(statistics.median(reloads), 3)}
            print(f"{name}: save -> new answer served, median {statistics.median(served):.2f}s (min {min(served):.2f}s, "
                  f"max {max(served):.2f}s) over {args.reps} edits; the server's reload: median "
                  f"{statistics.median(reloads):.2f}s")
        if not args.no_peer:
            restart = bench_restart(ws, env, range(2001, 2001 + args.reps))
            result["restart"] = stats(restart)
            ratio = statistics.median(restart) / result["tpbuild dev"]["median_s"]
            result["ratio_restart_over_dev"] = round(ratio, 2)
            print(f"peer, build + restart the server: median {statistics.median(restart):.2f}s (min {min(restart):.2f}s, "
                  f"max {max(restart):.2f}s): {ratio:.1f}x tpbuild dev's median")
        result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
        print(f"{os.cpu_count()} CPUs, 1-minute load average {os.getloadavg()[0]:.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
