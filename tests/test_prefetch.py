"""The prefetch of placed directories' lstats (tpbuild/prefetch.py): what its helper hands over is what
stat'ing in process gives (a directory missing, one changed before it ran), each path once; a helper
that fails or cannot start leaves every path to be stat'ed in process; a build's answer is unchanged."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from test_placement import _snapshot, _workspace

from tpbuild import outputs, prefetch
from tpbuild.layout import stat_sig

DIRS = ["", "1", "sub/dir"]


def _placed(root, rels: list[str]):
    """A build state recording trees at `rels` (their directories `DIRS`), placed under `root`."""
    path = root / "state"
    state = outputs.BuildState.load(path, "cache")
    for rel in rels:
        for d in DIRS:
            (root / rel / d).mkdir(parents=True, exist_ok=True)
        dirs = {d: stat_sig(os.lstat(f"{root}/{rel}/{d}")) for d in DIRS}
        state.outputs[rel] = ("xxh3_128:0", {}, dirs)
    assert state.save() is None
    return path


def _asked(rels):
    return [f"{rel}/{d}" for rel in rels for d in DIRS]


def _done(p: prefetch.Prefetch) -> prefetch.Prefetch:
    """`p`, its helper finished (the build asks only later, and never waits for it)."""
    p._proc.wait()
    return p


def _in_process(base, paths):
    return list(map(stat_sig, map(os.lstat, map(base.__add__, paths))))


def test_the_helpers_stats_are_the_in_process_ones(tmp_path):
    rels = [f"tpbuild-out/models/m{i}/m{i}" for i in range(5)]
    state = _placed(tmp_path, rels)
    (tmp_path / rels[1] / "1" / "new").mkdir()  # changed before the helper ran: its new stat
    base = f"{tmp_path}/"
    before = set((tmp_path / "tmp").iterdir())  # the state's save's
    p = _done(prefetch.start(base, state, tmp_path / "tmp"))
    assert set((tmp_path / "tmp").iterdir()) == before  # what it wrote, still open, has no name there
    assert sorted(p._read()) == sorted(_asked(rels))  # from the helper
    assert p.lstat_sigs(base, _asked(rels)) == _in_process(base, _asked(rels))
    assert p._stats == {}  # every one handed over


def test_a_missing_directory_is_missing_and_a_path_not_taken_is_stat_ed(tmp_path):
    rels = ["tpbuild-out/a", "tpbuild-out/b"]
    state = _placed(tmp_path, rels)
    os.rmdir(tmp_path / rels[1] / "sub" / "dir")
    base = f"{tmp_path}/"
    p = _done(prefetch.start(base, state, tmp_path / "tmp"))
    assert p._read()[f"{rels[1]}/sub/dir"] is None
    with pytest.raises(FileNotFoundError):
        p.lstat_sigs(base, _asked(rels))
    (tmp_path / "other").mkdir()
    assert p.lstat_sigs(base, ["other", f"{rels[0]}/1"]) == _in_process(base, ["other", f"{rels[0]}/1"])


def test_each_stat_is_handed_over_once(tmp_path):
    rels = ["tpbuild-out/a"]
    state = _placed(tmp_path, rels)
    base = f"{tmp_path}/"
    p = _done(prefetch.start(base, state, tmp_path / "tmp"))
    first = p.lstat_sigs(base, _asked(rels))
    os.rename(tmp_path / rels[0] / "1", tmp_path / rels[0] / "2")
    (tmp_path / rels[0] / "1").mkdir()  # the build placed it again: asked again, stat'ed now
    again = p.lstat_sigs(base, _asked(rels))
    assert again == _in_process(base, _asked(rels)) and again != first


def test_a_failing_helper_leaves_every_path_to_the_build(tmp_path, monkeypatch):
    rels = ["tpbuild-out/a"]
    _placed(tmp_path, rels)
    base = f"{tmp_path}/"
    p = _done(prefetch.start(base, tmp_path / "no-such-state", tmp_path / "tmp"))  # the helper fails
    assert p._proc.returncode != 0
    assert p.lstat_sigs(base, _asked(rels)) == _in_process(base, _asked(rels))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    assert prefetch.start(base, tmp_path / "state", tmp_path / "tmp") is None  # none started


def test_a_helper_closed_or_killed_hands_over_nothing(tmp_path):
    rels = ["tpbuild-out/a"]
    state = _placed(tmp_path, rels)
    base = f"{tmp_path}/"
    p = prefetch.start(base, state, tmp_path / "tmp")
    p.close()
    assert p.lstat_sigs(base, _asked(rels)) == _in_process(base, _asked(rels))
    p = prefetch.start(base, state, tmp_path / "tmp")
    p._proc.kill()
    assert p.lstat_sigs(base, _asked(rels)) == _in_process(base, _asked(rels))


def test_what_the_helper_writes_whole_or_not_at_all():
    data = b"".join([prefetch._HEADER.pack(2, 3), b"a\0b", bytes([prefetch._TAKEN, prefetch._ABSENT]),
                     prefetch.struct.pack("=8q", 1, 2, 3, 4, 0, 0, 0, 0)])
    assert prefetch._unpacked(data) == {"a": (1, 2, 3, 4), "b": None}
    with pytest.raises(ValueError):
        prefetch._unpacked(data[:-1])


def test_a_helper_not_done_is_not_waited_for(tmp_path, monkeypatch):
    rels = ["tpbuild-out/a"]
    state = _placed(tmp_path, rels)
    base = f"{tmp_path}/"
    monkeypatch.setattr(prefetch, "_HELPER", "import time; time.sleep(60)")
    p = prefetch.start(base, state, tmp_path / "tmp")
    proc = p._proc
    assert p.lstat_sigs(base, _asked(rels)) == _in_process(base, _asked(rels))
    assert proc.returncode is not None  # stopped and reaped


def _build(w, prefetching: bool) -> dict:
    """An ordinary build (no stamp) of `w`, its helper started whatever the number of trees, or never."""
    (w.root / "tpbuild-out" / ".tpbuild" / "noop").unlink(missing_ok=True)
    report = w.root.parent / f"{w.root.name}-report.json"
    # the helper waited for before its stats are read (the build never waits: a small one would not use them)
    code = (f"import sys, tpbuild.prefetch as p\np.WORTH = {0 if prefetching else 10 ** 9}\n"
            "read = p.Prefetch._read\n"
            "def waited(self):\n"
            "    if self._proc is not None: self._proc.wait()\n"
            "    stats = read(self)\n"
            "    print('prefetched', len(stats), file=sys.stderr)\n"
            "    return stats\n"
            "p.Prefetch._read = waited\n"
            "from tpbuild.cli import main\nsys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, "-C", str(w.root), "build", "//...", "--report", str(report)],
                       capture_output=True, text=True, env=w.env)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout + p.stderr
    r = json.loads(report.read_text())
    handed = re.findall(r"prefetched (\d+)", p.stderr)  # at the first question: every tree's directories
    assert (int(handed[0]) > 2 * 6 if prefetching else not handed), p.stderr
    return {"targets": r["targets"], "placed": (r["execution"]["placed"], r["execution"]["placed_parts"])}


def test_a_build_with_the_helper_answers_as_one_without(tmp_path):
    """Twin workspaces, one tree changed in each after a build: the build that takes its directories'
    stats from the helper places what the one that stats them itself places."""
    twins = [_workspace(tmp_path, name, models=6) for name in ("with", "without")]
    for w in twins:
        assert _build(w, False)["placed"][0] > 0
        (w.out("models/m001/m001/1") / "stray").write_text("x")  # a directory changed: its tree placed again
    with_, without = _build(twins[0], True), _build(twins[1], False)
    assert with_ == without and with_["placed"] != (0, 0)
    assert _snapshot(twins[0].out("")) == _snapshot(twins[1].out(""))
    assert _build(twins[0], True)["placed"] == (0, 0)  # and then in place
