"""What enters an action's key, through the real CLI: golden keys of a small fixed workspace (a key
that moves by accident fails here; a deliberate move is a visible edit of tests/golden/keys.json),
and the code of a rule's worker module, edited in a throwaway copy of the rule set."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "keys.json"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "python_backend_stand_in"
SYS_PY = "/usr/bin/python3.11"
# Keys of run actions hold PATH: fixed here, so the golden keys do not depend on the caller's.
PATH = "/usr/bin:/bin"


def _golden_ws(ws) -> None:
    ws.write("g/in.txt", "golden\n")
    ws.write("g/BUILD.toml", """
        [genrule.g]
        srcs = ["in.txt"]
        outs = ["o.txt"]
        cmd = "cp $SRCS $OUT"
    """)
    ws.write("m/1/model.py", "class TritonPythonModel:\n    pass\n")
    ws.write("m/BUILD.toml", """
        [triton_model.m]
        versions = ["1"]
        files = ["//g:g"]
        [triton_model.m.config]
        input = [{ name = "X", data_type = "TYPE_FP32", dims = [1] }]
        output = [{ name = "Y", data_type = "TYPE_FP32", dims = [1] }]
    """)


def _keys(r) -> dict[str, str]:
    return {f"{a['target']}%{a['mnemonic']}": a["key"] for a in r.report["actions"]}


def test_golden_keys(ws):
    from tpbuild import code
    from tpbuild.genrule import _bash_fingerprint

    _golden_ws(ws)
    keys = _keys(ws.build(check=True, env={"PATH": PATH}))
    now = {"engine": code.engine(), "bash": _bash_fingerprint(), "keys": keys}
    if os.environ.get("TPBUILD_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(now, indent=2, sort_keys=True) + "\n")
        pytest.skip("golden keys rewritten")
    golden = json.loads(GOLDEN.read_text())
    hint = ("; if the move is deliberate, rewrite the golden keys: "
            "TPBUILD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_keys.py -k golden")
    assert now["engine"] == golden["engine"], (
        f"the engine's output-deciding code ({', '.join(code.ENGINE)}) changed, so every key moved" + hint)
    want = dict(golden["keys"])
    if now["bash"] != golden["bash"]:  # a genrule's key holds the bash it runs: pinned on the recording machine
        want.pop("//g:g%Genrule")
        keys.pop("//g:g%Genrule")
    assert keys == want, "action keys moved" + hint


def test_path_enters_run_keys_only(ws):
    _golden_ws(ws)
    a = _keys(ws.build(check=True, env={"PATH": PATH}))
    b = _keys(ws.build(check=True, env={"PATH": f"/usr/local/bin:{PATH}"}))
    moved = sorted(k for k in a if a[k] != b[k])
    assert moved == ["//g:g%Genrule"]


def test_run_actions_get_a_fixed_environment(ws, tmp_path):
    ws.write("e/BUILD.toml", """
        [genrule.e]
        outs = ["env.txt"]
        cmd = "env | grep -v '^_=' | grep -v '^PWD=' | grep -v '^SHLVL=' | grep -v '^OLDPWD=' | sort > $OUT"
    """)
    ws.build(check=True, env={"PATH": PATH, "HOME": str(tmp_path), "SECRET_TOKEN": "leak", "LC_ALL": "de_DE"})
    got = dict(line.split("=", 1) for line in ws.out("e/e/env.txt").read_text().splitlines())
    assert got.pop("PATH") == PATH
    assert got.pop("HOME").endswith("/home") and got.pop("TMPDIR").endswith("/tmp")
    got.pop("XDG_CACHE_HOME")
    assert sorted(got) == ["LANG", "OUT", "OUTS", "SOURCE_DATE_EPOCH", "SRCS"]


needs_toolchain = pytest.mark.skipif(
    not (shutil.which("cmake") and shutil.which("g++") and shutil.which("make") and os.path.exists(SYS_PY)),
    reason="needs cmake, g++, make and /usr/bin/python3.11 (tools/test.sh installs them)")


@needs_toolchain
def test_editing_a_rules_worker_reruns_that_rules_actions_only(ws, tmp_path):
    """The rule set is copied and put first on the import path, as a developer's checkout would be;
    the worker subprocesses get the same path, so the edited worker is what runs."""
    copy = tmp_path / "ruleset" / "tpbuild_triton"
    shutil.copytree(REPO / "rules", copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(copy.parent)}
    ws.write("tpbuild.toml", '[triton]\nversion = "24.10"\n')
    shutil.copytree(FIXTURE, ws.root / "stubs" / "pb")
    ws.write("stubs/BUILD.toml", f'[python_stub.s]\npython = "3.11"\ninterpreter = "{SYS_PY}"\nsource = "pb"\n')
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\nstub = "//stubs:s"\n')
    ws.write("m/1/model.py", "class TritonPythonModel:\n    pass\n")
    first = ws.build(check=True, env=env)
    assert "//stubs:s%PythonStub" in first.statuses("executed")
    keys = _keys(first)

    def edit(module: str, line: str):
        with open(copy / f"{module}.py", "a") as f:
            f.write(f"\n{line}\n")
        return ws.build(check=True, env=env)

    # The env builder (and the archive code it uses) is no part of a stub or a model: no key moves.
    r = edit("envbuild", "SOURCE_DATE_EPOCH_DEFAULT = 1")
    assert r.statuses("executed") == [] and _keys(r) == keys
    # The stub builder: its action runs again, and only it (the binary comes out the same, so the
    # model directory is not re-assembled: early cutoff).
    r = edit("stubbuild", "STUB_EDIT_MARKER = 2")
    assert r.statuses("executed") == ["//stubs:s%PythonStub"]
    assert {k for k in keys if _keys(r)[k] != keys[k]} == {"//stubs:s%PythonStub"}
    # A module the stub builder imports counts as its code too.
    r = edit("elf", "ELF_EDIT_MARKER = 3")
    assert r.statuses("executed") == ["//stubs:s%PythonStub"]
