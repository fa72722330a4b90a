"""The placement lane (tpbuild/placement.py): with `-j` above 1, a build from nothing hands its output
trees to a helper process while its actions run. Whatever the lane places must be what `-j 1` places,
recorded so the next build finds it in place; a lane that fails or dies leaves its trees to the build;
a build killed with its lane at work is followed by one that equals a clean build."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import Workspace

from tpbuild import outputs, placement
from tpbuild.action import Entry, EntryKind
from tpbuild.cas import Cas

MODELS = placement.WORTH + 2 * placement.BATCH  # enough trees that the lane is started and given some


def _sources(w: Workspace, models: int = MODELS, failing: bool = False) -> None:
    w.write("BUILD.toml", '[model_repository.repo]\nmodels = ["//models/..."]\n')
    w.write("shared/classes.txt", "b\na\n")
    w.write("shared/BUILD.toml", f"""
        [genrule.labels]
        srcs = ["classes.txt"]
        outs = ["labels.txt"]
        cmd = "{'exit 3' if failing else 'sort $SRCS > $OUT'}"

        [genrule.other]
        srcs = ["classes.txt"]
        outs = ["a/x.txt"]
        cmd = "mkdir -p out/a; cp $SRCS out/a/x.txt"
    """)
    for n in range(models):
        m = f"m{n:03d}"
        w.write(f"models/{m}/1/model.py", f"class TritonPythonModel:\n    name = {m!r}\n")
        files = '\nfiles = ["//shared:labels"]' if n % 2 else ""
        w.write(f"models/{m}/BUILD.toml", f'[triton_model.{m}]\nversions = ["1"]{files}\n')


def _workspace(tmp_path: Path, name: str, **kw) -> Workspace:
    root = tmp_path / name
    root.mkdir()
    (root / "tpbuild.toml").write_text("")
    w = Workspace(root, tmp_path / f"{name}-cache")
    _sources(w, **kw)
    return w


def _snapshot(out: Path) -> dict[str, tuple]:
    """Every file and symlink of tpbuild-out but its own state: bytes and mode, or link target."""
    snap = {}
    for dirpath, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if d != ".tpbuild"]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, out)
            snap[rel] = ("link", os.readlink(p)) if os.path.islink(p) else (Path(p).read_bytes(), os.stat(p).st_mode)
    return snap


def _targets(run) -> dict:
    return {t: (v["status"], v.get("outputs")) for t, v in run.report["targets"].items()}


def test_a_lane_places_what_one_job_places_and_records_it(tmp_path):
    one, two = _workspace(tmp_path, "one"), _workspace(tmp_path, "two")
    a = one.run("build", "//...", "-j", "1", check=True)
    b = two.run("build", "//...", "-j", "2", check=True)
    assert "placed_by_lane" not in a.report["execution"]  # -j 1: no lane
    assert 0 < b.report["execution"]["placed_by_lane"] < b.report["execution"]["placed"]
    assert b.report["execution"]["placed"] == a.report["execution"]["placed"]
    # The repository, a composed tree, is the build's to place, part by part (never the lane's).
    assert b.report["execution"]["placed_parts"] == a.report["execution"]["placed_parts"] == MODELS
    assert _targets(a) == _targets(b)
    assert _snapshot(one.root / "tpbuild-out") == _snapshot(two.root / "tpbuild-out")
    model = two.out("models/m001/m001/1/model.py")
    assert model.stat().st_nlink >= 2  # a hardlink of its blob, as the build places it
    again = two.run("build", "//...", "-j", "2", check=True)  # the state recorded what the lane placed, as it is
    assert again.report["execution"]["placed"] == 0
    assert "placed_by_lane" not in again.report["execution"]  # outputs recorded: no lane
    model.unlink()
    fixed = two.run("build", "//...", "-j", "2", check=True)
    assert fixed.report["execution"]["placed"] == 1
    assert _snapshot(one.root / "tpbuild-out") == _snapshot(two.root / "tpbuild-out")
    for w, jobs in ((one, "1"), (two, "2")):  # an edit after the lane's build: one model's part placed again
        w.write("models/m002/1/model.py", "class TritonPythonModel:\n    name = 'edited'\n")
        edited = w.run("build", "//...", "-j", jobs, check=True)
        assert (edited.report["execution"]["placed"], edited.report["execution"]["placed_parts"]) == (2, 1)
    assert _snapshot(one.root / "tpbuild-out") == _snapshot(two.root / "tpbuild-out")


def test_a_failed_target_is_not_placed_and_the_others_are(tmp_path):
    one, two = _workspace(tmp_path, "one", failing=True), _workspace(tmp_path, "two", failing=True)
    a = one.run("build", "//...", "-j", "1", "-k", check=False)
    b = two.run("build", "//...", "-j", "2", "-k", check=False)
    assert a.returncode == b.returncode != 0
    assert _targets(a) == _targets(b)
    assert b.report["execution"]["placed_by_lane"] > 0
    assert not two.out("models/m001").exists() and two.out("models/m000/m000/1/model.py").exists()
    assert _snapshot(one.root / "tpbuild-out") == _snapshot(two.root / "tpbuild-out")


def test_a_build_killed_with_its_lane_at_work_is_followed_by_a_clean_one(tmp_path):
    """At `replace-tree` the lane dies at its first tree and the build, placing it again itself, dies
    there too; at `placed` the lane's trees are in place and unrecorded."""
    ref = _workspace(tmp_path, "ref")
    ref.run("build", "//...", "-j", "1", check=True, report=False)
    for step in ("replace-tree", "placed"):
        w = _workspace(tmp_path, step)
        argv = [sys.executable, "-m", "tpbuild", "-C", str(w.root), "build", "//...", "-j", "2"]
        p = subprocess.run(argv, env={**w.env, "TPBUILD_TEST_KILL_AT": step}, capture_output=True, text=True)
        assert p.returncode == -signal.SIGKILL, f"{step} was not reached: {p.stdout}{p.stderr}"
        w.run("build", "//...", "-j", "2", check=True, report=False)
        assert _snapshot(w.root / "tpbuild-out") == _snapshot(ref.root / "tpbuild-out"), step
        tmp = w.root / "tpbuild-out/.tpbuild/tmp"
        assert [p for p in tmp.rglob("*") if not p.is_dir()] == [], step


def _trees(tmp_path: Path, n: int) -> tuple[Path, Cas, outputs.BuildState, list]:
    root = tmp_path / "ws"
    (root / "tpbuild-out/.tpbuild").mkdir(parents=True)
    cas = Cas(tmp_path / "cache")
    state = outputs.BuildState.load(root / "tpbuild-out/.tpbuild/state", outputs.cache_id(tmp_path / "cache"))
    trees = []
    for i in range(n):
        data = f"tree {i}\n".encode()
        trees.append((f"tpbuild-out/t{i}", (Entry(f"d/f{i}.txt", EntryKind.FILE, cas.put_bytes(data), len(data)),)))
    return root, cas, state, trees


def _lock(tmp_path: Path) -> int:
    f = open(tmp_path / "lock", "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def test_trees_a_dead_lane_was_sent_are_placed_by_the_build(tmp_path):
    root, cas, state, trees = _trees(tmp_path, 2 * placement.BATCH)
    with _lock(tmp_path) as lock:
        lane = placement.Lane(root, tmp_path / "cache", lock.fileno())
        for rel, entries in trees[:placement.BATCH]:
            lane.place(rel, entries)
        lane._proc.kill()  # whether or not it placed them, it answers nothing
        lane._proc.wait()
        for rel, entries in trees[placement.BATCH:]:
            lane.place(rel, entries)  # into a closed pipe: never sent
        assert len(lane.sent) == placement.BATCH
        for rel, entries in trees:
            assert lane.materialize(state, root, rel, entries, cas) == (True, 0)
    assert lane.placed == 0
    for i, (rel, entries) in enumerate(trees):
        assert (root / rel / f"d/f{i}.txt").read_text() == f"tree {i}\n"
        assert outputs.materialize(state, root, rel, entries, cas) == (False, 0)  # recorded as placed


def test_what_a_lane_placed_is_recorded_as_the_build_would(tmp_path):
    root, cas, state, trees = _trees(tmp_path, placement.BATCH + 1)
    with _lock(tmp_path) as lock:
        lane = placement.Lane(root, tmp_path / "cache", lock.fileno())
        for rel, entries in trees:
            lane.place(rel, entries)
        assert len(lane.sent) == placement.BATCH  # the last batch, not full, stays with the build
        for rel, entries in trees:
            assert lane.materialize(state, root, rel, entries, cas) == (True, 0)
    assert lane.placed == placement.BATCH
    here = outputs.BuildState.load(tmp_path / "state", outputs.cache_id(tmp_path / "cache"))
    for rel, entries in trees:
        outputs.materialize(here, root, rel, entries, cas)  # the ordinary path, over the same trees
        assert state.outputs[rel][:2] == here.outputs[rel][:2]  # same digest, same files recorded by kind


def test_a_busy_lane_is_sent_no_more_than_it_can_take_and_the_build_places_the_rest(tmp_path):
    root, cas, state, trees = _trees(tmp_path, (placement.AHEAD + 2) * placement.BATCH)
    with _lock(tmp_path) as lock:
        lane = placement.Lane(root, tmp_path / "cache", lock.fileno())
        lane._proc.send_signal(signal.SIGSTOP)  # busy: it earns no credit
        try:
            for rel, entries in trees:
                lane.place(rel, entries)
            assert len(lane.sent) == placement.AHEAD * placement.BATCH
        finally:
            lane._proc.send_signal(signal.SIGCONT)
        for rel, entries in trees:
            assert lane.materialize(state, root, rel, entries, cas) == (True, 0)
    assert lane.placed == placement.AHEAD * placement.BATCH
    for i, (rel, entries) in enumerate(trees):
        assert (root / rel / f"d/f{i}.txt").read_text() == f"tree {i}\n"
        assert outputs.materialize(state, root, rel, entries, cas) == (False, 0)
