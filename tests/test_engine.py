"""The engine through the real CLI: incrementality, the cache, parallel builds, failures, bad input.

What the scheduler and the caches decide (which actions a no-op, an edit or early cutoff runs, a hit
from a damaged blob, the racy stat case) is tested in-process with fakes at the seams, where hundreds
of cases take seconds: tests/test_scheduler.py and tests/test_statcache.py. What stays here needs the
CLI: processes, the real blob store and outputs on disk, locks between builds, messages and exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import Workspace
from tpbuild import cli, digest

MODEL_CLASS = "class TritonPythonModel:\n    pass\n"  # without it, a model file is refused at analysis


def two_step(ws):
    ws.write("gen/BUILD.toml", """
        [genrule.upper]
        srcs = ["names.txt"]
        outs = ["upper.txt"]
        cmd = "tr a-z A-Z < $SRCS > $OUT"

        [genrule.count]
        srcs = [":upper"]
        outs = ["count.txt"]
        cmd = "wc -l < $SRCS/upper.txt > $OUT"

        [genrule.other]
        srcs = ["other.txt"]
        outs = ["other.out"]
        cmd = "cp $SRCS $OUT"
    """)
    ws.write("gen/names.txt", "cat\ndog\n")
    ws.write("gen/other.txt", "x\n")


def test_clean_then_noop_executes_nothing(ws):
    two_step(ws)
    first = ws.build(check=True)
    assert len(first.statuses("executed")) == 3
    assert ws.out("gen/upper/upper.txt").read_text() == "CAT\nDOG\n"
    assert ws.out("gen/count/count.txt").read_text().strip() == "2"
    again = ws.build(check=True)
    assert again.statuses("executed") == []
    assert len(again.statuses("cached")) == 3
    assert all(t["status"] == "built" for t in again.report["targets"].values())
    assert again.report["targets"]["//gen:upper"]["outputs"] == ["tpbuild-out/gen/upper"]


def test_a_build_process_ends_with_its_exit_handlers_run_and_its_output_whole(ws):
    """`tpbuild build` ends its process without freeing what it built (cli._end): the exit handlers
    still remove its temp directories, everything it printed is there, and the exit code is the build's."""
    two_step(ws)
    for pipe in (True, False):  # output to a pipe, and to a file
        out = ws.root / "out.txt"
        with open(out, "w") as f:
            p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(ws.root), "build", "//..."], env=ws.env,
                               stdout=subprocess.PIPE if pipe else f, stderr=subprocess.STDOUT, text=True)
        text = p.stdout if pipe else out.read_text()
        assert p.returncode == 0 and "Built 3/3 targets" in text and text.endswith("  tpbuild-out/gen/count\n"), text
        for tmp in (ws.cache / "tmp", ws.root / "tpbuild-out/.tpbuild/tmp"):
            assert not tmp.exists() or list(tmp.iterdir()) == [], list(tmp.iterdir())
    ws.write("gen/BUILD.toml", "[genrule.bad]\nouts = []\n")
    p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(ws.root), "build", "//..."], env=ws.env,
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("error: "), p.stderr


def test_deleted_outputs_come_back_from_cache(ws):
    two_step(ws)
    ws.build(check=True)
    subprocess.run(["rm", "-rf", str(ws.root / "tpbuild-out")], check=True)
    r = ws.build(check=True)
    assert r.statuses("executed") == []
    assert ws.out("gen/upper/upper.txt").read_text() == "CAT\nDOG\n"


def test_outputs_are_read_only_links_into_the_cache(ws):
    two_step(ws)
    ws.build(check=True)
    st = ws.out("gen/upper/upper.txt").stat()
    assert st.st_mode & 0o222 == 0


def test_corrupted_blob_is_detected_and_rebuilt(ws):
    two_step(ws)
    ws.build(check=True)
    out = ws.out("gen/upper/upper.txt")
    blob = ws.cache / "cas" / digest.hex_part(digest.of_file(out))[:2] / digest.hex_part(digest.of_file(out))
    assert blob.exists()
    os.chmod(blob, 0o644)
    blob.write_text("CORRUPT\n")  # through the hardlink, the output changes too
    r = ws.build(check=True)
    assert "//gen:upper%Genrule" in r.statuses("executed")
    assert out.read_text() == "CAT\nDOG\n"
    assert digest.of_file(out) == digest.of_file(blob) if blob.exists() else True


def test_corrupted_blob_after_deleting_outputs(ws):
    two_step(ws)
    ws.build(check=True)
    out = ws.out("gen/other/other.out")
    hx = digest.hex_part(digest.of_file(out))
    subprocess.run(["rm", "-rf", str(ws.root / "tpbuild-out")], check=True)
    blob = ws.cache / "cas" / hx[:2] / hx
    os.chmod(blob, 0o644)
    with open(blob, "r+") as f:  # same size, different bytes
        f.write("y")
    r = ws.build(check=True)
    assert r.statuses("executed") == ["//gen:other%Genrule"]
    assert out.read_text() == "x\n"


def test_concurrent_builds_share_one_cache(tmp_path):
    from conftest import Workspace

    cache = tmp_path / "cache"
    spaces = []
    for i in range(2):
        root = tmp_path / f"ws{i}"
        root.mkdir()
        (root / "tpbuild.toml").write_text("")
        w = Workspace(root, cache)
        lines = []
        for n in range(30):
            lines.append(f'[genrule.g{n}]\nsrcs = ["in.txt"]\nouts = ["o{n}.txt"]\n'
                         f'cmd = "sleep 0.0$((RANDOM % 5)); cat $SRCS > $OUT; echo {n} >> $OUT"\n')
        w.write("p/BUILD.toml", "\n".join(lines))
        w.write("p/in.txt", "shared\n")
        spaces.append(w)
    procs = [subprocess.Popen([sys.executable, "-m", "tpbuild", "-C", str(w.root), "build", "//...", "-j", "4"],
                              env=w.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for w in spaces]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    for w in spaces:
        for n in range(30):
            assert w.out(f"p/g{n}/o{n}.txt").read_text() == f"shared\n{n}\n"
    # Every action-cache entry names blobs that exist and match their names.
    for entry in (cache / "ac").rglob("*"):
        if entry.is_file():
            for path, kind, d, size in json.loads(entry.read_text())["entries"]:
                hx = digest.hex_part(d)
                blob = cache / "cas" / hx[:2] / (hx + (".x" if kind == "x" else ""))
                assert digest.of_file(blob) == d
    assert not any((cache / "tmp").iterdir())
    # A third build in each workspace executes nothing.
    for w in spaces:
        assert w.build(check=True).statuses("executed") == []


def test_two_builds_in_one_workspace_take_turns(ws):
    ws.write("p/BUILD.toml", """
        [genrule.slow]
        outs = ["a.txt"]
        cmd = "sleep 1; echo a > $OUT"
    """)
    procs = [subprocess.Popen([sys.executable, "-m", "tpbuild", "-C", str(ws.root), "build", "//..."],
                              env=ws.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert ws.out("p/slow/a.txt").read_text() == "a\n"


def test_input_edited_while_action_runs_is_not_cached(ws):
    src = ws.write("p/in.txt", "before\n")
    ws.write("p/BUILD.toml", f"""
        [genrule.g]
        srcs = ["in.txt"]
        outs = ["o.txt"]
        cmd = "cat $SRCS > $OUT; sleep 0.2; echo after > {src}"
    """)
    r = ws.build(check=True)
    assert "input changed while" in r.output
    assert ws.out("p/g/o.txt").read_text() == "before\n"
    assert not any(p.is_file() for p in (ws.cache / "ac").rglob("*"))
    # The next build sees the new content and runs again.
    ws.write("p/BUILD.toml", """
        [genrule.g]
        srcs = ["in.txt"]
        outs = ["o.txt"]
        cmd = "cat $SRCS > $OUT"
    """)
    r = ws.build(check=True)
    assert ws.out("p/g/o.txt").read_text() == "after\n"


def test_failure_shows_target_command_and_output(ws):
    ws.write("p/BUILD.toml", """
        [genrule.bad]
        outs = ["x"]
        cmd = "echo something broke >&2; exit 3"

        [genrule.after]
        srcs = [":bad"]
        outs = ["y"]
        cmd = "touch $OUT"

        [genrule.fine]
        outs = ["z"]
        cmd = "echo ok > $OUT"
    """)
    r = ws.build("//...", "-k", "-j", "1")
    assert r.returncode == 1
    assert "//p:bad" in r.stderr and "exited with code 3" in r.stderr
    assert "something broke" in r.stderr and "echo something broke" in r.stderr
    assert r.report["success"] is False
    t = r.report["targets"]
    assert (t["//p:bad"]["status"], t["//p:after"]["status"], t["//p:fine"]["status"]) == \
        ("failed", "skipped", "built")


def test_targets_whose_outputs_would_nest_are_refused(ws):
    """`//a:b` places tpbuild-out/a/b, which would hold `//a/b:c`'s tpbuild-out/a/b/c (build._check_overlaps)."""
    ws.write("a/BUILD.toml", '[genrule.b]\nouts = ["x"]\ncmd = "touch $OUT"\n')
    ws.write("a/b/BUILD.toml", '[genrule.c]\nouts = ["y"]\ncmd = "touch $OUT"\n')
    r = ws.build()
    assert r.returncode != 0 and not (ws.root / "tpbuild-out/a").exists()
    assert "the outputs of //a:b and //a/b:c would nest (tpbuild-out/a/b/ holds tpbuild-out/a/b/c/): rename one " \
        "of the targets" in r.stderr


def test_missing_declared_output_fails(ws):
    ws.write("p/BUILD.toml", """
        [genrule.g]
        outs = ["a", "b"]
        cmd = "touch out/a"
    """)
    r = ws.build()
    assert r.returncode == 1
    assert "did not create its declared output 'b'" in r.stderr


def test_undeclared_files_are_not_kept(ws):
    ws.write("p/BUILD.toml", """
        [genrule.g]
        outs = ["a"]
        cmd = "touch out/a out/stray"
    """)
    ws.build(check=True)
    assert sorted(p.name for p in ws.out("p/g").iterdir()) == ["a"]


@pytest.mark.parametrize("manifest,line,needle", [
    ('[nosuchrule.x]\nouts = ["a"]\n', 1, "unknown rule 'nosuchrule'"),
    ('[genrule.x]\nouts = ["a"]\ncmd = "true"\ncolor = "red"\n', 4, "unknown attribute 'color'"),
    ('[genrule.x]\nouts = "a"\ncmd = "true"\n', 2, "attribute 'outs'"),
    ('[genrule.x]\nouts = ["a"]\ncmd = 3\n', 3, "attribute 'cmd'"),
    ('[genrule.x]\nouts = ["a"]\n', 1, "missing required attribute 'cmd'"),
    ('[genrule.x]\nouts = ["a"]\ncmd = "true"\n\n[genrule.x]\nouts = ["b"]\n', 5, "invalid TOML"),
    ('[genrule.x]\nouts = ["a"]\ncmd = "true"\n\n[triton_model.x]\nversions = ["1"]\n', 5,
     "duplicate target name 'x'"),
    ('[genrule."bad name"]\nouts = ["a"]\ncmd = "true"\n', 1, "invalid target name"),
    ('[genrule.x]\nsrcs = ["//other"]\nouts = ["a"]\ncmd = "true"\n', 2, "depends on //other:other"),
    ('[genrule.x]\nsrcs = ["//p:"]\nouts = ["a"]\ncmd = "true"\n', 2, "invalid target name"),
    ('[genrule.x]\nsrcs = ["p:x"]\nouts = ["a"]\ncmd = "true"\n', 2, "source 'p:x' not found"),
    ('[genrule.x]\nsrcs = ["missing.txt"]\nouts = ["a"]\ncmd = "true"\n', 2, "source 'missing.txt' not found"),
    ('[genrule.x]\nsrcs = ["../tpbuild.toml"]\nouts = ["a"]\ncmd = "true"\n', 2, "leaves the package"),
    ('[genrule.x]\nsrcs = ["/etc/passwd"]\nouts = ["a"]\ncmd = "true"\n', 2, "relative to the package"),
    ('[genrule.x]\nsrcs = ["link.txt"]\nouts = ["a"]\ncmd = "true"\n', 2, "symlink leading out"),
    ('[genrule.x]\nsrcs = ["outdir/hostname"]\nouts = ["a"]\ncmd = "true"\n', 2, "symlink leading out"),
    ('[genrule.x]\nsrcs = ["inner.txt/x"]\nouts = ["a"]\ncmd = "true"\n', 2, "source 'inner.txt/x' not found"),
    ('[genrule.x]\nouts = ["../a"]\ncmd = "true"\n', 2, "relative path inside"),
    ('[genrule.x]\nouts = ["a"]\ncmd = "true\n', 3, "invalid TOML"),
    ('genrule = 3\n', 1, "expected tables"),
])
def test_bad_manifest_exits_2_with_file_and_line(ws, manifest, line, needle):
    (ws.root / "p").mkdir()
    os.symlink("/etc/hostname", ws.root / "p" / "link.txt")
    os.symlink("/etc", ws.root / "p" / "outdir")  # a directory on the way out, not the file itself
    (ws.root / "p" / "inner.txt").write_text("x")
    (ws.root / "p" / "BUILD.toml").write_text(manifest)
    r = ws.build()
    assert r.returncode == 2, r.output
    assert f"p/BUILD.toml:{line}: " in r.stderr, r.stderr
    assert needle in r.stderr, r.stderr
    assert not (ws.root / "tpbuild-out" / "p").exists()


def test_cycle_names_the_whole_cycle(ws):
    ws.write("a/BUILD.toml", '[genrule.x]\nsrcs = ["//b:y"]\nouts = ["o"]\ncmd = "true"\n')
    ws.write("b/BUILD.toml", '[genrule.y]\nsrcs = ["//a:x"]\nouts = ["o"]\ncmd = "true"\n')
    r = ws.build()
    assert r.returncode == 2
    assert "//a:x -> //b:y -> //a:x" in r.stderr or "//b:y -> //a:x -> //b:y" in r.stderr


def test_bad_workspace_config(ws):
    ws.write("tpbuild.toml", '[cache]\nremote_uplod = false\n')
    ws.write("p/BUILD.toml", '[genrule.x]\nouts = ["o"]\ncmd = "true"\n')
    r = ws.build()
    assert r.returncode == 2
    assert "tpbuild.toml:2: unknown attribute 'remote_uplod'" in r.stderr


def test_not_a_workspace(tmp_path):
    p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(tmp_path), "build", "//..."],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "no tpbuild.toml" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("args,needle", [
    (["build", "foo"], "invalid pattern 'foo'"),
    (["build", "//nope/..."], "matches no package"),
    (["build", "//p:nope"], "no target //p:nope"),
    (["build", "-j", "0", "//..."], "at least 1"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_command_line_exits_2(ws, args, needle):
    ws.write("p/BUILD.toml", '[genrule.x]\nouts = ["o"]\ncmd = "true"\n')
    r = ws.run(*args)
    assert r.returncode == 2, r.output
    assert needle in r.stderr


def test_patterns_and_query(ws):
    for pkg in ("a", "a/b", "c"):
        ws.write(f"{pkg}/BUILD.toml", '[genrule.x]\nouts = ["o"]\ncmd = "true"\n\n'
                                      '[genrule.y]\nouts = ["o"]\ncmd = "true"\n')
    ws.write("skipme/BUILD.toml", '[genrule.x]\nouts = ["o"]\ncmd = "true"\n')
    ws.write(".hidden/BUILD.toml", '[genrule.x]\nouts = ["o"]\ncmd = "true"\n')
    ws.write("tpbuild.toml", '[workspace]\nignore = ["skipme"]\n')

    def q(*pats):
        return ws.run("query", *pats, check=True).stdout.split()

    assert q("//...") == ["//a:x", "//a:y", "//a/b:x", "//a/b:y", "//c:x", "//c:y"]
    assert q("//a/...") == ["//a:x", "//a:y", "//a/b:x", "//a/b:y"]
    assert q("//a:all") == ["//a:x", "//a:y"]
    assert q("//a/...", "-//a/b/...") == ["//a:x", "//a:y"]
    assert q("//...", "-//a/...", "//a/b:x") == ["//a/b:x", "//c:x", "//c:y"]
    assert q("//c:x") == ["//c:x"]
    data = json.loads(ws.run("query", "//c:x", "--output", "json", check=True).stdout)
    assert data == [{"label": "//c:x", "rule": "genrule", "deps": []}]


def test_label_shorthand_and_graph(ws):
    ws.write("lib/BUILD.toml", '[genrule.lib]\nouts = ["o"]\ncmd = "echo lib > $OUT"\n')
    ws.write("app/BUILD.toml", '[genrule.app]\nsrcs = ["//lib", ":data"]\nouts = ["o"]\n'
                               'cmd = "cat lib/lib/o app/data/o > $OUT"\n\n'
                               '[genrule.data]\nouts = ["o"]\ncmd = "echo data > $OUT"\n')
    ws.build("//app", check=True)
    assert ws.out("app/app/o").read_text() == "lib\ndata\n"
    dot = ws.run("graph", "//app:app", check=True).stdout
    assert dot.startswith("digraph")
    assert '"//app:app" -> "//lib:lib";' in dot and '"//app:app" -> "//app:data";' in dot


def test_clean_and_clean_cache(ws):
    two_step(ws)
    ws.build(check=True)
    ws.run("clean", check=True)
    assert not ws.out("gen").exists()
    assert ws.build(check=True).statuses("executed") == []
    ws.run("clean", "--cache", check=True)
    assert not ws.cache.exists()
    assert len(ws.build(check=True).statuses("executed")) == 3


def test_outputs_are_deterministic_across_workspaces(tmp_path):
    from conftest import Workspace

    trees = []
    for i in range(2):
        root = tmp_path / f"w{i}"
        root.mkdir()
        (root / "tpbuild.toml").write_text("")
        w = Workspace(root, tmp_path / f"cache{i}")
        two_step(w)
        w.build(check=True)
        trees.append({p.relative_to(root / "tpbuild-out").as_posix(): p.read_bytes()
                      for p in (root / "tpbuild-out").rglob("*") if p.is_file() and ".tpbuild" not in p.parts})
    assert trees[0] == trees[1] and trees[0]


def test_plain_progress_lines_when_not_a_tty(ws):
    two_step(ws)
    r = ws.build(check=True)
    assert "Genrule //gen:upper" in r.stderr
    assert "Built 3/3 targets, 3 actions: 3 executed, 0 from cache" in r.stdout


def _age(root, seconds=30):
    """Make every file look old enough for the analysis cache to trust its stat (see RACY_WINDOW_NS)."""
    t = time.time() - seconds
    for p in [root, *root.rglob("*")]:
        if "tpbuild-out" not in p.parts:
            os.utime(p, (t, t), follow_symlinks=False)


def test_analysis_cache_is_reused_and_invalidated(ws):
    two_step(ws)
    ws.write("lib/BUILD.toml", '[genrule.lib]\nouts = ["o"]\ncmd = "echo 1 > $OUT"\n')
    _age(ws.root)
    assert ws.build(check=True).report["analysis"] == {"targets": 4, "reanalysed": 4, "reanalysed_packages": 2,
                                                       "decoded_packages": 0}
    r = ws.build(check=True)
    assert r.report["analysis"]["reanalysed"] == 0 and r.statuses("executed") == []
    # An attribute edit re-analyses that package only, and rebuilds what it changed.
    ws.write("lib/BUILD.toml", '[genrule.lib]\nouts = ["o"]\ncmd = "echo 2 > $OUT"\n')
    r = ws.build(check=True)
    assert r.report["analysis"]["reanalysed"] == 1 and r.report["analysis"]["reanalysed_packages"] == 1
    assert ws.out("lib/lib/o").read_text() == "2\n"
    # A source file edit needs no re-analysis: its content enters keys at build time.
    _age(ws.root)
    ws.build(check=True)
    ws.write("gen/names.txt", "zebra\n")
    r = ws.build(check=True)
    assert r.report["analysis"]["reanalysed"] == 0
    assert ws.out("gen/upper/upper.txt").read_text() == "ZEBRA\n"
    # A new package under a pattern is found; a deleted source is an error again, not a stale success.
    ws.write("new/BUILD.toml", '[genrule.n]\nouts = ["o"]\ncmd = "echo n > $OUT"\n')
    assert "//new:n" in ws.build(check=True).report["targets"]
    _age(ws.root)
    ws.build(check=True)
    (ws.root / "gen/other.txt").unlink()
    r = ws.build()
    assert r.returncode == 2 and "gen/BUILD.toml:12: " in r.stderr and "other.txt" in r.stderr


def test_dependents_are_reanalysed_when_a_dependency_changes(ws):
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\n')
    ws.write("m/1/model.py", "x = 1\n" + MODEL_CLASS)
    ws.write("BUILD.toml", '[model_repository.repo]\nmodels = ["//m:m"]\n')
    _age(ws.root)
    ws.build(check=True)
    assert ws.build(check=True).report["analysis"]["reanalysed"] == 0
    ws.write("m/BUILD.toml", '[triton_model.m]\nmodel_name = "renamed"\nversions = ["1"]\n')
    r = ws.build(check=True)
    assert r.report["analysis"]["reanalysed"] == 2  # the model and the repository naming it
    assert ws.out("repo/renamed/config.pbtxt").exists() and not ws.out("repo/m").exists()


def test_an_edit_reanalyses_only_the_packages_it_touches(ws):
    """Counted through the report: a model.py body edit re-analyses nothing (the model knows the file by
    its facts, tests/test_file_facts.py), a new file in a version directory its package alone (what it
    offers the repository is unchanged), a BUILD.toml edit its package and its dependents."""
    for m in ("a", "b", "c"):
        ws.write(f"models/{m}/BUILD.toml", f'[triton_model.{m}]\nversions = ["1"]\n')
        ws.write(f"models/{m}/1/model.py", MODEL_CLASS)
    ws.write("BUILD.toml", '[model_repository.repo]\nmodels = ["//models/..."]\n')
    _age(ws.root)
    ws.build(check=True)
    assert ws.build(check=True).report["analysis"] == {"targets": 4, "reanalysed": 0, "reanalysed_packages": 0,
                                                       "decoded_packages": 0}
    ws.write("models/b/1/model.py", "x = 2\n" + MODEL_CLASS)
    r = ws.build(check=True)
    # The actions whose keys moved are decoded from the memo: b's and the repository's, nothing of a or c.
    assert r.report["analysis"] == {"targets": 4, "reanalysed": 0, "reanalysed_packages": 0, "decoded_packages": 2}
    assert r.statuses("executed") == ["//models/b:b%ModelDirectory", "//:repo%ModelRepository"]
    ws.write("models/b/1/helper.py", "y = 1\n")
    r = ws.build(check=True)
    assert r.report["analysis"] == {"targets": 4, "reanalysed": 1, "reanalysed_packages": 1, "decoded_packages": 1}
    assert r.statuses("executed") == ["//models/b:b%ModelDirectory", "//:repo%ModelRepository"]
    _age(ws.root)  # every stat moves: analysed again once, and recorded
    ws.build(check=True)
    ws.write("models/c/BUILD.toml", '[triton_model.c]\nmodel_name = "sea"\nversions = ["1"]\n')
    r = ws.build(check=True)
    assert r.report["analysis"] == {"targets": 4, "reanalysed": 2, "reanalysed_packages": 2, "decoded_packages": 0}
    assert ws.out("repo/sea/1/model.py").exists() and not ws.out("repo/c").exists()


def test_tree_outputs_update_in_place_and_drop_removed_files(ws):
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\n')
    ws.write("m/1/model.py", "x = 1\n" + MODEL_CLASS)
    ws.write("m/1/helper.py", "y = 1\n")
    ws.write("m/1/sub/data.txt", "d\n")
    ws.build(check=True)
    kept = ws.out("m/m/config.pbtxt").stat().st_ino
    ws.write("m/1/model.py", "x = 2\n" + MODEL_CLASS)
    (ws.root / "m/1/sub/data.txt").unlink()
    (ws.root / "m/1/sub").rmdir()
    ws.build(check=True)
    got = sorted(p.relative_to(ws.out("m/m")).as_posix() for p in ws.out("m/m").rglob("*"))
    assert got == ["1", "1/helper.py", "1/model.py", "config.pbtxt"]
    assert ws.out("m/m/1/model.py").read_text() == "x = 2\n" + MODEL_CLASS
    assert ws.out("m/m/config.pbtxt").stat().st_ino == kept  # untouched files are not re-placed


def test_an_edit_of_one_model_costs_one_model_in_the_repository(tmp_path):
    """The repository is a composed tree (action.Tree): an edit of one model appends that model's
    records to the build state and re-places that model's part alone, whatever the number of models
    (the same records appended at 3 and at 12 models, but for their numbers and digests), and the
    repository holds exactly the models' files after edits, a removed model and a restore."""
    appended = {}
    for n in (3, 12):
        ws = Workspace(tmp_path / f"ws{n}", tmp_path / f"cache{n}")
        ws.write("tpbuild.toml", "")
        for i in range(n):
            ws.write(f"models/m{i:02d}/BUILD.toml", f'[triton_model.m{i:02d}]\nversions = ["1"]\n')
            ws.write(f"models/m{i:02d}/1/model.py", f"x = {i}\n" + MODEL_CLASS)
        ws.write("BUILD.toml", '[model_repository.repo]\nmodels = ["//models/..."]\n')
        _age(ws.root)
        assert ws.build(check=True).report["execution"]["placed_parts"] == n
        untouched = ws.out("repo/m00/1/model.py").stat().st_ino
        state = ws.root / "tpbuild-out/.tpbuild/state"
        before = state.stat().st_size
        ws.write("models/m01/1/model.py", "x = 'edited'\n" + MODEL_CLASS)
        r = ws.build(check=True)
        # Its shape: digests as one letter and numbers as one digit (an inode's number has more digits
        # in one workspace than in the other when the file system's counter crossed a power of ten).
        appended[n] = re.sub(rb"[0-9]+", b"0", re.sub(rb"[0-9a-f]{16,}", b"H", state.read_bytes()[before:]))
        assert r.statuses("executed") == ["//models/m01:m01%ModelDirectory", "//:repo%ModelRepository"]
        assert {k: r.report["execution"][k] for k in ("placed", "placed_parts")} == {"placed": 2, "placed_parts": 1}
        assert ws.out("repo/m01/1/model.py").read_text() == "x = 'edited'\n" + MODEL_CLASS
        assert ws.out("repo/m00/1/model.py").stat().st_ino == untouched  # not re-placed
        _same_files(ws.out("repo/m01"), ws.out("models/m01/m01"))
    assert appended[12] == appended[3] and len(appended[3]) > 100, appended  # the same records, whatever n
    shutil.rmtree(ws.root / "models/m05")
    ws.build(check=True)
    assert sorted(p.name for p in ws.out("repo").iterdir()) == [f"m{i:02d}" for i in range(12) if i != 5]
    shutil.rmtree(ws.root / "tpbuild-out")
    r = ws.build(check=True)
    assert r.statuses("executed") == [] and r.report["execution"]["placed_parts"] == 11
    for i in (0, 1, 11):
        _same_files(ws.out(f"repo/m{i:02d}"), ws.out(f"models/m{i:02d}/m{i:02d}"))


def _same_files(a, b):
    def files(d):
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}
    assert files(a) == files(b) and files(a)


def test_genrule_timeout_and_exec_properties(ws):
    ws.write("t/BUILD.toml", """
        [genrule.slow]
        outs = ["o"]
        cmd = "sleep 30; echo late > $OUT"
        timeout = 0.5

        [genrule.plain]
        outs = ["o"]
        cmd = "echo hi > $OUT"
    """)
    r = ws.build("//t:slow", "--report", str(ws.root / "r.json"))
    assert r.returncode == 1 and "Genrule timed out" in r.stderr
    first = ws.build("//t:plain", check=True)
    key = first.report["actions"][0]["key"]
    assert first.report["actions"][0]["executor"] == "local"  # executed here, and the report says so
    ws.write("t/BUILD.toml", (ws.root / "t/BUILD.toml").read_text().replace(
        'cmd = "echo hi > $OUT"', 'cmd = "echo hi > $OUT"\nexec_properties = { OSFamily = "linux" }'))
    second = ws.build("//t:plain", check=True)
    assert second.report["actions"][0]["key"] != key and second.statuses("executed") == ["//t:plain%Genrule"]
    ws.write("t/BUILD.toml", '[genrule.bad]\nouts = ["o"]\ncmd = "true"\ntimeout = -1\n')
    r = ws.build("//t:bad")
    assert r.returncode == 2 and "BUILD.toml:4" in r.stderr and "timeout" in r.stderr


def test_ctrl_c_reaches_a_running_command_and_its_children(ws, tmp_path):
    """Commands run in process groups of their own (so a timeout kills their children too), out of the
    terminal's reach: tpbuild passes the Ctrl-C on, and what the command started dies with it."""
    from test_executor import state

    pid_file = tmp_path / "child.pid"
    ws.write("p/BUILD.toml", f'[genrule.g]\nouts = ["o"]\ncmd = "sleep 300 & echo $! > {pid_file}; wait"\n')
    # SIGINT as a terminal's foreground job has it: a test run started in the background by a shell
    # without job control inherits it ignored, and tpbuild then rightly leaves it ignored.
    p = subprocess.Popen([sys.executable, "-m", "tpbuild", "-C", str(ws.root), "build", "//..."], env=ws.env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGINT)  # what the terminal does: the foreground group, tpbuild's
    out = p.communicate(timeout=60)[0]
    assert p.returncode == 130 and "interrupted" in out, out
    child = int(pid_file.read_text())
    while state(child) not in ("gone", "Z") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert state(child) in ("gone", "Z")


@pytest.mark.skipif(not cli._glibc(), reason="glibc's allocator only")
@pytest.mark.parametrize("large", [True, False])
def test_a_large_build_has_the_allocator_keep_what_it_frees(tmp_path, large):
    """`cli._keep_freed_memory`, counted in page faults (not timed): with it, 40 MB freed and asked for again
    are the same pages (glibc maps a block that large anew each time by default, a fault a page); a build
    whose analysis memo is small leaves the allocator as it was."""
    memo = tmp_path / "memo"
    memo.mkdir()
    with open(memo / "analysis", "wb") as f:
        f.truncate(6_000_000 if large else 1_000)
    code = ("import resource, sys\nfrom pathlib import Path\nfrom tpbuild import cli\n"
            f"cli._keep_freed_memory(Path({str(memo)!r}))\n"
            "faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "b = b'x' * (40 << 20)\ndel b\nbefore = faults()\nb = b'x' * (40 << 20)\nprint(faults() - before)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    pages = (40 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert (int(p.stdout) < pages // 10) if large else (int(p.stdout) > pages // 2), p.stdout
