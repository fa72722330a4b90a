"""python_stub through the real CLI: stubs built for real with cmake and g++ (from a stand-in for
python_backend in tests/fixtures, from a local git repository, and the real r24.10 sources), the ELF
checks on binaries compiled here, the wiring into triton_model, and the seed's scenario on the real
Triton server (default stub for Python 3.10, env and stub for 3.11)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "python_backend_stand_in"
# The project's shared folder sits beside the checkout, on developer machines and in CI alike.
VENDOR = Path(__file__).resolve().parent.parent.parent / "shared" / "vendor"
SYS_PY = "/usr/bin/python3.11"  # Debian's: a shared libpython in the loader's default path (python3.11-dev)
STUB = "triton_python_backend_stub"
TOML = '[triton]\nversion = "24.10"\n'

needs_toolchain = pytest.mark.skipif(
    not (shutil.which("cmake") and shutil.which("g++") and shutil.which("make") and os.path.exists(SYS_PY)),
    reason="needs cmake, g++, make and /usr/bin/python3.11 (tools/test.sh installs them)")
needs_gcc = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("g++")), reason="needs gcc and g++")

MODEL_PY = "class TritonPythonModel:\n    pass\n"


def stub_ws(ws, attrs: str, model: str = 'stub = "//stubs:s"\n', toml: str = TOML):
    ws.write("tpbuild.toml", toml)
    ws.write("stubs/BUILD.toml", '[python_stub.s]\npython = "3.11"\n' + attrs)
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\n' + model)
    ws.write("m/1/model.py", MODEL_PY)


def needed(path: Path) -> list[str]:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        dyn = ELFFile(f).get_section_by_name(".dynamic")
        return [t.needed for t in dyn.iter_tags() if t.entry.d_tag == "DT_NEEDED"]


def info(binary: Path) -> str:
    return subprocess.run([str(binary), "--info"], capture_output=True, text=True, check=True).stdout.strip()


# -- building from sources --------------------------------------------------------------------------


@needs_toolchain
def test_stub_from_source_is_built_placed_and_cached(ws):
    shutil.copytree(FIXTURE, ws.root / "stubs" / "pb")
    stub_ws(ws, f'interpreter = "{SYS_PY}"\nsource = "pb"\ncmake_args = ["STUB_GREETING=custom"]\n')
    r = ws.build(check=True)
    assert "//stubs:s%PythonStub" in r.statuses("executed")
    placed = ws.out(f"m/m/{STUB}")
    # At the model root, executable, one blob hardlinked from the cache into both outputs.
    assert placed.stat().st_mode & stat.S_IXUSR
    assert placed.stat().st_ino == ws.out(f"stubs/s/{STUB}").stat().st_ino
    assert info(placed).startswith("branch=r24.10 gpu=0 greeting=custom python=3.11.")
    assert "libpython3.11.so.1.0" in needed(placed)
    assert subprocess.run([str(placed)], capture_output=True, text=True, check=True).stdout.strip() == "embedded 3.11"

    assert ws.build(check=True).statuses("executed") == []
    shutil.rmtree(ws.root / "tpbuild-out")
    r = ws.build(check=True)
    assert r.statuses("executed") == [] and placed.exists()

    # A source edit rebuilds the stub; the binary comes out byte-identical (no scratch path in it),
    # so the model directory is not re-assembled.
    with open(ws.root / "stubs/pb/stub.cc", "a") as f:
        f.write("// an edit that changes no code\n")
    executed = ws.build(check=True).statuses("executed")
    assert "//stubs:s%PythonStub" in executed and "//m:m%ModelDirectory" not in executed

    # The branch and gpu attributes reach the configure step.
    stub_ws(ws, f'interpreter = "{SYS_PY}"\nsource = "pb"\nbranch = "r24.09"\ngpu = true\n')
    assert "//stubs:s%PythonStub" in ws.build(check=True).statuses("executed")
    assert info(placed).startswith("branch=r24.09 gpu=1 greeting=hello ")


def _git(*args, cwd):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@needs_toolchain
@pytest.mark.skipif(not shutil.which("git"), reason="needs git")
def test_stub_from_git_keys_the_resolved_commit(ws, tmp_path):
    """GitHub cannot be reached here: the same code path runs against a local repository (file://)."""
    work = tmp_path / "upstream"
    shutil.copytree(FIXTURE, work)
    _git("init", "-q", "-b", "main", cwd=work)
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "one", cwd=work)
    bare = tmp_path / "python_backend.git"
    _git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    _git("remote", "add", "origin", str(bare), cwd=work)
    stub_ws(ws, f'interpreter = "{SYS_PY}"\ngit = "file://{bare}"\nref = "main"\n')

    assert "//stubs:s%PythonStub" in ws.build(check=True).statuses("executed")
    assert info(ws.out(f"m/m/{STUB}")).startswith("branch=r24.10 gpu=0 greeting=hello ")
    assert ws.build(check=True).statuses("executed") == []  # same commit: nothing cloned, nothing built

    cmake = (work / "CMakeLists.txt").read_text().replace('"hello" CACHE', '"moved" CACHE')
    (work / "CMakeLists.txt").write_text(cmake)
    _git("commit", "-q", "-am", "two", cwd=work)
    _git("push", "-q", "origin", "main", cwd=work)
    assert "//stubs:s%PythonStub" in ws.build(check=True).statuses("executed")
    assert info(ws.out(f"m/m/{STUB}")).startswith("branch=r24.10 gpu=0 greeting=moved ")

    stub_ws(ws, f'interpreter = "{SYS_PY}"\ngit = "file://{bare}"\nref = "no-such-branch"\n')
    r = ws.build()
    assert r.returncode == 2 and "stubs/BUILD.toml:4:" in r.output and "no branch or tag 'no-such-branch'" in r.output


@needs_toolchain
def test_missing_dependency_is_named(ws):
    shutil.copytree(FIXTURE, ws.root / "stubs" / "pb")
    stub_ws(ws, f'interpreter = "{SYS_PY}"\nsource = "pb"\ncmake_args = ["STUB_REQUIRE=TritonNoSuchDep"]\n')
    r = ws.build()
    assert r.returncode == 1, r.output
    assert "cmake configure failed: TritonNoSuchDep is missing" in r.output and "apt-get install" in r.output
    assert not ws.out(f"m/m/{STUB}").exists()


def test_missing_dependency_hints():
    from tpbuild_triton.stubbuild import _missing_dependency

    rapid = 'Could not find a package configuration file provided by\n  "RapidJSON" with any of'
    assert _missing_dependency(rapid, "3.11") == "RapidJSON is missing: apt-get install rapidjson-dev"
    archive = "Could NOT find LibArchive (missing: LibArchive_LIBRARY LibArchive_INCLUDE_DIR)"
    assert _missing_dependency(archive, "3.11") == "LibArchive is missing: apt-get install libarchive-dev"
    header = "fatal error: Python.h: No such file or directory"
    assert _missing_dependency(header, "3.12") == "Python.h is missing: apt-get install python3.12-dev"
    assert _missing_dependency("-- Configuring done", "3.11") is None


@pytest.mark.skipif(not os.path.exists(SYS_PY), reason="needs /usr/bin/python3.11 (tools/test.sh installs it)")
def test_missing_build_tools_exit_2(ws, tmp_path):
    stub_ws(ws, f'interpreter = "{SYS_PY}"\nsource = "pb"\n')
    (ws.root / "stubs/pb").mkdir()
    (ws.root / "stubs/pb/CMakeLists.txt").write_text("")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    r = ws.build(env={"PATH": str(empty), "CC": "", "CXX": ""})
    assert r.returncode == 2, r.output
    assert "stubs/BUILD.toml:2:" in r.output and "needs cmake, make, cc, c++" in r.output
    assert "apt-get install cmake g++ make rapidjson-dev libarchive-dev" in r.output


def test_bad_attributes_exit_2(ws):
    (ws.root / "stubs").mkdir()
    (ws.root / "stubs/stub.bin").write_bytes(b"\x7fELF")
    cases = [
        ('source = "."\nprebuilt = "stub.bin"\n', TOML, "exactly one of source"),
        ("", TOML, "exactly one of source"),
        ('prebuilt = "stub.bin"\nref = "main"\n', TOML, "ref applies to git sources only"),
        ('prebuilt = "stub.bin"\ncmake_args = ["X=1"]\n', TOML, "cmake_args only apply when the stub is built"),
        ('source = "."\ninterpreter = "/nonexistent/python3.11"\n', TOML, "'/nonexistent/python3.11' not found"),
        ('source = "."\n', "", "set branch = \"r24.10\", or [triton] version"),
    ]
    for attrs, toml, message in cases:
        stub_ws(ws, attrs, toml=toml)
        r = ws.build()
        assert r.returncode == 2 and "stubs/BUILD.toml:" in r.output and message in r.output, (attrs, r.output)

    # The model side: stub must name a python_stub, for the env's Python.
    stub_ws(ws, 'prebuilt = "stub.bin"\n', model='stub = "//m:other"\n[triton_model.other]\nversions = ["1"]\n')
    r = ws.build()
    assert r.returncode == 2 and "m/BUILD.toml:3:" in r.output and "stub takes a python_stub label" in r.output
    ws.write("stubs/BUILD.toml", '[python_stub.s]\npython = "3.12"\nprebuilt = "stub.bin"\n')
    ws.write("envs/BUILD.toml", '[python_env.e]\npython = "3.11"\nmanager = "venv"\npip = ["numpy<2"]\n')
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\nenv = "//envs:e"\nstub = "//stubs:s"\n')
    r = ws.build()
    assert r.returncode == 2 and "m/BUILD.toml:4:" in r.output, r.output
    assert "stub for Python 3.12, but the env uses Python 3.11" in r.output


# -- the ELF checks, on binaries compiled here --------------------------------------------------------


def _cc(compiler: str, src: str, out: Path, *args: str) -> Path:
    ext = ".cc" if compiler == "g++" else ".c"
    (out.parent / (out.name + ext)).write_text(src)
    subprocess.run([compiler, str(out.parent / (out.name + ext)), "-o", str(out), *args], check=True,
                   capture_output=True)
    return out


def _fake_libpython(d: Path, version: str) -> list[str]:
    """A shared library with libpython's soname, and the flags that make a binary need it."""
    soname = f"libpython{version}.so.1.0"
    _cc("gcc", "int fake_py(void) { return 0; }\n", d / soname, "-shared", "-fPIC", f"-Wl,-soname,{soname}")
    return [f"-L{d}", "-Wl,--no-as-needed", f"-l:{soname}"]


@needs_gcc
def test_libpython_check(ws, tmp_path):
    stubs = ws.root / "stubs"
    stubs.mkdir()
    main = "int main(void) { return 0; }\n"
    _cc("gcc", main, stubs / "good", *_fake_libpython(tmp_path, "3.11"))
    _cc("gcc", main, stubs / "other", *_fake_libpython(tmp_path, "3.10"))
    _cc("gcc", main, stubs / "none")
    (stubs / "text").write_text("not a binary\n")
    ws.write("tpbuild.toml", TOML)
    ws.write("stubs/BUILD.toml", "".join(f'[python_stub.{n}]\npython = "3.11"\nprebuilt = "{n}"\n\n'
                                         for n in ("good", "other", "none", "text")))
    r = ws.build("//stubs:good", check=True)
    built = ws.out(f"stubs/good/{STUB}")
    assert built.read_bytes() == (stubs / "good").read_bytes() and built.stat().st_mode & stat.S_IXUSR
    for name, message in [("other", "the stub links libpython3.10.so.1.0, not libpython3.11"),
                          ("none", "the stub links no libpython3.11.so"),
                          ("text", "is not an ELF binary")]:
        r = ws.build(f"//stubs:{name}")
        assert r.returncode == 1 and message in r.output, (name, r.output)
        assert not ws.out(f"stubs/{name}/{STUB}").exists()


# A libstdc++.so.6 as old as GCC 4.9's: it defines GLIBCXX versions up to 3.4.20 only.
_OLD_VERSIONS = "".join(f"GLIBCXX_3.4.{n} {{ global: fake_{n}; }};\n" for n in range(1, 21))


@needs_gcc
def test_glibcxx_check(ws, tmp_path):
    from tpbuild_triton import elf

    ws.write("tpbuild.toml", TOML)
    ws.write("stubs/BUILD.toml", '[python_stub.s]\npython = "3.11"\nprebuilt = "stub"\n')
    stub = _cc("g++", '#include <iostream>\n#include <string>\nint main() { std::cout << std::to_string(42) '
                      '<< std::endl; }\n', ws.root / "stubs" / "stub", *_fake_libpython(tmp_path, "3.11"))
    wanted = elf.required_versions(stub, "libstdc++.so.6")
    assert any(elf._glibcxx_key(v) > (3, 4, 20) for v in wanted), wanted  # the test's premise

    old = tmp_path / "libstdc++.so.6.0.20"
    (tmp_path / "old.map").write_text("GLIBCXX_3.4 { global: fake_0; local: *; };\n" + _OLD_VERSIONS)
    syms = "".join(f"int fake_{n}(void) {{ return {n}; }}\n" for n in range(0, 21))
    _cc("gcc", syms, old, "-shared", "-fPIC", "-Wl,-soname,libstdc++.so.6",
        f"-Wl,--version-script={tmp_path / 'old.map'}")
    # An env archive whose lib/libstdc++.so.6 is a symlink to the old library, as conda ships it.
    (ws.root / "old").mkdir()
    with tarfile.open(ws.root / "old/old-env.tar.gz", "w:gz") as t:
        t.add(old, "lib/libstdc++.so.6.0.20")
        link = tarfile.TarInfo("lib/libstdc++.so.6")
        link.type, link.linkname = tarfile.SYMTYPE, "libstdc++.so.6.0.20"
        t.addfile(link)
    ws.write("old/BUILD.toml", '[triton_model.old]\nversions = ["1"]\nenv = "old-env.tar.gz"\nstub = "//stubs:s"\n')
    ws.write("old/1/model.py", MODEL_PY)
    # An env directory with the system's own libstdc++, which the stub was linked against.
    system = os.path.realpath(subprocess.run(["g++", "-print-file-name=libstdc++.so.6"], capture_output=True,
                                             text=True, check=True).stdout.strip())
    (ws.root / "new/env/lib").mkdir(parents=True)
    shutil.copyfile(system, ws.root / "new/env/lib/libstdc++.so.6")
    ws.write("new/BUILD.toml", '[triton_model.new]\nversions = ["1"]\nenv = "env"\nstub = "//stubs:s"\n')
    ws.write("new/1/model.py", MODEL_PY)
    # An env without its own libstdc++: nothing to check.
    ws.write("plain/env/bin/activate", "")
    ws.write("plain/BUILD.toml", '[triton_model.plain]\nversions = ["1"]\nenv = "env"\nstub = "//stubs:s"\n')
    ws.write("plain/1/model.py", MODEL_PY)

    r = ws.build("//old")
    assert r.returncode == 1, r.output
    assert "old-env.tar.gz/lib/libstdc++.so.6 defines GLIBCXX only up to GLIBCXX_3.4.20" in r.output
    assert "libstdcxx-ng>=" in r.output and not ws.out(f"old/old/{STUB}").exists()

    r = ws.build("//new", "//plain", check=True)
    assert ("//new:new", "StubCheck", "executed") in r.statuses()
    assert not any(a[0] == "//plain:plain" and a[1] == "StubCheck" for a in r.statuses())
    for m in ("new", "plain"):
        assert ws.out(f"{m}/{m}/{STUB}").read_bytes() == stub.read_bytes()
        assert ws.out(f"{m}/{m}/{STUB}").stat().st_mode & stat.S_IXUSR


# -- the seed's scenario on the real server -------------------------------------------------------------

ADD_PY = '''
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "A").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "B").as_numpy()
            version = "%d.%d" % sys.version_info[:2]
            py = np.array([[version.encode()]] * a.shape[0], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUM", (a + b).astype(np.float32)),
                                                         pb_utils.Tensor("PYTHON", py)]))
        return responses
'''

ADD_CONFIG = '''
[triton_model.add311.config]
max_batch_size = 4
input = [{ name = "A", data_type = "TYPE_FP32", dims = [3] }, { name = "B", data_type = "TYPE_FP32", dims = [3] }]
output = [
  { name = "SUM", data_type = "TYPE_FP32", dims = [3] },
  { name = "PYTHON", data_type = "TYPE_STRING", dims = [1] },
]
instance_group = [{ kind = "KIND_CPU", count = 1 }]
'''


def seed_env(ws):
    """Triton 24.10 (default stub: Python 3.10), a venv env of Python 3.11 (numpy<2: r24.10)."""
    ws.write("tpbuild.toml", TOML)
    ws.write("envs/BUILD.toml", f'[python_env.py311]\npython = "3.11"\nmanager = "venv"\ninterpreter = "{SYS_PY}"\n'
                                'pip = ["numpy<2"]\n')
    return ws


@pytest.fixture
def env_in_cache(ws, tmp_path_factory):
    """`ws`'s cache holds `seed_env`'s env, built once per run (`conftest.seeded_cache`): the tests
    using it are about the stub, and take the env as from a CI cache."""
    from conftest import Workspace, prime, seeded_cache

    def make(home: Path) -> Workspace:
        (home / "ws").mkdir()
        return seed_env(Workspace(home / "ws", home / "cache"))

    prime(ws, seeded_cache(tmp_path_factory, "py311-env", make, "//envs:py311"))


def seed_ws(ws, stub_table: str, with_stub: bool = True):
    """`seed_env`, and a model using that env."""
    seed_env(ws)
    ws.write("stubs/BUILD.toml", stub_table)
    ws.write("models/add311/BUILD.toml", '[triton_model.add311]\nversions = ["1"]\nenv = "//envs:py311"\n'
             + ('stub = "//stubs:s"\n' if with_stub else "") + ADD_CONFIG)
    ws.write("models/add311/1/model.py", ADD_PY)
    ws.write("BUILD.toml", '[model_repository.repository]\nmodels = ["//models/..."]\n')


def serve_and_check(ws, tmp_path):
    import numpy as np

    from tpbuild_triton import server

    with server.TritonServer(ws.out("repository"), default_stub_python="3.10",
                             log_path=tmp_path / "server.log") as srv:
        ready = srv.wait_ready(["add311"], timeout=240)
        assert ready == {"add311": True}, srv.log_text()[-4000:]
        a = np.array([[1, 2, 3]], dtype=np.float32)
        out = srv.infer("add311", {"A": a, "B": a * 10})
        np.testing.assert_allclose(out["SUM"], a * 11)
        assert out["PYTHON"].reshape(-1)[0] in (b"3.11", "3.11")


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(SYS_PY), reason="needs /usr/bin/python3.11 (tools/test.sh installs it)")
@pytest.mark.usefixtures("env_in_cache")
def test_seed_scenario_prebuilt_stub_on_the_real_server(ws, tmp_path):
    from tpbuild_triton import server

    stub = server.find_server().stub_for("3.11")  # the nvidia-pytriton wheel's stub for Python 3.11
    (ws.root / "stubs").mkdir()
    shutil.copyfile(stub, ws.root / "stubs" / STUB)
    table = f'[python_stub.s]\npython = "3.11"\nprebuilt = "{STUB}"\n'

    seed_ws(ws, table, with_stub=False)
    r = ws.build()
    assert r.returncode == 2 and "models/add311/BUILD.toml:3:" in r.output
    assert "the env uses Python 3.11 but Triton 24.10 runs Python 3.10" in r.output

    seed_ws(ws, table)
    r = ws.build(check=True)
    assert ("//models/add311:add311", "StubCheck", "executed") in r.statuses()
    assert (ws.out(f"repository/add311/{STUB}").read_bytes() == stub.read_bytes())
    serve_and_check(ws, tmp_path)


@pytest.fixture(scope="session")
def r2410_sources(tmp_path_factory):
    """The real python_backend r24.10 and the trees its build would download, unpacked once."""
    tarball = VENDOR / "triton-python-backend-r24.10-src.tar.xz"
    if not tarball.exists():
        pytest.skip(f"{tarball} is not on this machine")
    root = tmp_path_factory.mktemp("r2410")
    with tarfile.open(tarball) as t:
        t.extractall(root, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
    shutil.copyfile(VENDOR / "offline_boost.cmake", root / "offline_boost.cmake")
    return root


@pytest.mark.server
@pytest.mark.slow
@needs_toolchain
@pytest.mark.usefixtures("env_in_cache")
def test_real_r2410_stub_built_offline_and_served(ws, tmp_path, r2410_sources):
    shutil.copytree(r2410_sources / "python_backend", ws.root / "stubs" / "python_backend")
    s = r2410_sources
    args = [f"FETCHCONTENT_SOURCE_DIR_{name}={s / d}" for name, d in (
        ("REPO-COMMON", "common"), ("REPO-CORE", "core"), ("REPO-BACKEND", "backend"), ("PYBIND11", "pybind11"),
        ("DLPACK", "dlpack"), ("GOOGLETEST", "googletest"))]
    args += ["FETCHCONTENT_FULLY_DISCONNECTED=ON",
             f"CMAKE_PROJECT_tritonpythonbackend_INCLUDE={s / 'offline_boost.cmake'}",
             # No -O3: what this proves is tpbuild's recipe (the real sources configured offline, the
             # stub target built, its libpython checked, the server running it), not the optimizer's
             # work, which is a third of the build's CPU. It also shows cmake_args overriding the recipe.
             "CMAKE_CXX_FLAGS_RELEASE=-DNDEBUG", "CMAKE_C_FLAGS_RELEASE=-DNDEBUG"]
    cmake_args = ", ".join(f'"{a}"' for a in args)
    seed_ws(ws, f'[python_stub.s]\npython = "3.11"\ninterpreter = "{SYS_PY}"\nsource = "python_backend"\n'
                f'cmake_args = [{cmake_args}]\n')
    r = ws.build(check=True, timeout=1200)
    assert ("//stubs:s", "PythonStub", "executed") in r.statuses()
    placed = ws.out(f"repository/add311/{STUB}")
    assert "libpython3.11.so.1.0" in needed(placed)
    serve_and_check(ws, tmp_path)
