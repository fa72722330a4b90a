"""A seeded random sequence of edits, each followed by a plain `tpbuild build //...` (the no-op stamp's
check, its stats handed over, and the stamp every successful build leaves, `tpbuild/noop.py`; after an
edit of sources only, a delta build, `tpbuild/incremental.py`), whose tpbuild-out and summary must equal
those of a clean build of the same sources in a fresh cache, and then a build with `--report`, whose
report must say what the clean build's says (statuses aside)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_noop import _repository_and_labels, _settle

MODELS = ("m0", "m1", "m2", "m3")
SUMMARY = re.compile(r"^(Built|FAILED:) (\d+)/(\d+) targets, (\d+) actions", re.M)
MANIFEST = """
[triton_model.{name}]
versions = ["1"]
files = ["//shared:labels"]
[triton_model.{name}.config]
input = [{{ name = "X", data_type = "TYPE_FP32", dims = [{dims}] }}]
output = [{{ name = "Y", data_type = "TYPE_FP32", dims = [1] }}]
"""


def _model_py(text: str) -> str:
    return f"class TritonPythonModel:\n    pass\n# {text}\n"


def _workspace(ws, models=MODELS):
    _repository_and_labels(ws)
    for name in models:
        ws.write(f"models/{name}/1/model.py", _model_py("v0"))
        ws.write(f"models/{name}/BUILD.toml", MANIFEST.format(name=name, dims=1))


def _build(root: Path, env: dict, report: Path | None = None) -> tuple[int, tuple | None]:
    p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(root), "build", "//...",
                        *(("--report", str(report)) if report else ())], capture_output=True, text=True, env=env)
    assert "Traceback" not in p.stderr, p.stderr
    m = SUMMARY.search(p.stdout)
    return p.returncode, (m.groups() if m else None)


def _reported(path: Path) -> tuple:
    """What a report says of the result, statuses of actions aside (executed or cached: how it was
    got): success, each target's status and outputs, each action's target, mnemonic and key."""
    r = json.loads(path.read_text())
    return r["success"], r["targets"], [(a["target"], a["mnemonic"], a["key"]) for a in r["actions"]]


def _stamp_files(root: Path) -> tuple:
    """The stat of the stamp and of its patch: a delta build patches the stamp, the ordinary path writes it.
    Without the access time: every build reads the stamp, and a read may move it (relatime)."""
    return tuple((lambda st: (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))(os.stat(p)) if p.exists()
                 else None for p in (root / "tpbuild-out/.tpbuild/noop", root / "tpbuild-out/.tpbuild/noop-patch"))


def _tree(root: Path) -> dict:
    """tpbuild-out as a user sees it: each file's bytes and executable bit, each directory, each link."""
    out = root / "tpbuild-out"
    tree = {}
    for dirpath, dirs, files in os.walk(out):
        rel = os.path.relpath(dirpath, out)
        if rel == ".tpbuild" or rel.startswith(".tpbuild/"):
            continue
        for d in dirs:
            if not (rel == "." and d == ".tpbuild"):
                tree[os.path.normpath(f"{rel}/{d}")] = "dir"
        for f in files:
            p = Path(dirpath, f)
            tree[os.path.normpath(f"{rel}/{f}")] = (os.readlink(p) if p.is_symlink()
                                                    else (p.read_bytes(), os.access(p, os.X_OK)))
    return tree


def _clean(ws, where: Path) -> tuple[int, tuple | None, dict, tuple]:
    """A clean build of the workspace's sources as they are now, in a fresh cache, and its report."""
    root = where / "ws"
    shutil.copytree(ws.root, root, symlinks=True, ignore=shutil.ignore_patterns("tpbuild-out"))
    code, summary = _build(root, {**ws.env, "TPBUILD_CACHE_DIR": str(where / "cache")}, where / "report.json")
    return code, summary, _tree(root), _reported(where / "report.json")


class Edits:
    """The kinds of edit; each returns a short description for the failure message."""

    def __init__(self, ws, rng: random.Random):
        self.ws, self.rng = ws, rng
        self.counter = 0

    def _model(self) -> str:
        return self.rng.choice(MODELS)

    def model_py(self):
        name = self._model()
        self.counter += 1
        self.ws.write(f"models/{name}/1/model.py", _model_py(f"edit {self.counter}"))
        return f"model.py of {name} edited"

    def model_py_back(self, name: str | None = None):
        name = name or self._model()
        self.ws.write(f"models/{name}/1/model.py", _model_py("v0"))
        return f"model.py of {name} back to its first content"

    def same_size_within_the_racy_window(self):
        """Built with one content, then rewritten in place to another of the same size and the same
        mtime (one a minute ahead: within the racy window of every build until then): a model.py
        (which analysis knows by its facts) or the genrule's input (which only its action reads)."""
        name = self._model()
        rel, a, b = self.rng.choice([(f"models/{name}/1/model.py", _model_py("racy-a"), _model_py("racy-b")),
                                     ("shared/classes.txt", "a\nb\nc\n", f"a\nb\n{self.rng.choice('def')}\n")])
        p = self.ws.root / rel
        future = time.time_ns() + 60 * 10**9
        p.write_text(a)
        os.utime(p, ns=(future, future))
        _build(self.ws.root, self.ws.env)
        with open(p, "r+") as f:
            f.write(b)
        os.utime(p, ns=(future, future))
        return f"{rel} rewritten, same size and mtime"

    def shared_input(self):
        lines = ["a", "b", "c", "d"][: self.rng.randint(1, 4)]
        self.rng.shuffle(lines)
        (self.ws.root / "shared/classes.txt").write_text("\n".join(lines) + "\n")
        return f"shared/classes.txt = {lines}"

    def manifest(self):
        name, dims = self._model(), self.rng.randint(1, 3)
        self.ws.write(f"models/{name}/BUILD.toml", MANIFEST.format(name=name, dims=dims))
        return f"BUILD.toml of {name}: dims {dims}"

    def deleted_source(self):
        name = self._model()
        os.unlink(self.ws.root / f"models/{name}/1/model.py")
        self.deleted = name
        return f"model.py of {name} deleted"

    def placed_output_deleted(self):
        files = [p for p in (self.ws.root / "tpbuild-out").rglob("*")
                 if p.is_file() and ".tpbuild" not in p.parts]
        if not files:
            return "no output to delete"
        victim = self.rng.choice(sorted(files))
        os.chmod(victim.parent, 0o755)
        victim.unlink()
        return f"{victim} deleted"

    def placed_output_edited(self):
        files = [p for p in (self.ws.root / "tpbuild-out").rglob("*")
                 if p.is_file() and not p.is_symlink() and ".tpbuild" not in p.parts]
        if not files:
            return "no output to edit"
        victim = self.rng.choice(sorted(files))
        os.chmod(victim, 0o644)
        victim.write_text("edited in tpbuild-out\n")  # through a hardlink: the blob too
        return f"{victim} edited"

    def blob_evicted(self):
        blobs = sorted(p for p in (self.ws.cache / "cas").rglob("*") if p.is_file())
        victim = self.rng.choice(blobs)
        victim.unlink()
        return f"blob {victim.name} evicted"

    def file_added(self):
        name = self._model()
        self.counter += 1
        self.ws.write(f"models/{name}/1/extra_{self.counter}.py", "X = 1\n")
        return f"a file added to {name}'s version directory"

    def settled(self):
        _settle(self.ws.root, self.ws.cache)
        return "every file aged (the stamp can answer the next build)"

    def nothing(self):
        return "nothing"


KINDS = ("model_py", "model_py_back", "same_size_within_the_racy_window", "same_size_within_the_racy_window",
         "shared_input", "manifest", "deleted_source", "placed_output_deleted", "placed_output_edited", "blob_evicted", "file_added",
         "settled", "nothing")


@pytest.mark.parametrize("seed", [1, 2])
def test_every_build_in_an_edit_sequence_equals_a_clean_one(ws, tmp_path, seed):
    _workspace(ws)
    assert _build(ws.root, ws.env)[0] == 0
    rng = random.Random(seed)
    edits = Edits(ws, rng)
    done = []
    kinds = [*KINDS, *rng.choices(KINDS, k=6)]
    rng.shuffle(kinds)  # every kind at least once
    paths = []  # of the builds with --report
    deltas = 0  # plain builds that took the delta path
    for step, kind in enumerate(kinds):
        done.append(getattr(edits, kind)())
        before = _stamp_files(ws.root)
        code, summary = _build(ws.root, ws.env)  # plain: the stamp is checked and left
        after = _stamp_files(ws.root)
        deltas += before[0] is not None and after[0] == before[0] and after[1] != before[1]
        clean_code, clean_summary, clean_tree, clean_report = _clean(ws, tmp_path / f"clean-{step}")
        assert (code, summary) == (clean_code, clean_summary), done
        if code == 0:
            assert _tree(ws.root) == clean_tree, done
        # With --report (the stamp's stats handed over, the stamp left as it is): the same result.
        assert _build(ws.root, ws.env, tmp_path / "report.json")[0] == code, done
        assert _reported(tmp_path / "report.json") == clean_report, done
        paths.append(json.loads((tmp_path / "report.json").read_text()).get("execution", {}).get("path"))
        if kind == "deleted_source":  # put back, for the sequence to go on from a buildable workspace
            done.append(edits.model_py_back(edits.deleted))
            assert _build(ws.root, ws.env)[0] == 0, done
    assert deltas > 0 and {"delta", "ordinary"} <= set(paths), (deltas, paths)
