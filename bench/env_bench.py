"""Env rebuilds: from a lock with the wheels already in tpbuild's blob store, versus the same env with
every wheel downloaded afresh by pip. Side by side, as a ratio.

    .venv/bin/python bench/env_bench.py [--rounds N] [--keep DIR]

The env is the examples' (`numpy<2`, `tabulate`, venv, Python 3.11), locked once with `tpbuild lock`
against PyPI. Both sides run the same tpbuild env build (venv, install, pycs, deterministic tar.gz);
what differs is where the wheels come from:

- **locked, warm wheels**: the env's lock, its wheels fetched by an earlier build and kept as blobs;
  pip installs them with `--no-index` (run under `unshare -n` when root, so with no network at all);
- **unlocked, fresh download**: the same pins as loose specs (`numpy==X`, `tabulate==Y`) and a new
  empty pip cache (a fresh HOME) each round, so pip asks the index and downloads every wheel — what
  an env rebuild costs on a runner without the wheels.

Each round changes `pack_exclude` to a value never built before, so the env action really runs on both
sides (a cache hit would measure nothing) while the wheels stay the same. Times are medians of the rounds,
wall clock of the whole `tpbuild build`, and ratio = fresh / warm (> 1: the warm rebuild is faster).

The part that differs is also timed alone, outside tpbuild: a new venv with the pins installed by pip
from the index with an empty cache, versus from the locked wheel files as the blob store holds them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

MANIFEST = """[python_env.tabulate]
python = "3.11"
manager = "venv"
pip = {pip}
pack_exclude = ["lib/python3.11/site-packages/numpy/*/tests", "bench-round-{n}"]
"""


def tpbuild(root: Path, cache: Path, *args: str, home: Path | None = None, offline: bool = False) -> float:
    env = {**os.environ, "TPBUILD_CACHE_DIR": str(cache)}
    if home is not None:
        env["HOME"] = str(home)
    argv = (["unshare", "-n"] if offline else []) + [sys.executable, "-m", "tpbuild", "-C", str(root), *args]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"`{' '.join(argv)}` failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return seconds


def timed(argv: list[str], **kw) -> float:
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"`{' '.join(argv)}` failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return time.monotonic() - t0


def wheels_from_blobs(cache: Path, lock: dict, dest: Path) -> Path:
    """The lock's wheels as the blob store holds them (found by size and SHA-256), under their names,
    with the hashed requirements pip installs them by; returns that requirements file."""
    wanted = {w["hashes"]["sha256"]: w for p in lock["packages"] for w in p["wheels"]}
    sizes = {w["size"] for w in wanted.values()}
    dest.mkdir(parents=True)
    for blob in (cache / "cas").rglob("*"):
        if blob.is_file() and blob.stat().st_size in sizes:
            sha = hashlib.sha256(blob.read_bytes()).hexdigest()
            if sha in wanted:
                shutil.copyfile(blob, dest / wanted.pop(sha)["url"].rsplit("/", 1)[1])
    if wanted:
        sys.exit(f"the blob store lacks {len(wanted)} of the locked wheels")
    req = dest / "locked.txt"
    req.write_text("".join(f"{p['name']}=={p['version']} "
                           + " ".join(f"--hash=sha256:{w['hashes']['sha256']}" for w in p["wheels"]) + "\n"
                           for p in lock["packages"]))
    return req


def install_step(work: Path, python: str, pins: list[str], locked_req: Path, n: str) -> tuple[float, float]:
    """(from the wheel files, from the index with an empty cache): a new venv and pip install, each."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    times = []
    for side, args in (("blobs", ["--no-index", "--find-links", str(locked_req.parent), "--no-deps",
                                  "--only-binary", ":all:", "--require-hashes", "-r", str(locked_req)]),
                       ("index", ["--no-cache-dir", *pins])):
        venv = work / f"venv-{side}-{n}"
        t = timed([python, "-m", "venv", str(venv)], env=env)
        t += timed([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-compile", *args], env=env)
        shutil.rmtree(venv)
        times.append(t)
    return times[0], times[1]


def can_unshare() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and \
        subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temp dir)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="tpbuild-env-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    locked, fresh = work / "locked", work / "fresh"
    for ws in (locked, fresh):
        shutil.rmtree(ws, ignore_errors=True)
        (ws / "envs").mkdir(parents=True)
        shutil.copyfile(REPO / "examples" / "tpbuild.toml", ws / "tpbuild.toml")
    (locked / "envs" / "BUILD.toml").write_text(MANIFEST.format(pip='["numpy<2", "tabulate==0.9.0"]', n="lock"))
    tpbuild(locked, work / "cache-locked", "lock")
    lock = tomllib.loads((locked / "envs" / "pylock.tabulate.toml").read_text())
    pins = [f"{p['name']}=={p['version']}" for p in lock["packages"]]
    print(f"env: {', '.join(pins)} (python 3.11, venv); rounds: {args.rounds}", flush=True)
    # Warm-up: the locked side fetches its wheels into the blob store once.
    tpbuild(locked, work / "cache-locked", "build", "//envs:tabulate")
    offline = can_unshare()
    locked_req = wheels_from_blobs(work / "cache-locked", lock, work / "wheels")
    python = shutil.which("python3.11") or sys.executable
    warm, cold, from_blobs, from_index = [], [], [], []
    stamp = time.time_ns()
    for i in range(args.rounds):
        n = f"{stamp}-{i}"
        (locked / "envs" / "BUILD.toml").write_text(MANIFEST.format(pip='["numpy<2", "tabulate==0.9.0"]', n=n))
        warm.append(tpbuild(locked, work / "cache-locked", "build", "//envs:tabulate", offline=offline))
        (fresh / "envs" / "BUILD.toml").write_text(MANIFEST.format(pip=str(pins).replace("'", '"'), n=n))
        home = work / f"home-{n}"  # pip's cache lives under HOME: a new one is an empty cache
        home.mkdir()
        cold.append(tpbuild(fresh, work / "cache-fresh", "build", "//envs:tabulate", home=home))
        shutil.rmtree(home)
        b, x = install_step(work, python, pins, locked_req, n)
        from_blobs.append(b)
        from_index.append(x)
        print(f"round {i + 1}: locked, warm wheels {warm[-1]:.1f} s; unlocked, fresh download {cold[-1]:.1f} s; "
              f"install step alone: {b:.1f} s from the wheel files, {x:.1f} s from the index", flush=True)
    w, c = statistics.median(warm), statistics.median(cold)
    print()
    print("| env rebuild | median | ratio (fresh / warm) |")
    print("|---|---|---|")
    print(f"| locked, wheels warm in the blob store{' (no network: unshare -n)' if offline else ''} | {w:.1f} s | |")
    print(f"| unlocked, every wheel downloaded by pip | {c:.1f} s | {c / w:.2f}x |")
    b, x = statistics.median(from_blobs), statistics.median(from_index)
    print(f"| install step alone (new venv + pip install), from the locked wheel files | {b:.1f} s | |")
    print(f"| install step alone, from the index with an empty pip cache | {x:.1f} s | {x / b:.2f}x |")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
