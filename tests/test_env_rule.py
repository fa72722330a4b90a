"""python_env as a rule, through the real CLI: real venv builds (pip from the registry), the wiring into
config.pbtxt, the seed's version rule, and incrementality read from --report."""

from __future__ import annotations

import shutil
import tarfile

import pytest

pytestmark = pytest.mark.slow

TOML = '[triton]\nversion = "24.10"\npython = "3.11"\n'

MODEL_CLASS = "class TritonPythonModel:\n    pass\n"  # without it, a model file is refused at analysis


def env_ws(ws, pip_a='["numpy<2", "six==1.16.0"]'):
    ws.write("tpbuild.toml", TOML)
    ws.write("envs/BUILD.toml", f"""
        [python_env.a]
        python = "3.11"
        manager = "venv"
        pip = {pip_a}

        [python_env.b]
        python = "3.11"
        manager = "venv"
        requirements = "req-b.txt"
    """)
    ws.write("envs/req-b.txt", "numpy<2\nidna==3.7\n")
    for name, env in (("m1", "a"), ("m2", "a"), ("m3", "b")):
        ws.write(f"models/{name}/BUILD.toml", f'[triton_model.{name}]\nversions = ["1"]\nenv = "//envs:{env}"\n')
        ws.write(f"models/{name}/1/model.py", "class TritonPythonModel:\n    pass\n")


def test_env_is_built_once_wired_and_rebuilt_only_when_its_spec_changes(ws):
    env_ws(ws)
    r = ws.build(check=True)
    envs = [a for a in r.report["actions"] if a["mnemonic"] == "PythonEnv"]
    assert sorted((a["target"], a["status"]) for a in envs) == [("//envs:a", "executed"), ("//envs:b", "executed")]
    # Unlocked envs still build, each with one warning line naming the fix.
    unlocked = [w for w in r.report["warnings"] if "not locked" in w]
    assert [w.split(":", 2)[:2] for w in unlocked] == [["//envs", "a"], ["//envs", "b"]]
    assert all("run `tpbuild lock //envs:" in w and w in r.stderr for w in unlocked)
    m1 = ws.out("models/m1/m1")
    cfg = (m1 / "config.pbtxt").read_text()
    assert 'key: "EXECUTION_ENV_PATH"' in cfg and 'string_value: "$$TRITON_MODEL_DIRECTORY/a.tar.gz"' in cfg
    # One blob, hardlinked into both models that use it.
    assert (m1 / "a.tar.gz").stat().st_ino == ws.out("models/m2/m2/a.tar.gz").stat().st_ino
    with tarfile.open(m1 / "a.tar.gz") as t:
        names = t.getnames()
        assert "bin/activate" in names
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in t.getmembers())
    assert any("site-packages/six.py" in n for n in names)

    # Changing env a's pip list rebuilds env a once and re-wires m1 and m2, nothing of b or m3.
    env_ws(ws, pip_a='["numpy<2", "six==1.16.0", "idna==3.7"]')
    r = ws.build(check=True)
    executed = set(r.statuses("executed"))
    assert "//envs:a%PythonEnv" in executed and "//envs:b%PythonEnv" not in executed
    assert {"//models/m1:m1%ModelDirectory", "//models/m2:m2%ModelDirectory"} <= executed
    assert not any(e.startswith("//models/m3") for e in executed)

    # A requirements file is an input: editing it rebuilds env b only.
    ws.write("envs/req-b.txt", "numpy<2\nidna==3.6\n")
    r = ws.build(check=True)
    executed = set(r.statuses("executed"))
    assert "//envs:b%PythonEnv" in executed and "//envs:a%PythonEnv" not in executed

    assert ws.build(check=True).statuses("executed") == []


def test_same_spec_gives_byte_identical_tarball_with_empty_caches(tmp_path, tmp_path_factory):
    """A clean build of the examples' env equals the one made by the run's clean build of the examples
    (`conftest.seeded_examples`), in another workspace directory, with another empty cache, in another
    process. (The builder itself, with hostile user config: tests/test_envbuild.py.)"""
    from conftest import copy_examples, seeded_examples

    seed = seeded_examples(tmp_path_factory).parent / "examples"
    w = copy_examples(tmp_path)
    assert "//envs:tabulate%PythonEnv" in w.build("//envs:tabulate", check=True).statuses("executed")
    rel = "envs/tabulate/tabulate.tar.gz"
    assert w.out(rel).read_bytes() == (seed / "tpbuild-out" / rel).read_bytes()


def test_dir_format_lands_as_a_directory(ws):
    ws.write("tpbuild.toml", TOML)
    ws.write("e/BUILD.toml", '[python_env.e]\npython = "3.11"\nmanager = "venv"\npip = ["numpy<2"]\nformat = "dir"\n')
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\nenv = "//e:e"\n')
    ws.write("m/1/model.py", "x = 1\n" + MODEL_CLASS)
    ws.build(check=True)
    assert ws.out("m/m/e/bin/activate").is_file()
    assert '"$$TRITON_MODEL_DIRECTORY/e"' in ws.out("m/m/config.pbtxt").read_text()


def test_prebuilt_tarball_path(ws):
    ws.write("tpbuild.toml", TOML)
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\nenv = "prebuilt.tar.gz"\n')
    ws.write("m/1/model.py", "x = 1\n" + MODEL_CLASS)
    ws.write("m/prebuilt.tar.gz", "not really a tarball, placed as it is\n")
    ws.build(check=True)
    assert ws.out("m/m/prebuilt.tar.gz").exists()
    assert "$$TRITON_MODEL_DIRECTORY/prebuilt.tar.gz" in ws.out("m/m/config.pbtxt").read_text()


def test_existing_config_gains_the_parameter_and_keeps_the_rest(ws):
    ws.write("tpbuild.toml", TOML)
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\nconfig = "config.pbtxt"\nenv = "e.tar.gz"\n')
    ws.write("m/config.pbtxt", 'backend: "python"\nmodel_transaction_policy { decoupled: true }\n'
                               'parameters { key: "FOO" value { string_value: "bar" } }\n')
    ws.write("m/e.tar.gz", "x")
    ws.write("m/1/model.py", "x = 1\n" + MODEL_CLASS)
    ws.build(check=True)
    text = ws.out("m/m/config.pbtxt").read_text()
    assert "decoupled: true" in text and '"FOO"' in text and "EXECUTION_ENV_PATH" in text


def test_disagreeing_user_execution_env_path_exits_2(ws):
    ws.write("tpbuild.toml", TOML)
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\nenv = "e.tar.gz"\n\n[triton_model.m.config]\n'
                             'parameters = { EXECUTION_ENV_PATH = "$$TRITON_MODEL_DIRECTORY/other.tar.gz" }\n')
    ws.write("m/e.tar.gz", "x")
    ws.write("m/1/model.py", "x = 1\n" + MODEL_CLASS)
    r = ws.build()
    assert r.returncode == 2 and "m/BUILD.toml:" in r.stderr and "EXECUTION_ENV_PATH" in r.stderr, r.stderr


@pytest.mark.parametrize("triton,needle", [
    ('[triton]\nversion = "24.10"\n', "Triton 24.10 runs Python 3.10"),
    ('[triton]\nversion = "24.12"\n', "Triton 24.12 runs Python 3.12"),
    ('[triton]\nversion = "23.04"\npython = "3.8"\n', "runs Python 3.8"),
])
def test_version_rule_refuses_an_env_for_another_python(ws, triton, needle):
    ws.write("tpbuild.toml", triton)
    ws.write("e/BUILD.toml", '[python_env.e]\npython = "3.11"\nmanager = "venv"\npip = ["numpy<2"]\n')
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\nenv = "//e:e"\n')
    ws.write("m/1/model.py", "x = 1\n" + MODEL_CLASS)
    r = ws.build()
    assert r.returncode == 2, r.output
    assert "m/BUILD.toml:3: " in r.stderr and needle in r.stderr and "stub" in r.stderr
    assert r.report["actions"] == []  # refused before anything ran


def test_missing_conda_names_the_tool_and_the_venv_alternative(ws, monkeypatch):
    if any(shutil.which(t) for t in ("conda", "mamba", "micromamba")):
        pytest.skip("a conda-family tool is installed here")
    ws.write("e/BUILD.toml", '[python_env.e]\npython = "3.11"\nconda = ["numpy<2"]\n')
    r = ws.build()
    assert r.returncode == 2 and "conda" in r.stderr and 'manager = "venv"' in r.stderr, r.stderr


@pytest.mark.parametrize("manifest,needle", [
    ('[python_env.e]\nmanager = "venv"\n', "missing required attribute 'python'"),
    ('[python_env.e]\npython = "3.11"\nmanager = "pipenv"\n', "attribute 'manager'"),
    ('[python_env.e]\npython = "three"\nmanager = "venv"\n', "python"),
    ('[python_env.e]\npython = "3.11"\nmanager = "venv"\nconda = ["x"]\n', "conda-family manager"),
    ('[python_env.e]\npython = "3.11"\nmanager = "venv"\nrequirements = "nope.txt"\n', "not found"),
])
def test_bad_env_attributes_exit_2(ws, manifest, needle):
    ws.write("e/BUILD.toml", manifest)
    r = ws.build()
    assert r.returncode == 2 and "e/BUILD.toml:" in r.stderr and needle in r.stderr, r.stderr


def test_unknown_triton_setting_and_table(ws):
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\n')
    ws.write("m/1/model.py", "x = 1\n" + MODEL_CLASS)
    ws.write("tpbuild.toml", '[triton]\nversion = "24.10"\npyhton = "3.11"\n')
    r = ws.build()
    assert r.returncode == 2 and "tpbuild.toml:3: unknown setting 'pyhton'" in r.stderr, r.stderr
    ws.write("tpbuild.toml", '[tritn]\nversion = "24.10"\n')
    r = ws.build()
    assert r.returncode == 2 and "tpbuild.toml:1: unknown table [tritn]" in r.stderr, r.stderr
