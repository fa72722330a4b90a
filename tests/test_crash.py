"""Crash consistency: `kill -9` of a real `tpbuild build` at random moments (a fixed seed) and at each
publish step, while sources change between builds. After each kill, the next build's tpbuild-out
must equal a clean build's of the same sources, file for file, with no temp name inside an output
and no leftover in any temp directory.

The kills at chosen steps use `TPBUILD_TEST_KILL_AT=<step>` (test-only; `atomic.crash_point`), and a
build killed there must exit by SIGKILL, so a step that is no longer reached fails the test instead
of passing silently. Random kills use real timing, so they land anywhere, imports included.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import Workspace

SEED = 12
RANDOM_KILLS = 30
# (publish step, what makes the next build reach it) (new classes, toggled files, a damaged tree; "aged":
# every source dated past the racy window, so the memos record them and append to their journals)
STEPS = [  # (publish step, prep): a step may be reached by more than one kind of build
    ("process-dir", "classes"),  # between making a temp directory and locking it
    ("publish-blob", "classes"),
    ("publish-ac", "classes"),
    ("update-file", "classes"),
    ("publish-statcache", "classes aged"),
    ("publish-analysis", "extra aged"),
    ("publish-analysis-text", "extra aged"),  # the actions' texts, saved before the records
    ("replace-tree", "damage"),
    ("swap-tree", "damage"),
    ("save-state", "classes"),
    ("publish-state", "extra"),
    ("placed", "extra"),
    ("publish-noop", "classes aged"),  # the stamp a build that executed leaves (noop.py)
    ("publish-noop-graph", "classes aged"),  # the graph a delta build reads, written before the stamp
    ("publish-placed", "restamp"),  # the placed memo (placedmemo.py), after the stamp: an ordinary no-op's
    # A delta build (incremental.py): only a source changed since the stamped build, in its saves and
    # its patch of the stamp.
    ("publish-state", "source"),
    ("update-file", "source"),
    ("publish-noop-patch", "source"),
    # A composed tree (the repository) placed part by part: killed after its first part, on the
    # ordinary path and on a delta build.
    ("placed-part", "classes"),
    ("placed-part", "source"),
    ("publish-workspace", "toml"),  # tpbuild.toml as parsed (workspace.py), when its text changed
]


def _sources(w: Workspace, extra: bool, classes: int) -> None:
    w.write("BUILD.toml", '[model_repository.repo]\nmodels = ["//models/..."]\n')
    w.write("shared/classes.txt", "".join(f"class{n}\n" for n in range(classes + 2, 0, -1)))
    w.write("shared/BUILD.toml", """
        [genrule.labels]
        srcs = ["classes.txt"]
        outs = ["labels.txt"]
        cmd = "sort $SRCS > $OUT"

        [genrule.many]
        srcs = ["classes.txt"]
        outs = ["a/x.txt", "a/b/y.txt", "z.txt"]
        cmd = "mkdir -p out/a/b; cp $SRCS out/a/x.txt; tac $SRCS > out/a/b/y.txt; wc -l < $SRCS > out/z.txt"
    """)
    for m in ("m1", "m2", "m3"):
        w.write(f"models/{m}/1/model.py", f"class TritonPythonModel:\n    name = {m!r}\n")
        w.write(f"models/{m}/BUILD.toml", f"""
            [triton_model.{m}]
            versions = ["1"]
            files = ["//shared:labels"]
            [triton_model.{m}.config]
            input = [{{ name = "X", data_type = "TYPE_FP32", dims = [1] }}]
            output = [{{ name = "Y", data_type = "TYPE_FP32", dims = [1] }}]
        """)
    for rel in ("models/m1/1/extra.py", "models/m1/1/sub/deeper/data.txt"):
        p = w.root / rel
        if extra:
            w.write(rel, f"# {rel}\n")
        elif p.exists():
            p.unlink()
    sub = w.root / "models/m1/1/sub"
    if not extra and sub.exists():
        shutil.rmtree(sub)


def _snapshot(out: Path) -> dict:
    snap = {}
    for dirpath, dirnames, filenames in os.walk(out):
        rel_dir = os.path.relpath(dirpath, out)
        if rel_dir == ".tpbuild" or rel_dir.startswith(".tpbuild/"):
            continue
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if os.path.relpath(p, out) != ".tpbuild":
                snap[os.path.relpath(p, out)] = ("l", os.readlink(p)) if os.path.islink(p) else ("d",)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                snap[os.path.relpath(p, out)] = ("l", os.readlink(p))
            else:
                with open(p, "rb") as fh:
                    snap[os.path.relpath(p, out)] = ("f", fh.read(), os.stat(p).st_mode & 0o111)
    return snap


def _files_below(d: Path) -> list[str]:
    return sorted(str(p) for p in d.rglob("*")) if d.exists() else []


def test_kill_minus_9_anywhere_leaves_nothing_stale(tmp_path):
    rng = random.Random(SEED)
    root = tmp_path / "ws"
    root.mkdir()
    (root / "tpbuild.toml").write_text("")
    w = Workspace(root, tmp_path / "cache")
    references: dict[tuple, dict] = {}

    def reference(state: tuple) -> dict:
        if state not in references:
            r = tmp_path / f"clean-{len(references)}"
            r.mkdir()
            (r / "tpbuild.toml").write_text("")
            c = Workspace(r, tmp_path / f"clean-cache-{len(references)}")
            _sources(c, *state)
            c.build(check=True, report=False)
            references[state] = _snapshot(r / "tpbuild-out")
        return references[state]

    def check(state: tuple, why: str) -> None:
        w.build(check=True, report=False)
        out = root / "tpbuild-out"
        snap = _snapshot(out)
        assert snap == reference(state), f"{why}: differs from a clean build: " + str(
            sorted(set(snap.items()) ^ set(reference(state).items()))[:6])
        temps = [p for p in snap if "tpbuild-new" in p or os.path.basename(p).startswith(".")]
        assert temps == [], f"{why}: temp names in outputs: {temps}"
        leftovers = (_files_below(w.cache / "tmp") + _files_below(out / ".tpbuild" / "tmp")
                     + [p for d in (w.cache / "workspaces").glob("*/tmp") for p in _files_below(d)])
        assert leftovers == [], f"{why}: leftovers: {leftovers}"

    state = (False, 0)
    _sources(w, *state)
    check(state, "first build")
    state = (True, 1)  # an incremental build: how long the builds to kill take here
    _sources(w, *state)
    t0 = time.monotonic()
    check(state, "an incremental build")
    duration = time.monotonic() - t0

    argv = [sys.executable, "-m", "tpbuild", "-C", str(root), "build", "//..."]
    # Kills until RANDOM_KILLS of them hit a running build; the delay range adapts to how fast builds
    # run here (a kill that comes after the build finished shrinks it, a hit widens it).
    killed = attempts = 0
    while killed < RANDOM_KILLS:
        attempts += 1
        assert attempts <= 3 * RANDOM_KILLS, f"only {killed} of {attempts} kills hit a running build"
        state = (rng.random() < 0.5, rng.randrange(3))
        _sources(w, *state)
        delay = rng.uniform(0.0, duration)
        p = subprocess.Popen(argv, env=w.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        hit = p.wait() == -signal.SIGKILL
        killed += hit
        duration = min(duration * 1.1, 30.0) if hit else max(delay * 0.8, 0.05)
        check(state, f"random kill {attempts} after {delay:.2f}s")

    for i, (step, prep) in enumerate(STEPS):
        if prep == "source":  # a source alone, never built before: what a delta build answers
            state = (state[0], 10 + i)
            w.write("shared/classes.txt", "".join(f"class{n}\n" for n in range(state[1] + 2, 0, -1)))
        elif prep.startswith("classes"):  # content never built before, so the actions run
            state = (state[0], 10 + i)
        elif prep.startswith("extra"):
            state = (not state[0], state[1])
        elif prep == "toml":  # a comment: a new text to parse, the same outputs
            (root / "tpbuild.toml").write_text(f"# {i}\n")
        elif prep == "restamp":  # the ordinary path, every placed tree past the racy window: a stamp all proven
            time.sleep(2.1)
            for memo in ("noop", "placed"):
                (root / "tpbuild-out/.tpbuild" / memo).unlink(missing_ok=True)
        if prep not in ("source", "toml", "restamp"):
            _sources(w, *state)
        if prep.endswith("aged"):
            old = time.time() - 10
            for path in [root, *root.rglob("*")]:
                if "tpbuild-out" not in path.parts:
                    os.utime(path, (old, old), follow_symlinks=False)
        if prep == "damage":  # not intact: the tree is re-assembled aside and swapped in
            (root / "tpbuild-out/models/m2/m2/config.pbtxt").unlink()
        p = subprocess.run(argv, env={**w.env, "TPBUILD_TEST_KILL_AT": step}, capture_output=True, text=True)
        assert p.returncode == -signal.SIGKILL, f"{step} was not reached: {p.stdout}{p.stderr}"
        check(state, f"kill at {step}")


def test_a_file_placed_by_a_killed_build_goes_when_its_source_does(ws):
    """Killed after placing a tree and before saving the state that records it: the recorded files
    all verify, so only the directory's own stat can tell that the extra file is there."""
    ws.write("m/1/model.py", "class TritonPythonModel:\n    pass\n")
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\n')
    ws.build(check=True)
    ws.write("m/1/extra.py", "EXTRA = 1\n")
    p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(ws.root), "build", "//..."],
                       env={**ws.env, "TPBUILD_TEST_KILL_AT": "placed"}, capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    assert ws.out("m/m/1/extra.py").exists()
    (ws.root / "m/1/extra.py").unlink()
    ws.build(check=True)
    assert sorted(p.name for p in ws.out("m/m/1").iterdir()) == ["model.py"]
