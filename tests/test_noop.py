"""The no-op stamp (tpbuild/noop.py): a settled no-op build is answered from stats without loading a
rule, and no change the ordinary path would act on is ever hidden by it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import sys
from pathlib import Path

import pytest

SUMMARY = re.compile(r"^Built (\d+)/(\d+) targets, (\d+) actions: (\d+) executed, (\d+) from cache in", re.M)


def _settle(*roots: Path) -> None:
    """Age every file by a minute: the stamp trusts no stat younger than the racy window (2 s)."""
    t = os.stat(roots[0]).st_mtime - 60
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                os.utime(os.path.join(dirpath, name), (t, t), follow_symlinks=False)
        os.utime(root, (t, t))


def _build(ws) -> tuple[subprocess.CompletedProcess, bool]:
    """A plain `tpbuild build //...` (no --report: the stamp never answers that one); whether the
    stamp answered it, told by analysis never being imported (the ordinary path with every analysis
    record valid imports no rule set either: tests/test_lazy_rules.py)."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "tpbuild", "-C", str(ws.root), "build", "//..."],
                       capture_output=True, text=True, env=ws.env)
    errors = "".join(line for line in p.stderr.splitlines(True) if not line.startswith("import time:"))
    assert p.returncode == 0 and "Traceback" not in errors, p.stdout + errors
    return p, "tpbuild.analysis" not in p.stderr


def _executed(p: subprocess.CompletedProcess) -> int:
    return int(SUMMARY.search(p.stdout).group(4))


def _repository_and_labels(ws) -> None:
    """A repository of every model under models/, and the labels genrule they ship (tests/test_edit_sequence.py too)."""
    ws.write("BUILD.toml", """
        [model_repository.repo]
        models = ["//models/..."]
    """)
    ws.write("shared/classes.txt", "b\na\n")
    ws.write("shared/BUILD.toml", """
        [genrule.labels]
        srcs = ["classes.txt"]
        outs = ["labels.txt"]
        cmd = "sort $SRCS > $OUT"
    """)


@pytest.fixture
def stamped(ws):
    _repository_and_labels(ws)
    ws.write("tools/BUILD.toml", """
        [genrule.t]
        outs = ["t.txt"]
        cmd = "echo t > $OUT"
    """)
    ws.write("docs/notes.txt", "notes\n")  # a directory without a manifest (yet)
    ws.write("models/m/1/model.py", "class TritonPythonModel:\n    pass\n")
    ws.write("models/m/BUILD.toml", """
        [triton_model.m]
        versions = ["1"]
        files = ["//shared:labels"]
        [triton_model.m.config]
        input = [{ name = "X", data_type = "TYPE_FP32", dims = [1] }]
        output = [{ name = "Y", data_type = "TYPE_FP32", dims = [1] }]
    """)
    first, _ = _build(ws)
    assert _executed(first) > 0
    _settle(ws.root, ws.cache)
    recorded, answered = _build(ws)  # the ordinary path: every stat moved; it leaves the stamp
    assert not answered and _executed(recorded) == 0
    ws.recorded = recorded
    return ws


def test_settled_noop_is_answered_from_the_stamp_with_the_same_summary(stamped):
    for _ in range(2):
        p, answered = _build(stamped)
        assert answered
        same = lambda text: re.sub(r"in [0-9.]+s", "in Xs", text)  # noqa: E731
        assert same(p.stdout) == same(stamped.recorded.stdout)
    # Any option beyond -j/-k/-C/--cache-dir (here --report) takes the ordinary path.
    assert stamped.build(check=True).report["success"]


def test_another_copy_of_tpbuild_is_not_answered_by_the_stamp_of_this_one(stamped, tmp_path):
    """The stamp records the stats of the code the build ran; a build by another copy of the engine
    (here found first through PYTHONPATH, one of its key modules edited: its actions' keys move) must not
    be told "nothing to do" by stats of code it does not run."""
    import shutil

    import tpbuild

    copy = tmp_path / "other"
    shutil.copytree(Path(tpbuild.__file__).parent, copy / "tpbuild")
    with open(copy / "tpbuild" / "action.py", "a") as f:
        f.write("\n# another version of the engine\n")
    assert _build(stamped)[1]  # this copy's stamp answers this copy
    env = dict(stamped.env, PYTHONPATH=os.pathsep.join(filter(None, [str(copy), stamped.env.get("PYTHONPATH")])))
    p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(stamped.root), "build", "//..."],
                       capture_output=True, text=True, env=env, cwd=tmp_path)  # not this checkout's first on the path
    assert p.returncode == 0 and _executed(p) > 0, p.stdout + p.stderr  # the other engine's keys: built again


def _edit_source(ws):
    (ws.root / "shared/classes.txt").write_text("c\nb\na\n")
    return lambda: (ws.out("shared/labels/labels.txt").read_text() == "a\nb\nc\n", None)


def _chmod_source(ws):
    os.chmod(ws.root / "models/m/1/model.py", 0o755)
    return lambda: (os.access(ws.out("models/m/m/1/model.py"), os.X_OK), None)


def _edit_manifest(ws):
    p = ws.root / "models/m/BUILD.toml"
    p.write_text(p.read_text().replace("dims = [1]", "dims = [2]"))
    return lambda: ("dims: 2" in ws.out("models/m/m/config.pbtxt").read_text(), None)


def _new_package(ws):
    ws.write("models/n/1/model.py", "class TritonPythonModel:\n    pass\n")
    ws.write("models/n/BUILD.toml", (ws.root / "models/m/BUILD.toml").read_text().replace(".m", ".n"))
    return lambda: (ws.out("repo/repo/n/config.pbtxt").exists() or ws.out("repo/n/config.pbtxt").exists(), None)


def _delete_output(ws):
    p = ws.out("models/m/m/labels.txt")
    os.chmod(p.parent, 0o755)
    p.unlink()
    return lambda: (p.read_text() == "a\nb\n", 0)


def _edit_output_in_place(ws):
    """A placed file the stamp holds linked (noop._Linked: proven by its directory's and its blob's stats,
    not stat'ed itself): written through, the blob it links moves with it."""
    p = ws.out("models/m/m/labels.txt")
    mode = p.stat().st_mode
    os.chmod(p, 0o644)
    p.write_text("z\nz\n")  # the same size
    os.chmod(p, mode)
    return lambda: (p.read_text() == "a\nb\n", None)  # the damaged blob quarantined, the labels made again


def _replace_output(ws):
    """A linked file replaced by another of the same bytes (a new inode; its directory's mtime moves)."""
    p = ws.out("models/m/m/labels.txt")
    mode = p.parent.stat().st_mode
    os.chmod(p.parent, 0o755)
    p.with_name(".new").write_text("a\nb\n")
    os.replace(p.with_name(".new"), p)
    os.chmod(p.parent, mode)
    blob = next(b for b in (ws.cache / "cas").rglob("*") if b.is_file() and b.read_bytes() == b"a\nb\n")
    return lambda: (os.path.samefile(p, blob), 0)  # placed again, a link of the blob


def _replace_blob_then_edit_output(ws):
    """The blob a placed file links replaced by a copy (the same bytes, a new inode: the file is no longer its
    link), then the file written through: neither its directory nor any record moved, only the blob's stat."""
    blob = next(b for b in (ws.cache / "cas").rglob("*") if b.is_file() and b.read_bytes() == b"a\nb\n")
    mode = blob.stat().st_mode
    copy = blob.with_name(".copy")
    copy.write_bytes(blob.read_bytes())
    os.chmod(copy, mode)
    os.replace(copy, blob)
    time.sleep(2.1)  # the copy past the racy window: found whole at its new stat, which the settle memo records
    p = ws.out("models/m/m/labels.txt")
    mode = p.stat().st_mode
    os.chmod(p, 0o644)
    p.write_text("z\nz\n")  # the same size
    os.chmod(p, mode)
    return lambda: (p.read_text() == "a\nb\n", 0)  # placed again, from the blob


def _delete_blob(ws):
    victim = next(p for p in (ws.cache / "cas").rglob("*") if p.is_file() and p.read_bytes() == b"a\nb\n")
    victim.unlink()
    return lambda: (ws.out("shared/labels/labels.txt").read_text() == "a\nb\n", None)


def _salt(ws):
    (ws.root / "tpbuild.toml").write_text('[cache]\nsalt = "2"\n')
    return lambda: (True, None)


def _edit_model_body(ws):
    """Known to analysis by its facts only (tpbuild.facts): the stamp still watches its stat."""
    p = ws.root / "models/m/1/model.py"
    p.write_text(p.read_text() + "# edited\n")
    return lambda: (ws.out("models/m/m/1/model.py").read_text() == p.read_text(), None)


def _damage_stamp(ws):
    p = ws.root / "tpbuild-out/.tpbuild/noop"
    head, _, body = p.read_bytes().partition(b"\n")
    data = json.loads(body)
    first = next(i for i, g in enumerate(data["groups"]) if len(g) == 4)
    data["groups"][first] = data["groups"][first][:3]  # a group of stats without its stats
    p.write_bytes(head + b"\n" + json.dumps(data).encode())
    return lambda: (True, 0)


@pytest.mark.parametrize("change", [_edit_source, _chmod_source, _edit_manifest, _new_package, _delete_output,
                                    _delete_blob, _salt, _edit_model_body, _damage_stamp])
def test_no_change_hides_behind_the_stamp(stamped, change):
    _not_hidden(stamped, change)


def _not_hidden(ws, change) -> None:
    check = change(ws)
    p, answered = _build(ws)
    assert not answered
    ok, executed = check()
    assert ok, p.stdout
    if executed is not None:
        assert _executed(p) == executed, p.stdout
    else:
        assert _executed(p) > 0, p.stdout


@pytest.fixture
def linked(stamped):
    """A stamp holding the placed files linked (noop._Linked: proven by their directory's and their
    blob's stats, not stat'ed themselves): recorded by a build that placed nothing, its directories
    older than the racy window (the fixture's last build placed every tree again: _settle moved their stats)."""
    (stamped.root / "tpbuild-out/.tpbuild/noop").unlink()
    time.sleep(2.1)
    p, answered = _build(stamped)
    assert not answered and _executed(p) == 0
    from tpbuild.layout import unpacked
    from tpbuild.noop import linked_path

    data = json.loads((stamped.root / "tpbuild-out/.tpbuild/noop").read_bytes().partition(b"\n")[2])
    groups = dict(zip(data["roles"], data["groups"]))
    linked = groups["linked"][:3] + [unpacked(text, "I") for text in groups["linked"][3:6]]
    paths = [linked_path(linked, groups["placed_dirs"][2], j) for j in range(len(linked[3]))]
    assert "tpbuild-out/models/m/m/labels.txt" in paths
    assert "tpbuild-out/models/m/m/labels.txt" not in groups["placed"][2]
    return stamped


def test_a_stamp_holding_placed_files_linked_answers_the_no_op(linked):
    assert _build(linked)[1]


@pytest.mark.parametrize("change", [_delete_output, _edit_output_in_place, _replace_output, _delete_blob,
                                    _replace_blob_then_edit_output])
def test_no_change_to_a_linked_file_hides_behind_the_stamp(linked, change):
    _not_hidden(linked, change)


@pytest.mark.parametrize("change", [_delete_output, _edit_output_in_place, _replace_output, _delete_blob,
                                    _replace_blob_then_edit_output])
def test_no_change_to_a_linked_file_hides_from_the_ordinary_path(linked, change):
    """Without a stamp, the ordinary path proves a placed link as the stamp does, by its directory's and
    its blob's stats (build._linked), and sees the same changes."""
    (linked.root / "tpbuild-out/.tpbuild/noop").unlink()
    _not_hidden(linked, change)


def _ordinary_report(ws) -> dict:
    """The report of `tpbuild build //...` on the ordinary path (the stamp removed first)."""
    (ws.root / "tpbuild-out/.tpbuild/noop").unlink(missing_ok=True)
    report = ws.root.parent / "ordinary.json"
    p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(ws.root), "build", "//...", "--report", str(report)],
                       capture_output=True, text=True, env=ws.env)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(report.read_text())


def test_the_placed_memo_answers_the_ordinary_paths_check_of_every_tree(linked):
    """The last stamp's placed groups, kept beside it (`placedmemo.py`): the ordinary path with nothing changed
    takes every placed tree from them (the report counts them) and places nothing; and its stamp, from the
    kept groups, answers the next build."""
    assert (linked.root / "tpbuild-out/.tpbuild/placed").is_file()
    from tpbuild import outputs

    state = outputs.BuildState(linked.root / "tpbuild-out/.tpbuild/state", outputs.cache_id(linked.cache))
    trees = len(state.outputs)  # every placed tree's record, a repository's parts each by its own
    execution = _ordinary_report(linked)["execution"]
    assert (execution["placed_memo"], execution["placed"], execution["keyed"]) == (trees, 0, 0), execution
    p, answered = _build(linked)  # writes the stamp (a --report build leaves it as it is), from the kept groups
    assert not answered and _executed(p) == 0
    assert _build(linked)[1]


@pytest.mark.parametrize("change", [_delete_output, _edit_output_in_place, _replace_output, _delete_blob,
                                    _replace_blob_then_edit_output])
def test_no_change_to_a_placed_file_hides_behind_the_placed_memo(linked, change):
    """Each change the stamp sees in a linked file moves what the placed memo rests on (a directory's stat,
    a blob's, a record's text): no tree is taken from it, each is checked (and placed again) as ever."""
    assert (linked.root / "tpbuild-out/.tpbuild/placed").is_file()
    check = change(linked)
    report = _ordinary_report(linked)
    assert report["execution"]["placed_memo"] == 0, report["execution"]
    assert check()[0]
    assert _ordinary_report(linked)["execution"]["placed_memo"] == 0  # a --report build writes no stamp, nor memo
    time.sleep(2.1)  # what was placed again past the racy window: else the stamp holds it unproven, and no memo
    _build(linked)
    assert _ordinary_report(linked)["execution"]["placed_memo"] > 0  # the stamp's build recorded it again


def test_a_placed_memo_of_other_patterns_vouches_for_nothing_and_is_recorded_again(linked):
    """The memo of a stamp of some outputs (`//models/...`) rests on that build's blobs, not on those of a
    build of every output: the next ordinary build of `//...` checks each tree (and places nothing), and its
    stamp records the memo of them all, which the build after it takes every tree from."""
    (linked.root / "tpbuild-out/.tpbuild/noop").unlink()
    p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(linked.root), "build", "//models/..."],
                       capture_output=True, text=True, env=linked.env)
    assert p.returncode == 0 and _executed(p) == 0, p.stdout + p.stderr
    tops = json.loads((linked.root / "tpbuild-out/.tpbuild/placed").read_bytes().partition(b"\n")[2])["tops"]
    assert "tpbuild-out/models/m/m" in tops and "tpbuild-out/repo" not in tops  # that build's outputs (and their deps')
    other = _ordinary_report(linked)["execution"]
    assert (other["placed_memo"], other["placed"]) == (0, 0), other
    _build(linked)  # its stamp, of every output
    every = _ordinary_report(linked)["execution"]
    assert every["placed_memo"] > len(tops) and every["placed"] == 0, every


@pytest.mark.parametrize("damage", [b"not json", b'{"tops": [1], "keys": {}, "groups": []}',
                                    b'{"tops": [], "keys": [], "digests": [], "texts": "", "blobs": [], '
                                    b'"device": [], "groups": {"placed": 1, "placed_dirs": 2, "linked": 3}}'])
def test_a_damaged_placed_memo_is_no_premise(linked, damage):
    """A placed memo that is not one this code wrote (damaged, or hand-edited) vouches for no tree."""
    from tpbuild import memo, placedmemo

    path = linked.root / "tpbuild-out/.tpbuild/placed"
    path.write_bytes(memo.header(placedmemo.KIND, placedmemo.VERSION) + damage)
    report = _ordinary_report(linked)
    assert report["execution"]["placed_memo"] == 0 and report["success"], report["execution"]


def test_a_directory_that_is_not_there_is_an_error_not_a_stamp(stamped):
    """`-C` is checked before any stamp is looked for: a typo inside a stamped workspace is not a no-op."""
    p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", "no-such-dir", "build", "//..."], capture_output=True,
                       text=True, env=stamped.env, cwd=stamped.root)
    assert p.returncode == 2 and "-C no-such-dir: no such directory" in p.stderr


@pytest.mark.parametrize("argv", [
    ["build", "//..."], ["-C", "WS", "build", "//...", "-j", "2"], ["build", "-C", "WS", "//...", "-j2", "-k"],
    ["--cache-dir", "CACHE", "build", "//models/...", "//shared:labels", "--jobs=3", "--explain"],
    ["build", "--cache-dir=CACHE", "--keep-going", "//...", "--jobs", "1", "-C", "WS"],
    ["build", "//...", "-j", "0"],
])
def test_plain_command_lines_are_parsed_for_the_stamp_as_argparse_parses_them(stamped, argv, monkeypatch):
    """noop.simple_args answers before argparse is imported; the key it gives must be the one the full
    parser gives, or a stamp recorded by one would be checked against another command line."""
    from tpbuild import cli, noop

    monkeypatch.chdir(stamped.root)
    argv = [str(stamped.root) if a == "WS" else str(stamped.cache) if a == "CACHE" else a for a in argv]
    simple = noop.simple_args(argv)
    assert simple is not None
    parsed, extra = cli._parser({}).parse_known_args(argv)
    assert extra == []
    start = lambda a: Path(getattr(a, "directory", None) or ".")  # noqa: E731
    fast, full = noop.Stamp.open(start(simple), simple), noop.Stamp.open(start(parsed), parsed)
    assert (fast is None) == (full is None) and (fast is None or (fast.root, fast.key) == (full.root, full.key))
    assert (simple.jobs, simple.keep_going, simple.explain) == (parsed.jobs, parsed.keep_going, parsed.explain)
    # What the build then goes on with, argparse left out (cli.plain_build_args): every option as parsed.
    plain = cli.plain_build_args(simple)
    assert {k: getattr(plain, k, None) for k in {*vars(plain), *vars(parsed)}} == \
        {k: getattr(parsed, k, None) for k in {*vars(plain), *vars(parsed)}}


@pytest.mark.parametrize("argv", [
    ["build"], ["build", "//...", "--report", "r.json"], ["build", "//...", "-//models/..."], ["-j", "2", "build", "//..."],
    ["query", "//..."], ["build", "//...", "--keep"], ["build", "//...", "-j"], ["build", "//...", "-jx"],
    ["build", "//...", "--explain=yes"],
])
def test_other_command_lines_are_left_to_argparse(argv):
    from tpbuild import noop

    assert noop.simple_args(argv) is None


def _stamp_stats(ws) -> list[int]:
    """The stamp's stats, and those a delta build patched it with (`noop-patch`, incremental.py)."""
    from tpbuild.layout import unpacked

    head, _, body = (ws.root / "tpbuild-out/.tpbuild/noop").read_bytes().partition(b"\n")
    stats = [v for g in json.loads(body)["groups"] if len(g) == 4 for v in unpacked(g[3])]
    patch = ws.root / "tpbuild-out/.tpbuild/noop-patch"
    if patch.exists():
        stats += [v for g in json.loads(patch.read_bytes().partition(b"\n")[2])["groups"].values() for v in g[1]]
    return stats


def test_a_build_that_executed_leaves_a_stamp_with_what_it_cannot_vouch_for_unproven(stamped):
    """The build after an edit is stamped too (its check hands the next build its stats), but what it
    just wrote or read within the racy window is recorded unproven (here the source edited, dated a
    minute ahead: within the racy window of any build until then, however slow): the next build proves
    it again, executing nothing, and once settled, that one's stamp answers the build after it."""
    from tpbuild.noop import UNPROVEN

    _edit_source(stamped)
    future = time.time_ns() + 60 * 10**9
    os.utime(stamped.root / "shared/classes.txt", ns=(future, future))
    p, answered = _build(stamped)
    assert not answered and _executed(p) > 0
    stats = _stamp_stats(stamped)
    assert list(UNPROVEN) in [stats[i:i + 4] for i in range(0, len(stats), 4)]
    p, answered = _build(stamped)
    assert not answered and _executed(p) == 0
    _settle(stamped.root, stamped.cache)
    p, answered = _build(stamped)
    assert not answered and _executed(p) == 0  # every stat moved: proven again, now settled
    assert UNPROVEN[0] not in _stamp_stats(stamped)
    assert _build(stamped)[1]


def test_a_same_size_rewrite_within_the_racy_window_is_not_hidden_by_the_stamp(stamped):
    """A rewrite that keeps size, inode and mtime (within the timestamp granularity of the build that
    read the file) is told apart only by reading it: the stamp of that build holds it unproven."""
    p = stamped.root / "shared/classes.txt"
    future = time.time_ns() + 60 * 10**9  # within the racy window of any build in the next minute
    p.write_text("c\nb\na\n")
    os.utime(p, ns=(future, future))
    first, answered = _build(stamped)
    assert not answered and stamped.out("shared/labels/labels.txt").read_text() == "a\nb\nc\n"
    with open(p, "r+") as f:  # in place: the same inode
        f.write("d\nb\na\n")
    os.utime(p, ns=(future, future))
    p2, answered = _build(stamped)
    assert not answered and stamped.out("shared/labels/labels.txt").read_text() == "a\nb\nd\n", p2.stdout


def test_a_same_size_rewrite_of_tpbuild_toml_within_the_racy_window_is_not_hidden(stamped):
    """No memo's digest vouches for tpbuild.toml's stat (it is read whole on every ordinary build): only
    the stamp's own racy window holds it unproven after a build that read it moments after a change."""
    p = stamped.root / "tpbuild.toml"
    future = time.time_ns() + 60 * 10**9
    p.write_text('[cache]\nsalt = "1"\n')
    os.utime(p, ns=(future, future))
    first, answered = _build(stamped)
    assert not answered and _executed(first) > 0
    with open(p, "r+") as f:
        f.write('[cache]\nsalt = "2"\n')
    os.utime(p, ns=(future, future))
    again, answered = _build(stamped)
    assert not answered and _executed(again) > 0, again.stdout


def test_packed_stats_read_back_exactly_with_inode_numbers_from_2_to_the_63():
    """The stamp packs its stats as 64-bit signed integers (layout.packed): an inode number overlayfs
    gives with its top bit set is stored as its two's complement and read back as it was, and an
    unproven entry stays one."""
    from tpbuild.layout import packed, packed_text, stat_at, unpacked
    from tpbuild.noop import UNPROVEN

    stats = [(12, 1_796_186_062_744_585_804, (1 << 64) - 2, 0o100644), UNPROVEN, (0, -5, 7, 0o40755)]
    back = unpacked(packed_text(packed([v for s in stats for v in s])))
    assert [stat_at(back, i) for i in range(len(stats))] == stats
    with pytest.raises(ValueError):
        unpacked("not base64!")


def test_the_check_takes_stats_with_inode_numbers_from_2_to_the_63(tmp_path, monkeypatch):
    """The check packs its stats as it takes them (noop._stats, through struct: layout.packed); one that
    does not fit 64 signed bits goes through the exact packing, and reads back as it was."""
    from tpbuild import noop
    from tpbuild.layout import stat_at

    for name in "ab":
        (tmp_path / name).write_text(name)
    monkeypatch.setattr(noop, "stat_sig", lambda st: (st.st_size, st.st_mtime_ns, st.st_ino | 1 << 63, st.st_mode))
    now = noop._stats(os.stat, f"{tmp_path}/", ["a", "b"])
    assert [stat_at(now, i)[2] for i in (0, 1)] == [(tmp_path / n).stat().st_ino | 1 << 63 for n in "ab"]


def test_positions_of_a_packed_value_are_whole_items_only():
    """layout.positions searches the bytes: a match across two items (here 1's bytes inside 256 and 0)
    is not a position."""
    from array import array

    from tpbuild.layout import positions

    index = array("I", [256, 0, 1, 7, 1])
    assert list(positions(index.tobytes(), "I", 1)) == [2, 4]
    assert list(positions(index.tobytes(), "I", 9)) == []


def test_a_build_killed_after_its_stamp_leaves_nothing_behind_the_hit_after_it(stamped):
    """Killed after it saved its stamp, before its exit removed its own temp directory (`atomic.py`): the
    builds after it are the stamp's hits, which sweep a dead build's leftovers as the ordinary path does
    (`noop._sweep`), so a kill -9 anywhere leaves nothing behind the next build."""
    (stamped.root / "tpbuild-out/.tpbuild/noop").unlink()
    time.sleep(2.1)  # past the racy window: the stamp the killed build saves vouches for everything
    p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(stamped.root), "build", "//..."],
                       capture_output=True, text=True, env={**stamped.env, "TPBUILD_TEST_KILL_AT": "stamped"})
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    tmp = stamped.root / "tpbuild-out/.tpbuild/tmp"
    assert os.listdir(tmp), "the killed build left no temp directory: nothing to test"
    _, answered = _build(stamped)
    assert answered
    assert os.listdir(tmp) == []


def test_a_hit_sweeps_no_directory_a_hand_written_stamp_names(stamped, tmp_path):
    """The temp directories a hit sweeps are read from the stamp, but a stamp naming others (damaged,
    hand-written) sweeps nothing: they must be this workspace's with a tpbuild cache (`noop._sweep`).
    Here a directory of someone's holds what a sweep removes (an unlocked directory named as a dead
    build's, a file older than an hour), and stays as it was."""
    mine = tmp_path / "mine"
    (mine / "123.keep").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine\n")
    old = time.time() - 7200
    os.utime(mine / "notes.txt", (old, old))
    path = stamped.root / "tpbuild-out/.tpbuild/noop"
    header, _, body = path.read_bytes().partition(b"\n")
    data = json.loads(body)
    data["tmp"] = [str(mine), *data["tmp"][1:]]
    path.write_bytes(header + b"\n" + json.dumps(data, separators=(",", ":")).encode())
    _, answered = _build(stamped)
    assert answered
    assert sorted(os.listdir(mine)) == ["123.keep", "notes.txt"]


def test_a_build_ending_its_process_frees_and_collects_nothing_on_its_way_out_and_in_process_restores(stamped):
    """An ordinary no-op from the memos runs no rule code, so the cyclic collector stays off throughout
    (cli._main); when the process ends right after (`cli._end`), it stays off to the end: switched on
    again, it collected at the next allocation every object the build had made (0.2-0.4 s of the no-op
    at 10,000 models, freeing nothing). Low thresholds make any collection show even here. Nor is what
    it built freed as each frame returns (0.1-0.2 s more): the result is alive at exit. A caller running
    `main` in-process gets its collector back."""
    (ws := stamped).root.joinpath("tpbuild-out/.tpbuild/noop").unlink()  # the ordinary path
    script = ("import atexit, gc, sys\nfrom tpbuild import cli\ncli.GC_THRESHOLDS = (1000, 1, 1)\nn = [0]\n"
              "gc.callbacks.append(lambda phase, info: phase == 'start' and n.__setitem__(0, n[0] + 1))\n"
              "atexit.register(lambda: print('collections', n[0], 'kept',\n"
              "                              any(type(o).__name__ == 'BuildResult' for o in gc.get_objects())))\n"
              f"sys.argv = ['tpbuild', '-C', {str(ws.root)!r}, 'build', '//...']\ncli.main()\n")
    p = _ordinary_no_op(ws, script)
    assert p.stdout.splitlines()[-1] == "collections 0 kept True", p.stdout
    script = ("import gc\nfrom tpbuild import cli\n"
              f"code = cli.main(['-C', {str(ws.root)!r}, 'build', '//...'])\nprint(code, gc.isenabled())\n")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ws.env)
    assert p.stdout.splitlines()[-1] == "0 True", p.stdout + p.stderr


def test_the_stamp_of_the_settle_memos_blobs_is_the_one_of_the_blobs_the_results_name(linked):
    """An ordinary no-op settles every result with the settle memo's blobs (`build.BuildResult.blobs`), and
    the stats it found them whole at, packed and as text (`delta.Premise.stats`, `delta.Premise.text`): the
    stamp written from them is, byte for byte, the one written from the blobs the results name, their
    stats packed anew. (Every placed tree past the racy window, `linked`: else the two could fall on
    either side of it.)"""
    _same_stamp_without(linked, "result.blobs is not None and None not in result.blobs", "result.blobs = None")


def test_the_stamp_of_the_sources_settling_found_is_the_one_of_the_walk_of_the_actions(linked):
    """The sources settling found the actions read (`build.BuildResult.sources`, `delta.Premise.paths`)
    make, byte for byte, the stamp the walk of the actions' inputs makes (`incremental.Walk`)."""
    _same_stamp_without(linked, "bool(result.sources)", "result.sources = None")


def test_the_stamp_of_the_place_checks_columns_is_the_one_of_the_records(linked):
    """The placed records sorted by the columns the place check compared them by (`outputs.Placed.compared`)
    make, byte for byte, the stamp their records make (`noop._alike`); a run not of these records, or
    of a record placed again since, is not taken."""
    taken = ("noop._as_compared(result.placed.records([o for t in result.targets.values() for o in t.outputs])[0], "
             "result.placed.compared()) is not None")
    for unset in ("result.placed.compared().clear()", "result.placed.compared().reverse()"):
        _same_stamp_without(linked, taken, unset, placed_memo=False)


def test_the_stamp_of_the_placed_memos_groups_is_the_one_of_the_records(linked):
    """The placed groups the placed memo kept (`placedmemo.PlacedMemo.kept`: its premise held, nothing placed
    since) make, byte for byte, the stamp the placed records make, sorted anew."""
    taken = "result.placed_memo.kept([o for t in result.targets.values() for o in t.outputs]) is not None"
    _same_stamp_without(linked, taken, "result.placed_memo = None")


def _same_stamp_without(ws, handed: str, unset: str, placed_memo: bool = True) -> None:
    """An ordinary no-op of `ws` that writes its stamp twice: from what the build handed it (`handed` holds),
    then after `unset` (the stamp finds it itself): the same bytes. Without the placed memo unless
    `placed_memo` (the place check then compares every tree: `outputs.in_place_all`)."""
    ws.root.joinpath("tpbuild-out/.tpbuild/noop").unlink()  # the ordinary path
    if not placed_memo:
        ws.root.joinpath("tpbuild-out/.tpbuild/placed").unlink()
    script = ("import sys\nfrom pathlib import Path\nfrom tpbuild import cli, noop\nrecord = noop.Stamp.record\n"
              "def twice(self, result, cache_dir):\n"
              "    record(self, result, cache_dir)\n"
              f"    handed = {handed}\n"
              f"    {unset}\n"
              "    first = Path(self.path).read_bytes()\n    record(self, result, cache_dir)\n"
              "    print('handed', handed, 'same', first == Path(self.path).read_bytes())\n"
              f"noop.Stamp.record = twice\ncli.main(['-C', {str(ws.root)!r}, 'build', '//...'])\n")
    p = _ordinary_no_op(ws, script)
    assert "handed True same True" in p.stdout, p.stdout + p.stderr


def _ordinary_no_op(ws, script: str) -> subprocess.CompletedProcess:
    """`script`, a build of `ws` in a process of its own, which executed nothing."""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ws.env)
    assert p.returncode == 0 and _executed(p) == 0, p.stdout + p.stderr
    return p
