"""The prefetch of a build's stats (tpbuild/prefetch.py): what its helper hands over is what stat'ing in
process gives, for each kind (the sources the analysis memo watches, the blobs the settle memo names,
the placed directories: one missing, one changed before it ran), each path once, the blobs and
directories only once the build holds the lock; a helper that fails, is late or cannot start leaves
every path to be stat'ed in process; a build's answer is unchanged, a source edited after the helper's
stat is seen by the next build."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_placement import _snapshot, _workspace

from tpbuild import analysiscache, delta, memo, outputs, prefetch
from tpbuild.layout import hexed_sigs, stat_sig
from tpbuild.layout import sig as layout_sig
from tpbuild.observed import Observed

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


def _start(base, state, tmp, analysis=None, settled=None) -> prefetch.Prefetch:
    return prefetch.start(base, analysis, settled or state.with_name("settled"), state, tmp)


def _done(p: prefetch.Prefetch) -> prefetch.Prefetch:
    """`p` told to go on (the build holds the lock), its helper finished (the build asks only later,
    and never waits for it)."""
    p.go()
    p._proc.wait()
    return p


def _written(p: prefetch.Prefetch, k: int) -> None:
    """Wait until the helper has written section `k` (the build never waits)."""
    for _ in range(2000):
        p._listen()
        if k in p._spans:
            return
        time.sleep(0.005)
    raise AssertionError(f"section {k} not written")


def _parted(p: prefetch.Prefetch, dirs: list[str]) -> prefetch.Prefetch:
    """`p` once its helper has written every part of discovery's directories `dirs` (before the build
    says `go`, which it takes as discovery being done), told to go on and finished."""
    for _ in range(2000):
        p._listen()
        if len(p._parts) == -(-len(dirs) // prefetch.PART):
            return _done(p)
        time.sleep(0.005)
    raise AssertionError("parts not written")


def _in_process(base, paths):
    return list(map(stat_sig, map(os.lstat, map(base.__add__, paths))))


def test_the_helpers_stats_are_the_in_process_ones(tmp_path):
    rels = [f"tpbuild-out/models/m{i}/m{i}" for i in range(5)]
    state = _placed(tmp_path, rels)
    (tmp_path / rels[1] / "1" / "new").mkdir()  # changed before the helper ran: its new stat
    base = f"{tmp_path}/"
    before = set((tmp_path / "tmp").iterdir())  # the state's save's
    p = _done(_start(base, state, tmp_path / "tmp"))
    assert set((tmp_path / "tmp").iterdir()) == before  # what it wrote, still open, has no name there
    assert p.lstat_sigs(base, _asked(rels)) == _in_process(base, _asked(rels))
    assert p._placed == {}  # every one handed over


@pytest.mark.parametrize("tmpfile", [True, False])
def test_the_helpers_file_has_no_name(tmp_path, monkeypatch, tmpfile):
    if not tmpfile:  # a file system without O_TMPFILE: tempfile's way
        real = os.open

        def without(path, flags, *args, **kw):
            if flags & getattr(os, "O_TMPFILE", 0):
                raise OSError(errno.EOPNOTSUPP, "no O_TMPFILE here")
            return real(path, flags, *args, **kw)

        monkeypatch.setattr(os, "open", without)
    f = prefetch._nameless(tmp_path)
    os.write(f.fileno(), b"stats")
    assert list(tmp_path.iterdir()) == [] and os.pread(f.fileno(), 5, 0) == b"stats"
    f.close()


def test_a_missing_directory_is_missing_and_a_path_not_taken_is_stat_ed(tmp_path):
    rels = ["tpbuild-out/a", "tpbuild-out/b"]
    state = _placed(tmp_path, rels)
    os.rmdir(tmp_path / rels[1] / "sub" / "dir")
    base = f"{tmp_path}/"
    p = _done(_start(base, state, tmp_path / "tmp"))
    with pytest.raises(FileNotFoundError):
        p.lstat_sigs(base, _asked(rels))
    (tmp_path / "other").mkdir()
    assert p.lstat_sigs(base, ["other", f"{rels[0]}/1"]) == _in_process(base, ["other", f"{rels[0]}/1"])


def test_a_record_with_an_escaped_name_is_left_to_the_build(tmp_path):
    rels = ['tpbuild-out/q"uote', "tpbuild-out/back\\slash", "tpbuild-out/plain"]
    state = _placed(tmp_path, rels)
    base = f"{tmp_path}/"
    assert prefetch._placed(str(state), prefetch._headers()[2]) == _asked(rels[2:])  # found by a search of the text: not the others
    p = _done(_start(base, state, tmp_path / "tmp"))
    assert p.lstat_sigs(base, _asked(rels)) == _in_process(base, _asked(rels))


def test_each_stat_is_handed_over_once(tmp_path):
    rels = ["tpbuild-out/a"]
    state = _placed(tmp_path, rels)
    base = f"{tmp_path}/"
    p = _done(_start(base, state, tmp_path / "tmp"))
    first = p.lstat_sigs(base, _asked(rels))
    os.rename(tmp_path / rels[0] / "1", tmp_path / rels[0] / "2")
    (tmp_path / rels[0] / "1").mkdir()  # the build placed it again: asked again, stat'ed now
    again = p.lstat_sigs(base, _asked(rels))
    assert again == _in_process(base, _asked(rels)) and again != first


def test_a_failing_helper_leaves_every_path_to_the_build(tmp_path, monkeypatch):
    rels = ["tpbuild-out/a"]
    _placed(tmp_path, rels)
    base = f"{tmp_path}/"
    monkeypatch.setattr(prefetch, "_HELPER", "import sys; sys.exit(3)")
    p = _done(_start(base, tmp_path / "state", tmp_path / "tmp"))  # the helper fails
    assert p._proc.returncode != 0
    assert p.stats(prefetch.SOURCES) == {} and p.stats(prefetch.BLOBS) == {}  # never coming
    assert p.lstat_sigs(base, _asked(rels)) == _in_process(base, _asked(rels))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    assert _start(base, tmp_path / "state", tmp_path / "tmp") is None  # none started


def test_a_helper_closed_or_killed_hands_over_nothing(tmp_path):
    rels = ["tpbuild-out/a"]
    state = _placed(tmp_path, rels)
    base = f"{tmp_path}/"
    p = _start(base, state, tmp_path / "tmp")
    p.go()
    p.close()
    assert p.lstat_sigs(base, _asked(rels)) == _in_process(base, _asked(rels))
    p = _start(base, state, tmp_path / "tmp")
    p._proc.kill()
    assert p.lstat_sigs(base, _asked(rels)) == _in_process(base, _asked(rels))


def test_what_the_helper_writes_whole_or_not_at_all():
    data = b"".join([prefetch._HEADER.pack(2, 3), b"a\0b", bytes([prefetch._TAKEN, prefetch._ABSENT]),
                     prefetch.struct.pack("=8q", 1, 2, 3, 4, 0, 0, 0, 0)])
    assert prefetch._unpacked(data) == (["a", "b"], [(1, 2, 3, 4), (0, 0, 0, 0)], bytes([1, 0]))
    with pytest.raises(ValueError):
        prefetch._unpacked(data[:-1])


def test_a_helper_not_done_is_not_waited_for(tmp_path, monkeypatch):
    rels = ["tpbuild-out/a"]
    state = _placed(tmp_path, rels)
    base = f"{tmp_path}/"
    monkeypatch.setattr(prefetch, "_HELPER", "import time; time.sleep(60)")
    p = _start(base, state, tmp_path / "tmp")
    p.go()
    proc = p._proc
    assert p.stats(prefetch.SOURCES) is None  # still to come
    assert p.lstat_sigs(base, _asked(rels)) == _in_process(base, _asked(rels))
    assert proc.returncode is not None  # stopped and reaped


def _old(*paths) -> None:
    """Files and directories last changed an hour ago: out of the racy window."""
    for path in paths:
        t = time.time_ns() - 3600 * 10 ** 9
        os.utime(path, ns=(t, t))


def _memos(tmp_path):
    """Sources below tmp_path/ws that an analysis memo watches (a directory and a file gone among them),
    blobs that a settle memo names (one gone), and the memos' paths."""
    ws = tmp_path / "ws"
    for rel in ("a/BUILD.toml", "a/1/model.py", "b/BUILD.toml"):
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(rel)
    store = tmp_path / "cas"
    for rel in ("ab/cd", "ef/gh"):
        (store / rel).parent.mkdir(parents=True, exist_ok=True)
        (store / rel).write_text(rel)
    _old(*(ws / r for r in ("a/BUILD.toml", "a/1/model.py", "b/BUILD.toml")))
    f, d = [1, 2, 3, 0o100644], [4096, 2, 3, 0o40755]
    watched = {"a": {"a/BUILD.toml": f, "a/1": d, "a/1/model.py": f}, "b": {"b/BUILD.toml": f, "b/gone.py": f}}
    records = {k: [[[*w], hexed_sigs([*map(tuple, w.values())]), {}], []] for k, w in watched.items()}
    analysis = tmp_path / "analysis"
    analysis.write_text(f"tpbuild-memo analysis v{analysiscache.VERSION}\n[]\n" + "".join(f"{json.dumps(k)}\t{json.dumps(v, separators=(',', ':'))}\n"
                                                                   for k, v in records.items()))
    settled = tmp_path / "settled"
    assert memo.save(settled, delta.KIND, delta.VERSION, ["x", ["d1", "d2", "d3"], "000", ["ab/cd", "ef/gh", "no/such"],
                                                          str(store), "", "", ""], tmp_path / "tmp", "the settle memo") is None
    return ws, store, analysis, settled


def test_the_helpers_stats_of_sources_and_blobs_are_the_in_process_ones(tmp_path):
    ws, store, analysis, settled = _memos(tmp_path)
    base = f"{ws}/"
    p = prefetch.start(base, analysis, settled, tmp_path / "no-state", tmp_path / "tmp")
    _written(p, prefetch.SOURCES)
    files = [f"{base}{r}" for r in ("a/BUILD.toml", "a/1/model.py", "b/BUILD.toml")]  # not the directory, not the one gone
    assert p.stats(prefetch.SOURCES) == {f: stat_sig(os.stat(f)) for f in files}
    assert p.stats(prefetch.SOURCES) == {}  # handed over once
    time.sleep(0.2)
    p._listen()
    assert list(p._spans) == [prefetch.SOURCES] and p.stats(prefetch.BLOBS) is None  # no blob stat'ed before the build holds the lock
    os.unlink(store / "ef" / "gh")  # gone before then: not there
    p.go()
    _written(p, prefetch.BLOBS)
    assert p.stats(prefetch.BLOBS) == {f"{store}/ab/cd": stat_sig(os.stat(store / "ab" / "cd"))}


@pytest.mark.parametrize("memo_kind", ["analysis", "settled", "state", "packages"])
def test_a_memo_of_another_version_is_one_the_helper_finds_nothing_in(tmp_path, memo_kind):
    """The helper parses the memos by hand: one of another version (a format it may misread, as the
    analysis memo's v10 once gave it no sources at all) gives an empty section, every path then
    stat'ed by the build; the others' sections are as before."""
    ws, store, analysis, settled = _memos(tmp_path)
    base = f"{ws}/"
    state = _placed(ws, ["tpbuild-out/t"])
    dirs = _discovered(ws)
    packages = ws / "tpbuild-out/.tpbuild/packages"
    path = {"analysis": analysis, "settled": settled, "state": state, "packages": packages}[memo_kind]
    head, rest = path.read_bytes().split(b"\n", 1)
    version = int(head.rsplit(b" v", 1)[1])
    path.write_bytes(head.replace(b" v%d" % version, b" v%d" % (version + 1)) + b"\n" + rest)
    p = prefetch.start(base, analysis, settled, state, tmp_path / "tmp", packages)
    _written(p, prefetch.SOURCES)  # after discovery's directories
    got = {"packages": len(p._parts) == -(-len(dirs) // prefetch.PART)}
    _done(p)
    p._listen()
    got.update(analysis=bool(p.stats(prefetch.SOURCES)), settled=bool(p.stats(prefetch.BLOBS)))
    got["state"] = bool(p.lstat_sigs(base, [f"tpbuild-out/t/{d}" for d in DIRS]) and p.handed[prefetch.PLACED])
    assert got == {k: k != memo_kind for k in got}, got


def test_observed_takes_each_helpers_stat_once_and_never_one_older_than_its_own(tmp_path):
    ws, store, analysis, settled = _memos(tmp_path)
    base = f"{ws}/"
    changed, kept = f"{base}a/BUILD.toml", f"{base}a/1/model.py"
    p = prefetch.start(base, analysis, settled, tmp_path / "no-state", tmp_path / "tmp")
    _written(p, prefetch.SOURCES)
    helpers = dict(p.stats(prefetch.SOURCES))
    p._taken.clear()  # as if not yet read
    o = Observed()
    listen, p._listen = p._listen, lambda: None  # the helper's sections not seen yet
    spans = dict(p._spans)
    p._spans.clear()
    o.helped(p, [prefetch.SOURCES, prefetch.BLOBS])
    Path(changed).write_text("a longer text")  # changed after the helper's stat, stat'ed here first
    _old(changed)
    mine = o.observe(changed, (1, 2, 3, 4))
    assert mine == stat_sig(os.stat(changed)) != helpers[changed]
    p._listen = listen
    p._spans.update(spans)
    o._until = 0
    Path(kept).write_text("changed after the helper's stat, before the question")
    assert o.observe(kept, (1, 2, 3, 4)) == helpers[kept]  # the helper's: a stat taken in this build
    assert o.sigs([changed, kept]) == [mine, helpers[kept]]  # to the stat memo, each the one analysis used
    assert o.sig(kept) == stat_sig(os.stat(kept)) != helpers[kept]  # and then asked again: stat'ed now
    assert o.counters()["stats"] == {"reused": 0, "taken": 3}  # as without the helper
    p.go()
    _written(p, prefetch.BLOBS)
    blobs = [f"{store}/ab/cd", f"{store}/ef/gh", f"{store}/no/such"]
    assert o.sigs(blobs) == [stat_sig(os.stat(blobs[0])), stat_sig(os.stat(blobs[1])), None]
    assert o._helper is None  # every section taken
    o.forget()  # the memos and actions are done: what is left unasked is dropped
    assert o._pre == {} and o.sigs([f"{base}b/BUILD.toml"]) == [stat_sig(os.stat(f"{base}b/BUILD.toml"))]


def test_the_sources_are_the_files_each_record_watches_with_a_sig_a_path(tmp_path):
    ws, store, analysis, settled = _memos(tmp_path)
    f = (1, 2, 3, 0o100644)
    odd = {'q"uote/BUILD.toml': f, "é/BUILD.toml": f, "short/BUILD.toml": f}
    with open(analysis, "a", encoding="utf-8") as out:
        for i, (path, stat) in enumerate(odd.items()):
            text = hexed_sigs([stat])[:-32] if path.startswith("short") else hexed_sigs([stat])  # half a sig: not a record
            out.write(f"{json.dumps(f'p{i}')}\t{memo._dumps([[[path], text, {}], []])}\n")
    found = prefetch._watched(str(analysis), prefetch._headers()[0], "/ws/")
    assert found == [f"/ws/{r}" for r in ("a/BUILD.toml", "a/1/model.py", "b/BUILD.toml", "b/gone.py",
                                           'q"uote/BUILD.toml', "é/BUILD.toml")]


def _discovered(root) -> list[str]:
    """Package discovery's directories below `root` (its memo saved), each as it asks about them."""
    from tpbuild import discovery
    from tpbuild.layout import STATE_DIR

    (root / STATE_DIR).mkdir(parents=True)
    discovery.discover(root, (), Observed(), None, None)
    dirs = discovery._load(root / STATE_DIR / discovery.KIND, str(root), [])["dirs"]
    return [f"{root}/{d}" if d else str(root) for d in dirs]


def test_the_helpers_stats_of_discovery_s_directories_are_the_in_process_ones(tmp_path):
    """From the last, a part at a time, each handed over once; those it did not take stat'ed here."""
    root = tmp_path / "ws"
    for i in range(prefetch.PART + 300):  # two parts
        (root / "models" / f"m{i:04d}").mkdir(parents=True)
    dirs = _discovered(root)
    assert prefetch._package_dirs(str(root / "tpbuild-out/.tpbuild/packages"), prefetch._headers()[3], f"{root}/") == dirs
    p = _parted(prefetch.start(f"{root}/", None, tmp_path / "no-settled", tmp_path / "no-state", tmp_path / "tmp",
                               root / "tpbuild-out/.tpbuild/packages"), dirs)
    assert [len(prefetch._unpacked(os.pread(p._out.fileno(), e - s, s))[0]) for s, e in p._parts] == \
        [prefetch.PART, len(dirs) - prefetch.PART]  # the last first
    before = [stat_sig(os.stat(d)) for d in dirs]
    (root / "models" / "m0001" / "new").mkdir()  # after the helper's stat: its older one is handed over
    o = Observed()
    o.helped(p, [], dirs=True)
    assert o.dir_sigs(dirs[:7]) + o.dir_sigs(dirs[7:]) == before != [stat_sig(os.stat(d)) for d in dirs]
    assert p.handed[prefetch.DIRS] == len(dirs) and o.counters()["stats"]["taken"] == len(dirs)
    assert p.dir_sigs(dirs) == [None] * len(dirs)  # handed over once
    o.dirs_done()
    assert o.dir_sigs(dirs[:3]) == [stat_sig(os.stat(d)) for d in dirs[:3]]


def test_a_part_not_written_and_a_directory_gone_are_stat_ed_here(tmp_path):
    root = tmp_path / "ws"
    for i in range(prefetch.PART + 300):
        (root / "models" / f"m{i:04d}").mkdir(parents=True)
    dirs = _discovered(root)
    os.rmdir(dirs[-1])  # gone before the helper's stat: not handed over
    p = _parted(prefetch.start(f"{root}/", None, tmp_path / "no-settled", tmp_path / "no-state", tmp_path / "tmp",
                               root / "tpbuild-out/.tpbuild/packages"), dirs)
    del p._parts[0]  # the last part: not written by the time discovery asks
    o = Observed()
    o.helped(p, [], dirs=True)
    assert o.dir_sigs(dirs) == [layout_sig(d) for d in dirs]
    assert p.handed[prefetch.DIRS] == len(dirs) - prefetch.PART


@pytest.mark.parametrize("word", ["enough", "go"])
def test_a_helper_told_enough_stats_no_more_of_discovery_s_directories(tmp_path, word):
    """Discovery done, or the build at its lock (a build that did not discover: `go`)."""
    root = tmp_path / "ws"
    (root / "models" / "m").mkdir(parents=True)
    dirs = _discovered(root)
    p = prefetch.start(f"{root}/", None, tmp_path / "no-settled", tmp_path / "no-state", tmp_path / "tmp",
                       root / "tpbuild-out/.tpbuild/packages")
    o = Observed()
    o.helped(p, [], dirs=True)
    if word == "enough":
        o.dirs_done()  # said before the helper began: it writes none
    _done(p)._listen()
    assert p._parts == [] and o.dir_sigs(dirs) == [stat_sig(os.stat(d)) for d in dirs]


@pytest.mark.parametrize("fate", ["killed", "failing", "late"])
def test_discovery_without_its_helper_stats_every_directory_here(tmp_path, monkeypatch, fate):
    root = tmp_path / "ws"
    (root / "models" / "m").mkdir(parents=True)
    dirs = _discovered(root)
    if fate != "killed":
        monkeypatch.setattr(prefetch, "_HELPER", "import sys; sys.exit(3)" if fate == "failing" else "import time; time.sleep(60)")
    p = prefetch.start(f"{root}/", None, tmp_path / "no-settled", tmp_path / "no-state", tmp_path / "tmp",
                       root / "tpbuild-out/.tpbuild/packages")
    if fate == "killed":
        p._proc.kill()
    elif fate == "failing":
        p._proc.wait()
    o = Observed()
    o.helped(p, [prefetch.SOURCES], dirs=True)
    assert o.dir_sigs(dirs) == [stat_sig(os.stat(d)) for d in dirs] and p.handed[prefetch.DIRS] == 0
    o.dirs_done()  # not waited for
    o.forget()
    p.close()


def test_a_check_s_stats_leave_no_room_for_a_helper(tmp_path):
    o = Observed()
    o.add(f"{tmp_path}/", ["x"], [1, 2, 3, 4])
    assert o.checked and prefetch.ahead(tmp_path, tmp_path, o) is None


def _build(w, prefetching: bool, late: str = "", helper: str = "", pruned: bool = False) -> dict:
    """An ordinary build (no stamp) of `w`, its helper started whatever the workspace's size, or never;
    `late`: Python run (`root`: the workspace's) once the helper has stat'ed discovery's directories and
    the sources, before analysis asks; `helper`: the helper's command, if not prefetch's own (then
    nothing is handed over); `pruned`: a tree is pruned (the placed directories' stats dropped)."""
    (w.root / "tpbuild-out" / ".tpbuild" / "noop").unlink(missing_ok=True)
    report = w.root.parent / f"{w.root.name}-report.json"
    # each section waited for before it is asked (the build never waits: a small one would not use
    # them), but the blobs and directories before the build holds the lock (the helper waits for it)
    code = (f"import json, sys, time, tpbuild.prefetch as p\np.WORTH_MEMO = p.WORTH = {0 if prefetching else 10 ** 12}\n"
            f"p._HELPER = {helper!r} or p._HELPER\n"
            "section, go, ahead, helpers = p.Prefetch._section, p.Prefetch.go, p.ahead, []\n"
            "def waited(self, k):\n"
            "    while getattr(self, 'went', False) and k not in self._spans and self._proc is not None:\n"
            "        self._listen(); time.sleep(0.002)\n"
            "    return section(self, k)\n"
            "def went(self):\n"
            "    self.went = True\n"
            "    go(self)\n"
            "def late(root, memo, observed):\n"
            "    helper = ahead(root, memo, observed)\n"
            "    helpers.append(helper)\n"
            "    while helper is not None and p.SOURCES not in helper._spans and helper._proc is not None:\n"
            "        helper._listen(); time.sleep(0.002)\n"
            f"    exec({late!r})\n"
            "    return helper\n"
            "p.Prefetch._section, p.Prefetch.go, p.ahead = waited, went, late\n"
            "from tpbuild.cli import main\ncode = main(sys.argv[1:])\n"
            "print('handed', json.dumps([h.handed for h in helpers if h is not None]), file=sys.stderr)\n"
            "sys.exit(code)")
    p = subprocess.run([sys.executable, "-c", code, "-C", str(w.root), "build", "//...", "--report", str(report)],
                       capture_output=True, text=True, env=w.env)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout + p.stderr
    r = json.loads(report.read_text())
    handed = json.loads(re.search(r"^handed (.*)$", p.stderr, re.M).group(1))
    if prefetching and not helper:  # each section handed over at its first question: discovery's directories
        # (its memo trusting them), each model's BUILD.toml and model.py, its blobs, its placed directories
        assert len(handed) == 1 and handed[0].pop(str(prefetch.SOURCES)) >= 2 * 6, p.stderr
        assert (handed[0].pop(str(prefetch.PLACED)) == 0) == pruned and min(handed[0].values()) > 0, p.stderr
    else:
        assert not prefetching or handed == [dict.fromkeys(map(str, range(prefetch.PLACED + 1)), 0)], p.stderr
    return {"targets": r["targets"], "placed": (r["execution"]["placed"], r["execution"]["placed_parts"]),
            "executed": sum(a["status"] == "executed" for a in r["actions"]), "discovery": r["files"]["discovery"]}


def _twins(tmp_path, names: tuple[str, str]) -> list:
    """Twin workspaces built, their memos trusting their stats (the packages memo's too: tpbuild-out
    made in the root by the first build, whose discovery could not save its memo yet)."""
    twins = [_workspace(tmp_path, name, models=6) for name in names]
    for w in twins:
        _old(*w.root.rglob("*"), w.root)  # sources the analysis memo records stats of (none too fresh)
        assert _build(w, False)["placed"][0] > 0
        _old(w.root)
        assert _build(w, False)["discovery"] == "walked"  # and saves its memo
    return twins


def test_a_build_with_the_helper_answers_as_one_without(tmp_path):
    """Twin workspaces, one tree changed in each after a build: the build that takes its stats from the
    helper places what the one that stats them itself places."""
    twins = _twins(tmp_path, ("with", "without"))
    for w in twins:
        (w.out("models/m001/m001/1") / "stray").write_text("x")  # a directory changed: its tree placed again
    with_, without = _build(twins[0], True), _build(twins[1], False)
    assert with_ == without and with_["placed"] != (0, 0) and with_["discovery"] == "reused"
    assert _snapshot(twins[0].out("")) == _snapshot(twins[1].out(""))
    assert _build(twins[0], True)["placed"] == (0, 0)  # and then in place


# A model package made in a new directory, `root` its workspace's root: run in a build's process too (`_build`).
_NEW_MODEL = ("(root / 'models' / 'new' / '1').mkdir(parents=True)\n"
              "(root / 'models' / 'new' / '1' / 'model.py').write_text('class TritonPythonModel:\\n    pass\\n')\n"
              "(root / 'models' / 'new' / 'BUILD.toml').write_text('[triton_model.new]\\nversions = [\"1\"]\\n')\n")


@pytest.mark.parametrize("change", ["added", "deleted"])
def test_a_package_added_or_deleted_before_the_build_is_found_with_the_helper(tmp_path, change):
    """A package made in a new directory, or one deleted, before the build: the helper's stats of
    discovery's directories show it (its parent's moved), and discovery walks the tree, as without."""
    twins = _twins(tmp_path, ("with", "without"))
    for w in twins:
        if change == "added":
            exec(_NEW_MODEL, {"root": w.root})
        else:
            shutil.rmtree(w.root / "models" / "m002")
    with_, without = _build(twins[0], True, pruned=change == "deleted"), _build(twins[1], False)
    assert with_ == without and with_["discovery"] == "rescanned"
    assert ("//models/new:new" in with_["targets"]) == (change == "added")
    assert ("//models/m002:m002" in with_["targets"]) == (change == "added")
    assert _snapshot(twins[0].out("")) == _snapshot(twins[1].out(""))


def test_a_package_added_after_the_helpers_stat_is_found_by_the_next_build(tmp_path):
    """A directory changed after the helper's stat of it is one changed right after discovery: this
    build does not see it; the stamp keeps the stat discovery used, and the next build finds it."""
    twins = _twins(tmp_path, ("late", "early"))
    late = _build(twins[0], True, late=_NEW_MODEL)
    assert "//models/new:new" not in late["targets"] and late["discovery"] == "reused"
    exec(_NEW_MODEL, {"root": twins[1].root})
    for w in twins:
        assert "//models/new:new" in w.build(check=True).report["targets"]
    assert _snapshot(twins[0].out("")) == _snapshot(twins[1].out(""))


def test_a_build_whose_helper_fails_answers_as_one_without(tmp_path):
    twins = _twins(tmp_path, ("failed", "without"))
    for w in twins:
        exec(_NEW_MODEL, {"root": w.root})
    failed = _build(twins[0], True, helper="import sys; sys.exit(3)")
    assert failed == _build(twins[1], False) and "//models/new:new" in failed["targets"]
    assert _snapshot(twins[0].out("")) == _snapshot(twins[1].out(""))


def test_a_source_edited_after_the_helpers_stat_is_seen_by_the_next_build(tmp_path):
    """An edit the helper's stat came before is one this build did not see, as an edit right after its
    check: the memos and the stamp keep the stat it used, so the next build finds the file moved and
    builds what the twin workspace, edited before its build, builds."""
    model = "models/m001/1/model.py"
    twins = _twins(tmp_path, ("late", "early"))
    late = _build(twins[0], True, late=f"(root / {model!r}).write_text('class TritonPythonModel:\\n    pass\\n')")
    assert late["executed"] == 0  # the stat it used is the one from before the edit
    (twins[1].root / model).write_text((twins[0].root / model).read_text())
    assert twins[1].build(check=True).statuses("executed")
    assert twins[0].build(check=True).statuses("executed")  # its stamp's check finds the edit
    assert _snapshot(twins[0].out("")) == _snapshot(twins[1].out(""))
    assert not twins[0].build(check=True).statuses("executed")
