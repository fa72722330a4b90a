"""The no-op stamp (tpbuild/noop.py): a settled no-op build is answered from stats without loading a
rule, and no change the ordinary path would act on is ever hidden by it."""

from __future__ import annotations

import os
import re
import subprocess
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
    """A plain `tpbuild build //...` (no --report: that always takes the ordinary path); whether the
    stamp answered it, told by the rule set never being imported."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "tpbuild", "-C", str(ws.root), "build", "//..."],
                       capture_output=True, text=True, env=ws.env)
    errors = "".join(line for line in p.stderr.splitlines(True) if not line.startswith("import time:"))
    assert p.returncode == 0 and "Traceback" not in errors, p.stdout + errors
    return p, "tpbuild_triton" not in p.stderr


def _executed(p: subprocess.CompletedProcess) -> int:
    return int(SUMMARY.search(p.stdout).group(4))


@pytest.fixture
def stamped(ws):
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


def _delete_blob(ws):
    victim = next(p for p in (ws.cache / "cas").rglob("*") if p.is_file() and p.read_bytes() == b"a\nb\n")
    victim.unlink()
    return lambda: (ws.out("shared/labels/labels.txt").read_text() == "a\nb\n", None)


def _salt(ws):
    (ws.root / "tpbuild.toml").write_text('[cache]\nsalt = "2"\n')
    return lambda: (True, None)


@pytest.mark.parametrize("change", [_edit_source, _chmod_source, _edit_manifest, _new_package, _delete_output,
                                    _delete_blob, _salt])
def test_no_change_hides_behind_the_stamp(stamped, change):
    check = change(stamped)
    p, answered = _build(stamped)
    assert not answered
    ok, executed = check()
    assert ok, p.stdout
    if executed is not None:
        assert _executed(p) == executed, p.stdout
    else:
        assert _executed(p) > 0, p.stdout
