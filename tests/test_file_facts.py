"""File facts (tpbuild/facts.py): an edit of a model.py that keeps what the Triton rule derives from it
(grammar, the model class, its imports) re-analyses no package, loads no schema, and still ships the
new bytes; any other edit re-analyses the model and gives the ordinary result or error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tpbuild import facts
from tpbuild.analysiscache import AnalysisCache, TargetRecord
from tpbuild.layout import sig

from test_noop import _settle
from test_validation import MODEL_PY, _env_tarball

ENV_MODEL = "import numpy\n\n\n" + MODEL_PY


@pytest.fixture
def recorded(ws):
    """Two models, one with an env (its imports are checked, so they are among its facts); built and
    settled, so the analysis memo holds every package."""
    ws.write("plain/BUILD.toml", '[triton_model.plain]\nversions = ["1"]\n')
    ws.write("plain/1/model.py", MODEL_PY)
    (ws.root / "withenv").mkdir()
    (ws.root / "withenv/env.tar.gz").write_bytes(
        _env_tarball("bin/activate", "lib/python3.11/site-packages/numpy/__init__.py",
                     "lib/python3.11/site-packages/tabulate/__init__.py"))
    ws.write("withenv/BUILD.toml", '[triton_model.withenv]\nversions = ["1"]\nenv = "env.tar.gz"\n')
    ws.write("withenv/1/model.py", ENV_MODEL)
    ws.build(check=True)
    _settle(ws.root, ws.cache)
    ws.build(check=True)  # records the settled stats
    return ws


def _reanalysed(r) -> int:
    return r.report["analysis"]["reanalysed_packages"]


@pytest.mark.parametrize("pkg", ["plain", "withenv"])
def test_a_body_edit_reanalyses_nothing_and_ships_the_new_bytes(recorded, pkg):
    ws = recorded
    src = ws.root / pkg / "1/model.py"
    for n in range(2):  # the second edit also meets a record whose model.py stat was too fresh to keep
        with open(src, "a") as f:
            f.write(f"\n\ndef helper{n}():\n    return {n}\n")
        r = ws.build(check=True)
        assert _reanalysed(r) == 0
        assert (ws.out(f"{pkg}/{pkg}/1/model.py")).read_bytes() == src.read_bytes()
        assert any(a["mnemonic"] == "ModelDirectory" and a["target"] == f"//{pkg}:{pkg}"
                   for a in r.report["actions"] if a["status"] == "executed")
    # No rule ran: the config schema (protobuf) was never loaded.
    src.write_text(src.read_text() + "# one more\n")
    report = ws.root.parent / "importtime-report.json"
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "tpbuild", "-C", str(ws.root), "build", "//...",
                        "--report", str(report)], capture_output=True, text=True, env=ws.env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(report.read_text())["analysis"]["reanalysed_packages"] == 0
    assert "tpbuild_triton.modelconfig" not in p.stderr, [l for l in p.stderr.splitlines() if "tpbuild_triton" in l]


@pytest.mark.parametrize("pkg, edit, expected", [
    ("plain", lambda t: t.replace("class TritonPythonModel", "class Model"),
     "error: plain/1/model.py:1: defines no class TritonPythonModel at module level, which the Python backend "
     "instantiates: add it"),
    ("plain", lambda t: t + "def broken(:\n",
     "error: plain/1/model.py:4:12: invalid syntax (Python 3.11 grammar): fix the syntax"),
    ("withenv", lambda t: "import torch\n" + t,
     "withenv/1/model.py:1:1: imports 'torch', which the env withenv/env.tar.gz does not provide"),
])
def test_an_edit_that_changes_the_facts_is_reported_as_without_them(recorded, pkg, edit, expected):
    ws = recorded
    src = ws.root / pkg / "1/model.py"
    before = src.read_text()
    src.write_text(edit(before))
    r = ws.build()
    assert r.returncode != 0 and expected in r.output, r.output
    src.write_text(before + "# fixed\n")
    r = ws.build(check=True)
    assert _reanalysed(r) == 1 and ws.out(f"{pkg}/{pkg}/1/model.py").read_text() == before + "# fixed\n"


def test_an_import_the_env_ships_reanalyses_the_model_alone(recorded):
    ws = recorded
    src = ws.root / "withenv/1/model.py"
    src.write_text("import tabulate\n" + ENV_MODEL)
    r = ws.build(check=True)
    assert _reanalysed(r) == 1
    assert "//withenv:withenv%ImportCheck" in r.statuses("executed")


# -- the memo's check, in-process ------------------------------------------------------------------

def lines(data: bytes, limit: int) -> int:
    """A fact function for the tests: the number of lines, capped (so some edits keep it)."""
    if limit < 0:
        raise ValueError("no limit")
    return min(data.count(b"\n"), limit)


def _cache(tmp_path, fact_args=(3,), entry=None):
    root = tmp_path / "ws"
    (root / "p").mkdir(parents=True, exist_ok=True)
    f = root / "p/file.txt"
    f.write_bytes(b"a\nb\nc\nd\n")
    old = time.time() - 60
    os.utime(f, (old, old))
    cache = AnalysisCache(tmp_path / "memo", "fp", {}, root)
    rec = entry or facts.entry(lines, fact_args, lines(f.read_bytes(), *fact_args))
    cache.put("p", {"p/file.txt": sig(str(f))}, [], {"p/file.txt": rec})
    return cache, f


def _touch(f, data: bytes, age: float = 60) -> None:
    f.write_bytes(data)
    t = time.time() - age
    os.utime(f, (t, t))


def test_same_facts_keep_the_record_and_its_new_stat_once_settled(tmp_path):
    cache, f = _cache(tmp_path)
    _touch(f, b"w\nx\ny\nz\n", age=-60)  # same facts, a stat within the racy window (however slow the machine)
    assert cache.valid("p") is not None
    assert cache.record("p").observed["p/file.txt"] != sig(str(f))  # not trusted yet: derived again next time
    _touch(f, b"a\nb\nc\nd\ne\n")  # 5 lines, capped at 3: the same facts
    assert cache.valid("p") is not None
    assert cache.record("p").observed["p/file.txt"] == sig(str(f))


@pytest.mark.parametrize("change", ["facts", "gone", "raises", "code", "missing function"])
def test_anything_but_the_same_facts_is_a_miss(tmp_path, change):
    args = (-1,) if change == "raises" else (3,)
    entry = facts.entry(lines, (3,), 3)
    entry[1] = list(args)
    if change == "code":
        entry[2] = "xxh3_128:" + "0" * 32  # as if the fact function's module had been edited since
    if change == "missing function":
        entry[0] = f"{__name__}:no_such_function"
    cache, f = _cache(tmp_path, entry=entry)
    if change == "gone":
        f.unlink()
    else:
        _touch(f, b"a\nb\n" if change == "facts" else b"w\nx\ny\nz\n")
    assert cache.valid("p") is None
    assert cache.record("p") is None


def test_a_fact_function_must_be_importable():
    with pytest.raises(TypeError):
        facts.entry(lambda data: 0, (), 0)


def test_a_file_also_read_whole_is_watched_by_its_stat(tmp_path):
    """A record with no facts for a file (some target read it whole) is a miss when the file changes."""
    cache, f = _cache(tmp_path)
    cache.put("p", {"p/file.txt": sig(str(f))}, [], {})
    _touch(f, b"w\nx\ny\nz\n")
    assert cache.valid("p") is None


def test_the_fact_functions_code_is_judged_by_its_sources_without_parsing_them(tmp_path, monkeypatch):
    """`code.traced` records the modules a fact function's code is made of and the ones its imports name
    that do not exist; `code.holds` then answers from the sources' digests alone (facts.unchanged)."""
    import importlib

    from tpbuild import code, digest

    pkg = tmp_path / "factpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\nfrom .b import f\n\n\ndef g():\n    from .c import h\n")
    (pkg / "b.py").write_text("def f():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    digests, absent = code.traced(("factpkg.a",))
    assert sorted(digests) == ["factpkg.a", "factpkg.b"] and absent == ("factpkg.b.f", "factpkg.c", "factpkg.c.h")
    assert digest.of_value(sorted(digests.items())) == code.digest_of(("factpkg.a",))  # what the key holds
    monkeypatch.setattr(code, "_imports", None)  # holds parses nothing
    assert code.holds(digests, absent)
    (pkg / "b.py").write_text("def f():\n    return 1\n")  # a module it imports, edited
    assert not code.holds(digests, absent)
    (pkg / "b.py").write_text("def f():\n    pass\n")
    assert code.holds(digests, absent)
    (pkg / "c.py").write_text("def h():\n    pass\n")  # a module its imports named appears
    importlib.invalidate_caches()
    assert not code.holds(digests, absent)
