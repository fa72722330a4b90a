"""Every error at once, nothing dropped silently, and the checks that run as actions, through the real CLI.
(The one-error-per-workspace corpus, with the real server, is test_validation_corpus.py.)"""

from __future__ import annotations

import io
import tarfile

import pytest

from tpbuild.errors import SHOWN_ERRORS

MODEL_PY = "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"
GOOD = '[triton_model.m]\nversions = ["1"]\n'


def model(ws, pkg: str, manifest: str = GOOD, code: str = MODEL_PY, extra: dict | None = None) -> None:
    ws.write(f"{pkg}/BUILD.toml", manifest)
    ws.write(f"{pkg}/1/model.py", code)
    for rel, text in (extra or {}).items():
        ws.write(f"{pkg}/{rel}", text)


def error_lines(r) -> list[str]:
    return [l for l in r.stderr.splitlines() if l.startswith("error: ")]


def test_errors_in_three_packages_are_reported_in_one_run_sorted(ws):
    model(ws, "c", '[triton_model.m]\nversions = ["1"]\nconfig = { input = [{ name = "A", data_type = "TYPE_FP32", '
                   'dims = [0] }] }\n')
    model(ws, "a", '[triton_model.m]\nversions = [1]\n')
    model(ws, "b", code="def f(:\n")
    model(ws, "ok")
    r = ws.build()
    assert r.returncode == 2, r.output
    assert error_lines(r) == [
        "error: a/BUILD.toml:2: attribute 'versions': expected a table of strings or an array of strings, "
        "got the array [1]",
        "error: b/1/model.py:1:7: invalid syntax (Python 3.11 grammar): fix the syntax",
        "error: c/BUILD.toml:3: config.input[0].dims[0]: dimension 0: each must be >= 1, or -1 for a variable size",
    ], r.stderr
    assert not ws.out("ok/m").exists()  # without -k nothing is built


def test_keep_going_builds_what_the_errors_leave_and_still_fails(ws):
    model(ws, "a", '[triton_model.m]\nversions = [1]\n')
    model(ws, "b", code="class Nope:\n    pass\n")
    model(ws, "ok")
    ws.write("BUILD.toml", '[model_repository.repo]\nmodels = ["//a:m", "//ok:m"]\n')
    r = ws.build("-k", "//...")
    assert r.returncode == 2, r.output
    assert len(error_lines(r)) == 2 and "a/BUILD.toml:2" in r.stderr and "b/1/model.py:1" in r.stderr, r.stderr
    assert (ws.out("ok/m/1/model.py")).is_file()  # unrelated to the errors: built
    assert not ws.out("repo").exists()  # depends on the broken //a:m: not analysed, no error of its own
    assert r.report["success"] is False and "a/BUILD.toml:2" in r.report["error"]


def test_many_errors_are_capped_with_a_count(ws):
    n = SHOWN_ERRORS + 7
    ws.write("p/BUILD.toml", "".join(f'[triton_model.m{i}]\nversions = [{i}]\n' for i in range(n)))
    r = ws.build()
    assert r.returncode == 2
    assert len(error_lines(r)) == SHOWN_ERRORS and r.stderr.rstrip().endswith("\n... and 7 more errors"), r.stderr


def test_misnamed_and_empty_manifests_are_warnings_naming_them(ws):
    model(ws, "ok")
    ws.write("low/build.toml", GOOD)
    ws.write("camel/Build.toml", GOOD)
    ws.write("empty/BUILD.toml", "# nothing yet\n")
    r = ws.build(check=True)
    for name in ("low/build.toml", "camel/Build.toml", "empty/BUILD.toml"):
        assert f"warning: {name}" in r.stderr, r.stderr
    assert any("empty/BUILD.toml declares no targets" in w for w in r.report["warnings"])
    assert ws.build(check=True).stderr.count("warning:") == 3  # shown again: a run with warnings is never a no-op replay


def test_a_pattern_matching_no_target_is_an_error_and_a_warning_under_keep_going(ws):
    model(ws, "ok")
    ws.write("empty/BUILD.toml", "")
    r = ws.build("//empty/...", "//ok:m")
    assert r.returncode == 2 and "pattern //empty/... matches no target" in r.stderr, r.stderr
    r = ws.build("-k", "//empty/...", "//ok:m")
    assert r.returncode == 0 and "warning: pattern //empty/... matches no target" in r.stderr, r.output
    r = ws.build("//nowhere/...")
    assert r.returncode == 2 and "matches no package" in r.stderr


def test_broken_manifest_is_never_remembered_as_whole(ws):
    """The analysis cache must not record a package with a broken target: the next build would pass over it."""
    model(ws, "p", GOOD + '\n[triton_model.bad]\nversions = [1]\n')
    assert ws.build().returncode == 2
    r = ws.build()
    assert r.returncode == 2 and "p/BUILD.toml:5" in r.stderr, r.stderr


def test_unknown_triton_release_lists_the_nearest(ws):
    model(ws, "ok")
    (ws.root / "tpbuild.toml").write_text('[triton]\nversion = "24.99"\n')
    r = ws.build()
    assert r.returncode == 2 and "tpbuild.toml:2: " in r.stderr and "24.11, 24.12, 25.01" in r.stderr, r.stderr
    (ws.root / "tpbuild.toml").write_text('[triton]\nversion = "19.01"\n')
    assert "20.12, 21.01, 21.02" in ws.build().stderr


def test_release_decides_grammar_and_python_overrides_it(ws):
    """23.04 runs Python 3.8: a walrus is fine, a `match` is not; `python` names a custom image's Python."""
    model(ws, "ok", code=MODEL_PY + "if (n := 1):\n    pass\n")
    model(ws, "m", code=MODEL_PY + "match 1:\n    case 1:\n        pass\n")
    (ws.root / "tpbuild.toml").write_text('[triton]\nversion = "23.04"\n')
    r = ws.build()
    assert r.returncode == 2 and len(error_lines(r)) == 1 and "m/1/model.py:6:13: Pattern matching" in r.stderr \
        and "Python 3.8 grammar" in r.stderr, r.stderr
    (ws.root / "tpbuild.toml").write_text('[triton]\nversion = "23.04"\npython = "3.10"\n')
    ws.build(check=True)


def test_version_and_help(ws):
    r = ws.run("--version")
    assert r.returncode == 0 and r.stdout.startswith("tpbuild "), r.output
    r = ws.run("help", "build")
    assert r.returncode == 0 and "--keep-going" in r.stdout
    r = ws.run("help", "biuld")
    assert r.returncode == 2 and "no command 'biuld'" in r.stderr


def _env_tarball(*members: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in members:
            data = b"# module\n"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_imports_are_resolved_in_the_env_as_a_cached_action(ws):
    """A prebuilt env tarball (the layout conda-pack and venv-pack produce) that ships tabulate but not
    torch: `import torch` fails the build naming the module, the file:line and the env; imports of the
    standard library, of the backend and of modules beside the model pass."""
    env = _env_tarball("bin/activate", "lib/python3.11/site-packages/tabulate/__init__.py",
                       "lib/python3.11/site-packages/numpy/__init__.py")
    (ws.root / "m").mkdir()
    (ws.root / "m/env.tar.gz").write_bytes(env)
    code = ("import json\nimport numpy as np\nimport triton_python_backend_utils as pb_utils\n"
            "from tabulate import tabulate\nimport helper\n" + MODEL_PY)
    model(ws, "m", '[triton_model.m]\nversions = ["1"]\nenv = "env.tar.gz"\n', code, {"1/helper.py": "X = 1\n"})
    r = ws.build(check=True)
    assert ("//m:m", "ImportCheck", "executed") in r.statuses()
    assert ws.out("m/m/config.pbtxt").is_file()
    ws.write("m/1/model.py", "import torch\n" + code)
    r = ws.build()
    assert r.returncode == 1, r.output
    assert "m/1/model.py:1:1: imports 'torch', which the env m/env.tar.gz does not provide" in r.output, r.output
    ws.write("m/1/model.py", code + "\n# an edit that changes no import\n")
    r = ws.build(check=True)
    assert ("//m:m", "ImportCheck", "cached") in r.statuses(), r.statuses()


@pytest.mark.parametrize("text, line", [
    ('backend: "python"\ninput [\n  { name: "A" dims: [1] },\n  {\n    name: "B"\n    dims: [0]\n  }\n]\n', 6),
    ('backend: "python"\ninput { name: "A" dims: [1] }\ninput {\n  name: "B"\n  dims: [ 0 ]\n}\n', 5),
    ('backend: "python"\ninput: [ { name: "A" data_type: TYPE_FP32 dims: [1] },\n  { name: "B"\n    data_type: TYPE_FP32\n'
     '    dims: [0] } ]\n', 5),
])
def test_config_pbtxt_refusals_point_into_the_file(ws, text, line):
    model(ws, "m", '[triton_model.m]\nversions = ["1"]\nconfig = "config.pbtxt"\n', extra={"config.pbtxt": text})
    r = ws.build()
    assert r.returncode == 2 and f"error: m/config.pbtxt:{line}: input[1].dims[0]: dimension 0" in r.stderr, r.stderr


def test_newer_python_than_the_host_is_judged_by_its_own_interpreter(ws):
    """24.11 runs Python 3.12: PEP 695 syntax the host (3.11) cannot parse is valid there. With a
    python3.12 on PATH its own compiler judges the file; without one the grammar check is skipped,
    never a false refusal."""
    import sys

    from tpbuild_triton.pycheck import find_interpreter

    if sys.version_info >= (3, 12):
        pytest.skip("the host is not older than 3.12")
    (ws.root / "tpbuild.toml").write_text('[triton]\nversion = "24.11"\n')
    model(ws, "ok", code=MODEL_PY + "type Vector = list[float]\n")
    ws.build(check=True)
    if find_interpreter("3.12") is None:
        return
    model(ws, "bad", code=MODEL_PY + "type Vector = list[float\n")
    r = ws.build()
    assert r.returncode == 2 and "bad/1/model.py:4" in r.stderr and "(Python 3.12)" in r.stderr, r.stderr


def test_modules_at_the_model_root_are_known_to_the_import_check(ws):
    (ws.root / "m").mkdir()
    (ws.root / "m/env.tar.gz").write_bytes(_env_tarball("bin/activate", "lib/python3.11/site-packages/numpy/__init__.py"))
    model(ws, "m", '[triton_model.m]\nversions = ["1"]\nenv = "env.tar.gz"\nfiles = ["shared.py"]\n',
          "import shared\n" + MODEL_PY, {"shared.py": "X = 1\n"})
    ws.build(check=True)


@pytest.mark.parametrize("where, text, says", [
    ("tpbuild.toml", '[cache]\nremote_upload = [true]\n', "tpbuild.toml:2: attribute 'remote_upload': expected true "
                                                          "or false, got the array [true]"),
    ("tpbuild.toml", '[triton]\nversion = 24.1\n', "tpbuild.toml:2: attribute 'version': expected a string, "
                                                  "got the number 24.1"),
    ("e/BUILD.toml", '[python_env.e]\npython = "3.11"\nmanager = "pipx"\n', "e/BUILD.toml:3: attribute 'manager': "
                                                                          "expected 'conda', 'mamba', 'micromamba' or 'venv'"),
    ("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\nfiles = "a.txt"\n', 'write files = ["a.txt"]'),
    ("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\ntest = { inputs = { A = [1] } }\n',
     "attribute 'test': expected an array of tables, got the table { inputs = { A = [1] } }"),
    ("m/BUILD.toml", '[triton_model.m]\nversions = { 1 = 1 }\n', "attribute 'versions.1': expected a string, "
                                                                "got the integer 1"),
])
def test_messages_name_toml_types(ws, where, text, says):
    model(ws, "m")
    ws.write(where, text)
    r = ws.build()
    assert r.returncode == 2 and says in r.stderr, r.stderr
    for word in ("dict[", "tuple", "valid dictionary", "Input should be", "str]"):
        assert word not in r.stderr, r.stderr


def test_a_dependency_in_an_unreadable_manifest_is_reported_once(ws):
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"\n')
    ws.write("BUILD.toml", '[model_repository.repo]\nmodels = ["//m:m"]\n')
    r = ws.build("//:repo")
    assert r.returncode == 2 and error_lines(r) == [
        "error: m/BUILD.toml:3: invalid TOML: Unclosed array (column 1); fix the syntax"], r.stderr


def test_an_env_directory_needs_23_07(ws):
    """Before r23.07 the Python backend only extracts a tarball; a directory env would fail at load."""
    ws.write("m/env/bin/activate", "# activate\n")
    model(ws, "m", '[triton_model.m]\nversions = ["1"]\nenv = "env"\n')
    (ws.root / "tpbuild.toml").write_text('[triton]\nversion = "23.06"\npython = "3.11"\n')
    r = ws.build()
    assert r.returncode == 2 and "m/BUILD.toml:3: Triton 23.06 takes EXECUTION_ENV_PATH only as a tarball" in r.stderr, \
        r.stderr
    (ws.root / "tpbuild.toml").write_text('[triton]\nversion = "23.07"\npython = "3.11"\n')
    ws.build(check=True)


def test_one_model_reports_its_config_code_and_version_errors_together(ws):
    model(ws, "m", '[triton_model.m]\nversions = ["1", "2"]\nconfig = { max_batch_size = -1 }\n', code="def f(:\n")
    r = ws.build()
    assert r.returncode == 2 and [l.split(": ")[1] for l in error_lines(r)] == [
        "m/1/model.py:1:7", "m/BUILD.toml:2", "m/BUILD.toml:3"], r.stderr
    assert "source '2' not found" in r.stderr and "max_batch_size must be >= 0" in r.stderr
