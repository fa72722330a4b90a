"""Cache trust through the real CLI: the cache directory is tpbuild's alone, the blob store cannot be
poisoned unseen, `cache verify` finds damage, memos execute nothing, dead builds' leftovers are
swept without touching a live build's, and outputs of removed targets go (cleandead)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Workspace


def _labels_ws(w: Workspace, poison: bool) -> None:
    w.write("labeler/classes.txt", "cat\ndog\n")
    w.write("labeler/BUILD.toml", """
        [genrule.labels]
        srcs = ["classes.txt"]
        outs = ["labels.txt"]
        cmd = "sort $SRCS > $OUT"
    """)
    if poison:
        # Appends to its label input in the scratch directory: as root the read-only mode does not stop
        # it, and as anyone the chmod does.
        w.write("poison/BUILD.toml", """
            [genrule.poison]
            srcs = ["//labeler:labels"]
            outs = ["o.txt"]
            cmd = "f=labeler/labels/labels.txt; chmod u+w $f; echo POISON >> $f; cp $f $OUT"
        """)


def _workspace(tmp_path: Path, name: str, cache: Path) -> Workspace:
    root = tmp_path / name
    root.mkdir()
    (root / "tpbuild.toml").write_text("")
    return Workspace(root, cache)


def test_a_command_writing_to_its_input_does_not_write_into_the_store(tmp_path):
    cache = tmp_path / "cache"
    a, b = _workspace(tmp_path, "a", cache), _workspace(tmp_path, "b", cache)
    _labels_ws(a, poison=True)
    _labels_ws(b, poison=False)
    a.build(check=True)
    assert a.out("poison/poison/o.txt").read_text() == "cat\ndog\nPOISON\n"
    assert a.out("labeler/labels/labels.txt").read_text() == "cat\ndog\n"
    r = b.build(check=True)
    assert r.statuses("executed") == []  # served from the shared cache ...
    assert b.out("labeler/labels/labels.txt").read_text() == "cat\ndog\n"  # ... unpoisoned
    assert a.run("cache", "verify").returncode == 0


def test_an_output_edited_through_its_hardlink_is_quarantined_named_and_rebuilt(ws):
    _labels_ws(ws, poison=False)
    ws.build(check=True)
    out = ws.out("labeler/labels/labels.txt")
    os.chmod(out, 0o644)
    with open(out, "a") as f:  # writes through the hardlink, into the blob
        f.write("edited\n")
    r = ws.build(check=True)
    assert r.statuses("executed") == ["//labeler:labels%Genrule"]
    assert out.read_text() == "cat\ndog\n"
    warning = next(w for w in r.report["warnings"] if "no longer matched" in w)
    assert "tpbuild-out/labeler/labels/labels.txt" in warning
    quarantined = list((ws.cache / "quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].read_text() == "cat\ndog\nedited\n"
    assert str(quarantined[0]) in warning


def test_cache_verify_finds_a_flipped_byte_a_truncated_blob_and_a_damaged_entry(ws):
    ws.write("g/BUILD.toml", """
        [genrule.a]
        outs = ["a.txt"]
        cmd = "echo first-output > $OUT"
        [genrule.b]
        outs = ["b.txt"]
        cmd = "echo second-output > $OUT"
        [genrule.c]
        outs = ["c.txt"]
        cmd = "echo third-output > $OUT"
    """)
    ws.build(check=True)
    assert ws.run("cache", "verify").returncode == 0
    blobs = {p.read_text(): p for p in (ws.cache / "cas").rglob("*") if p.is_file()}
    flipped, truncated = blobs["first-output\n"], blobs["second-output\n"]
    for p in (flipped, truncated):
        os.chmod(p, 0o644)
    data = bytearray(flipped.read_bytes())
    data[0] ^= 1
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:5])
    entries = sorted(p for p in (ws.cache / "ac").rglob("*") if p.is_file())
    c_entry = next(p for p in entries if blobs["third-output\n"].name in p.read_text())
    c_entry.write_text('{"v": 1, "entr')

    r = ws.run("cache", "verify")
    assert r.returncode == 1
    assert f"bad blob {flipped}" in r.stdout and f"bad blob {truncated}" in r.stdout
    assert f"damaged action cache entry {c_entry}: does not parse" in r.stdout
    # The entries naming the bad blobs are damaged too: 5 problems in all.
    assert "5 problem(s)" in r.stdout

    r = ws.run("cache", "verify", "--repair")
    assert r.returncode == 0 and "repaired" in r.stdout
    assert len(list((ws.cache / "quarantine").iterdir())) == 2
    assert ws.run("cache", "verify").returncode == 0
    subprocess.run(["rm", "-rf", str(ws.root / "tpbuild-out")], check=True)
    r = ws.build(check=True)
    # Every entry went (the state with them): each runs again, and the results are right.
    assert sorted(r.statuses("executed")) == ["//g:a%Genrule", "//g:b%Genrule", "//g:c%Genrule"]
    assert ws.out("g/a/a.txt").read_text() == "first-output\n"
    assert ws.out("g/b/b.txt").read_text() == "second-output\n"


# -- the cache directory is tpbuild's alone ---------------------------------------------------------

def _user_files(base: Path) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def test_a_users_cache_directory_is_never_adopted_or_cleaned(ws, tmp_path):
    home = tmp_path / "home"
    (home / ".cache/huggingface/hub").mkdir(parents=True)
    (home / ".cache/huggingface/hub/model.bin").write_bytes(b"weights")
    (home / "Documents").mkdir()
    (home / "Documents/thesis.tex").write_text("chapter 1")
    ws.write("g/BUILD.toml", '[genrule.g]\nouts = ["o"]\ncmd = "echo x > $OUT"\n')
    before = _user_files(home)
    env = {"HOME": str(home), "TPBUILD_CACHE_DIR": str(home / ".cache")}
    for args in (("build", "//..."), ("clean", "--cache"), ("query", "//...")):
        r = ws.run(*args, env=env)
        assert r.returncode == 2 and f"{home / '.cache'} is not" in r.stderr, r.output
    # --cache-dir at the home directory itself; and at a home-like directory that is not $HOME.
    env = {"HOME": str(home)}
    r = ws.run("clean", "--cache", "--cache-dir", str(home), env=env)
    assert r.returncode == 2 and "is your home directory" in r.stderr
    r = ws.run("build", "//...", "--cache-dir", str(home), env=env)
    assert r.returncode == 2 and "is your home directory" in r.stderr
    ws.run("build", "//...", check=True)  # with its own cache
    r = ws.run("clean", "--cache", "--cache-dir", str(home), env={"HOME": str(tmp_path)})
    assert r.returncode == 2 and f"{home} is not a tpbuild cache" in r.stderr
    assert _user_files(home) == before
    assert ws.out("g/g/o").exists()  # refused before anything was removed


def test_a_cache_directory_at_or_above_the_workspace_is_refused(ws):
    ws.write("g/BUILD.toml", '[genrule.g]\nouts = ["o"]\ncmd = "echo x > $OUT"\n')
    sources = _user_files(ws.root)
    env = {"TPBUILD_CACHE_DIR": ""}
    for cache in ('"."', '".."'):
        ws.write("tpbuild.toml", f"[cache]\ndir = {cache}\n")
        for args in (("build", "//..."), ("clean", "--cache")):
            r = ws.run(*args, env=env)
            assert r.returncode == 2 and "tpbuild.toml:2: [cache] dir" in r.stderr and "holds it" in r.stderr, r.output
    r = ws.run("clean", "--cache", "--cache-dir", str(ws.root.parent))
    assert r.returncode == 2 and "holds it" in r.stderr
    assert {k: v for k, v in _user_files(ws.root).items() if k != "tpbuild.toml"} == \
           {k: v for k, v in sources.items() if k != "tpbuild.toml"}


def test_clean_cache_removes_only_what_tpbuild_put_there(ws, tmp_path):
    ws.write("g/BUILD.toml", '[genrule.g]\nouts = ["o"]\ncmd = "echo x > $OUT"\n')
    # A directory tpbuild made: everything goes, but a file the user put in it afterwards stays.
    ws.build(check=True)
    assert (ws.cache / ".tpbuild-cache").is_file()
    (ws.cache / "mine.txt").write_text("keep me")
    ws.run("clean", "--cache", check=True)
    assert sorted(p.name for p in ws.cache.iterdir()) == [".tpbuild-cache", "mine.txt"]
    # An empty directory the user made is adopted; clean --cache empties it and leaves it.
    adopted = tmp_path / "adopted"
    adopted.mkdir()
    ws.run("build", "//...", "--cache-dir", str(adopted), check=True)
    assert (adopted / "cas").is_dir()
    ws.run("clean", "--cache", "--cache-dir", str(adopted), check=True)
    assert adopted.is_dir() and [p.name for p in adopted.iterdir()] == [".tpbuild-cache"]


# -- memos --------------------------------------------------------------------------------------------

class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_memos_are_not_executable(ws, tmp_path):
    ws.write("g/BUILD.toml", '[genrule.g]\nsrcs = ["in.txt"]\nouts = ["o"]\ncmd = "cp $SRCS $OUT"\n')
    src = ws.write("g/in.txt", "x\n")
    os.utime(src, (1e9, 1e9))  # settled: its digest is remembered by stat
    ws.build(check=True)
    marker = tmp_path / "pwned"
    _Payload.marker = marker
    evil = pickle.dumps({"x": _Payload()})
    memos = [p for p in ws.cache.glob("workspaces/*/*") if p.is_file()]
    memos += [ws.root / "tpbuild-out/.tpbuild/state"]
    assert {p.name for p in memos} >= {"statcache", "analysis", "state"}
    for p in memos:
        assert p.read_bytes().startswith(b"tpbuild-memo ")
        # The old header with a pickle, and the new header with one: both are just a miss.
        header = b"tpbuild-statcache v1" if p.name == "statcache" else p.read_bytes().split(b"\n")[0]
        p.write_bytes(header + b"\n" + evil)
    r = ws.build(check=True)
    assert not marker.exists()
    assert r.statuses("executed") == [] and ws.out("g/g/o").read_text() == "x\n"


def test_a_state_that_cannot_be_saved_is_a_warning_and_the_next_build_recovers(ws):
    """An injected OSError: the state file's place is taken by a directory, so the rename fails (as
    root too, unlike a read-only mode)."""
    ws.write("g/BUILD.toml", '[genrule.g]\nouts = ["o"]\ncmd = "echo x > $OUT"\n')
    state = ws.root / "tpbuild-out/.tpbuild/state"
    state.mkdir(parents=True)
    (state / "x").write_text("")
    memo = ws.cache / "workspaces"
    r = ws.build()
    assert r.returncode == 0, r.output
    assert any("could not save the build state" in w for w in r.report["warnings"]), r.report["warnings"]
    assert "could not save the build state" in r.stderr
    assert ws.out("g/g/o").read_text() == "x\n"
    leftovers = [p for p in (ws.root / "tpbuild-out/.tpbuild/tmp").rglob("*") if p.is_file()]
    assert leftovers == [] and memo.is_dir()
    subprocess.run(["rm", "-rf", str(state)], check=True)
    r = ws.build(check=True)
    assert r.report["warnings"] == [] and r.statuses("executed") == []
    assert state.is_file()


# -- dead builds and dead targets ------------------------------------------------------------------

_HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tpbuild import atomic
    d = atomic.process_dir(Path(sys.argv[1]))
    (d / "work").write_text("live")
    print(d, flush=True)
    time.sleep(60)
""")


def test_leftovers_of_dead_builds_are_swept_and_a_live_builds_are_not(ws):
    ws.write("g/BUILD.toml", '[genrule.g]\nouts = ["o"]\ncmd = "echo x > $OUT"\n')
    ws.build(check=True)
    tmp = ws.cache / "tmp"
    live = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp)], stdout=subprocess.PIPE, text=True)
    try:
        live_dir = Path(live.stdout.readline().strip())
        dead = subprocess.run([sys.executable, "-c", _HOLD.replace("time.sleep(60)", "import os; os._exit(0)"),
                               str(tmp)], capture_output=True, text=True, check=True)
        dead_dir = Path(dead.stdout.strip())
        assert dead_dir.is_dir()  # os._exit: like a kill, no clean-up ran
        ws.write("g/BUILD.toml", '[genrule.g]\nouts = ["o"]\ncmd = "echo y > $OUT"\n')
        ws.build(check=True)
        assert not dead_dir.exists()
        assert (live_dir / "work").read_text() == "live"
    finally:
        live.kill()
        live.wait()


_LEAVE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from tpbuild import atomic
    parent = Path(sys.argv[1])
    if sys.argv[2] == "tidy":  # every temp file renamed into place, as a build that succeeded leaves it
        for hint in ("memo", "state"):
            name = atomic.temp_name(parent, hint)
            Path(name).write_text("x")
            os.replace(name, parent.parent / hint)
    else:  # a tree left half-made, read-only, as a failed action's outputs can be
        d = atomic.process_dir(parent)
        (d / "tree" / "sub").mkdir(parents=True)
        (d / "tree" / "sub" / "f").write_text("x")
        os.chmod(d / "tree" / "sub", 0o555)
    atomic._leave()  # what exiting runs
    print("shutil" in sys.modules)
""")


@pytest.mark.parametrize("left,shutil_imported", [("tidy", False), ("messy", True)])
def test_an_exiting_process_removes_its_temp_directories(tmp_path, left, shutil_imported):
    """Whatever they hold; holding only the empty subdirectories of renamed temp files, without shutil."""
    parent = tmp_path / "tmp"
    p = subprocess.run([sys.executable, "-c", _LEAVE, str(parent), left], capture_output=True, text=True,
                       check=True)
    assert p.stdout.split() == [str(shutil_imported)]
    assert list(parent.iterdir()) == []


def test_a_half_made_temp_directory_is_swept_and_its_maker_starts_over(tmp_path, monkeypatch):
    """Killed between making its temp directory and locking it, a build leaves an unlocked `.new.`
    directory: dead, swept at once. A sweep can also take one whose maker is alive and between the
    two steps (forced here, in-process, at that step); the maker then makes another."""
    from tpbuild import atomic
    (tmp_path / ".new.123.deadbeef").mkdir()  # what a kill between mkdir and flock leaves
    assert atomic.sweep(tmp_path) == 1 and list(tmp_path.iterdir()) == []
    swept = []

    def sweep_now(name):
        if name == "process-dir" and not swept:
            swept.append([p.name for p in tmp_path.iterdir()])
            assert atomic.sweep(tmp_path) == 1
    monkeypatch.setattr(atomic, "crash_point", sweep_now)
    d = atomic.process_dir(tmp_path)
    assert swept[0][0].startswith(".new.") and [p.name for p in tmp_path.iterdir()] == [d.name]
    assert atomic.sweep(tmp_path) == 0 and d.is_dir()  # locked: its maker is alive


def test_outputs_of_removed_targets_go_when_everything_is_built(ws):
    ws.write("a/BUILD.toml", '[genrule.a]\nouts = ["o"]\ncmd = "echo a > $OUT"\n'
                             '[genrule.gone]\nouts = ["o"]\ncmd = "echo g > $OUT"\n')
    ws.write("b/BUILD.toml", '[genrule.b]\nouts = ["o"]\ncmd = "echo b > $OUT"\n')
    ws.build(check=True)
    (ws.root / "tpbuild-out/notes.txt").write_text("the user's")
    ws.write("a/BUILD.toml", '[genrule.a]\nouts = ["o"]\ncmd = "echo a > $OUT"\n')
    (ws.root / "b/BUILD.toml").unlink()
    ws.build("//a:a", check=True)  # not everything: nothing is pruned
    assert ws.out("a/gone/o").exists() and ws.out("b/b/o").exists()
    ws.build(check=True)
    assert not ws.out("a/gone").exists() and not ws.out("b").exists()
    assert ws.out("a/a/o").read_text() == "a\n"
    assert (ws.root / "tpbuild-out/notes.txt").read_text() == "the user's"


def test_an_unwritable_report_is_refused_before_building(ws, tmp_path):
    ws.write("g/BUILD.toml", '[genrule.g]\nouts = ["o"]\ncmd = "touch ../ran; echo x > $OUT"\n')
    missing = tmp_path / "no/such/dir/report.json"
    r = ws.run("build", "//...", "--report", str(missing), report=False)
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert not (tmp_path / "no").exists() and not ws.out("g").exists()
    r = ws.run("build", "//...", "--report", str(tmp_path), report=False)
    assert r.returncode == 2 and "is a directory" in r.stderr and not ws.out("g").exists()



@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root); "
                    "test_a_state_that_cannot_be_saved_... injects the OSError instead")
def test_a_full_disk_is_a_clear_message_and_the_next_build_recovers(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (a container without CAP_SYS_ADMIN)")
    try:
        root = disk / "ws"
        root.mkdir()
        (root / "tpbuild.toml").write_text("")
        w = Workspace(root, tmp_path / "cache")  # the workspace (outputs, state) on the small disk
        w.write("g/in.txt", "one\n")
        w.write("g/BUILD.toml", '[genrule.g]\nsrcs = ["in.txt"]\nouts = ["o.txt"]\ncmd = "cat $SRCS $SRCS > $OUT"\n')
        w.run("build", "//...", report=False, check=True)
        w.write("g/in.txt", "two\n")
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        r = w.run("build", "//...", report=False)
        assert r.returncode == 1, r.output
        assert "No space left on device" in r.stderr and "could not place its output" in r.stderr, r.output
        # The state's few changed records are appended (memo.Journal), which may still fit in the
        # file's last page; test_a_state_that_cannot_be_saved_... covers the warning when it does not.
        state_tmp = root / "tpbuild-out/.tpbuild/tmp"
        assert [p for p in state_tmp.rglob("*") if not p.is_dir()] == []
        filler.unlink()
        r = w.run("build", "//...", report=False, check=True)
        assert w.out("g/g/o.txt").read_text() == "two\ntwo\n"
        assert [p for p in state_tmp.rglob("*")] == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_concurrent_builds_in_one_workspace_and_in_clones_sharing_a_cache(tmp_path):
    """Four builds at once in one workspace, and one in each of three clones sharing its cache: all
    succeed, every output is right, no temp is left, and the shared cache verifies."""
    cache = tmp_path / "cache"
    clones = []
    for i in range(4):
        w = _workspace(tmp_path, f"clone{i}", cache)
        w.write("p/in.txt", "shared\n")
        w.write("p/BUILD.toml", "\n".join(
            f'[genrule.g{n}]\nsrcs = ["in.txt"]\nouts = ["d/o{n}.txt"]\n'
            f'cmd = "sleep 0.0$((RANDOM % 5)); mkdir -p out/d; (cat $SRCS; echo {n}) > out/d/o{n}.txt"\n'
            for n in range(12)))
        clones.append(w)
    runs = [clones[0]] * 4 + clones[1:]
    procs = [subprocess.Popen([sys.executable, "-m", "tpbuild", "-C", str(w.root), "build", "//...", "-j", "3"],
                              env=w.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for w in runs]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), outs
    assert not any("Traceback" in o for o in outs)
    for w in clones:
        for n in range(12):
            assert w.out(f"p/g{n}/d/o{n}.txt").read_text() == f"shared\n{n}\n"
        assert [p for p in (w.root / "tpbuild-out/.tpbuild/tmp").rglob("*")] == []
    assert list((cache / "tmp").iterdir()) == []
    assert clones[0].run("cache", "verify").returncode == 0
