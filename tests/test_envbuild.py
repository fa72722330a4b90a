"""The python_env builder: real venv builds with pip from the registry, conda-pack on a conda-layout
prefix made here, and the errors around tools that are missing.

No conda-family tool can run on these machines (their channels are unreachable), so `conda create` itself
is not exercised; what follows it (pip into the prefix, conda-pack, relocation, archive) is.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tpbuild.errors import BuildError, UserError
from tpbuild_triton import archive, envbuild
from tpbuild_triton.envbuild import EnvSpec


def _find_python310() -> str | None:
    try:
        return envbuild.find_interpreter(EnvSpec(python="3.10", manager="venv")).path
    except UserError:
        found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))
        return found[-1] if found else None


@pytest.fixture(scope="session")
def py310() -> str:
    path = _find_python310()
    if path is None:
        pytest.skip("no Python 3.10 on this machine to base venvs on")
    return path


def run_builder(work: Path, spec: dict, out: str = "env.tar.gz", env: dict | None = None) -> subprocess.CompletedProcess:
    (work / "spec.json").write_text(json.dumps(spec))
    p = subprocess.run([sys.executable, "-m", "tpbuild_triton.envbuild", "--spec", "spec.json", "--out", out,
                        "--log", "logs/build.log"], cwd=work, capture_output=True, text=True, timeout=900,
                       env={**os.environ, **(env or {})})
    assert "Traceback" not in p.stderr, p.stderr
    return p


# -- spec and tools -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec, message", [
    ({"python": "3"}, "not a Python minor version"),
    ({"python": "3.10", "manager": "pip"}, "manager"),
    ({"python": "3.10", "manager": "venv", "conda": ["numpy"]}, "conda need a conda-family manager"),
    ({"python": "3.10", "manager": "venv", "environment": "env.yml"}, "environment need a conda-family"),
    ({"python": "3.10", "interpreter": "/usr/bin/python3"}, "interpreter applies to manager = \"venv\" only"),
    ({"python": "3.10", "pip": ["--index-url=http://x"]}, "is an option, not a package"),
    ({"python": "3.10", "requirements": "../outside.txt"}, "relative to the build directory"),
    ({"python": "3.10", "pack_exclude": ["/abs"]}, "patterns match paths inside the env"),
    ({"python": "3.10", "format": "zip"}, "format"),
    ({"python": "3.10", "packages": ["x"]}, "packages"),
    ({"python": "3.10", "locked": "locked.txt"}, "a locked spec has locked and wheels"),
    ({"python": "3.10", "locked": "l.txt", "wheels": "w", "pip": ["x"]}, "neither pip nor requirements"),
    ({"python": "3.10", "locked": "../l.txt", "wheels": "w"}, "relative to the build directory"),
])
def test_invalid_specs_are_user_errors(tmp_path, spec, message):
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(UserError) as e:
        envbuild.load_spec(tmp_path / "spec.json")
    assert message in e.value.message
    assert e.value.exit_code == 2 and str(e.value.location) == str(tmp_path / "spec.json")


@pytest.mark.parametrize("manager", ["conda", "mamba", "micromamba"])
def test_missing_conda_tool_exits_2_and_names_the_venv_alternative(tmp_path, manager):
    env = {k: v for k, v in os.environ.items() if k not in ("CONDA_EXE", "MAMBA_EXE")}
    env["PATH"] = str(tmp_path / "empty-bin")
    (tmp_path / "spec.json").write_text(json.dumps({"python": "3.10", "manager": manager, "conda": ["numpy<2"]}))
    p = subprocess.run([sys.executable, "-m", "tpbuild_triton.envbuild", "--spec", "spec.json", "--out",
                        "env.tar.gz", "--log", "build.log"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert p.returncode == 2, p.stderr
    assert f"`{manager}`, which is not installed" in p.stderr
    assert 'set manager = "venv"' in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "env.tar.gz").exists()


def test_tool_fingerprint_of_a_venv_names_interpreter_pip_and_platform(py310):
    fp = envbuild.tool_fingerprint(EnvSpec(python="3.10", manager="venv", interpreter=py310))
    assert fp["manager"] == "venv" and fp["interpreter"] == py310
    assert fp["python"].startswith("3.10.") and fp["pip"][0].isdigit()
    assert fp["machine"] and fp["libc"].startswith("glibc") and "zlib" in fp["packer"]
    assert json.loads(json.dumps(fp)) == fp


def test_default_interpreter_lookup_skips_a_shim_that_does_not_run(tmp_path, py310, monkeypatch):
    shims, real = tmp_path / "shims", tmp_path / "real"
    shims.mkdir()
    real.mkdir()
    shim = shims / "python3.10"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.10: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    (real / "python3.10").symlink_to(py310)
    spec = EnvSpec(python="3.10", manager="venv")

    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{real}")
    assert envbuild.find_interpreter(spec).path == str(real / "python3.10")

    monkeypatch.setenv("PATH", str(shims))
    with pytest.raises(UserError) as e:
        envbuild.find_interpreter(spec)
    assert "pyenv: python3.10: command not found" in e.value.message and "Set interpreter" in e.value.message

    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="python3.10 is not on PATH"):
        envbuild.tool_fingerprint(spec)


def test_interpreter_without_its_pip_wheel_is_refused(tmp_path):
    """A Python whose ensurepip names a pip wheel that is not there (a distribution that split it off,
    as Debian does into python3-pip-whl) cannot install an env's packages: said before anything runs."""
    fake = tmp_path / "python3.10"
    fake.write_text('#!/bin/sh\necho \'{"version": "3.10.99", "pip": "23.0.1", "pip_wheel": ""}\'\n')
    fake.chmod(0o755)
    with pytest.raises(UserError) as e:
        envbuild.tool_fingerprint(EnvSpec(python="3.10", manager="venv", interpreter=str(fake)))
    assert f"{fake} has no pip-23.0.1 wheel where its ensurepip keeps it" in e.value.message
    assert "python3.X-venv" in e.value.message


def test_interpreter_of_another_version_is_refused(py310):
    other = sys.executable if not sys.version.startswith("3.10.") else None
    if other is None:
        pytest.skip("tests run on 3.10 themselves")
    with pytest.raises(UserError) as e:
        envbuild.tool_fingerprint(EnvSpec(python="3.10", manager="venv", interpreter=other))
    assert f"is Python {sys.version.split()[0]}, not 3.10" in e.value.message
    with pytest.raises(UserError, match="absolute path"):
        envbuild.find_interpreter(EnvSpec(python="3.10", manager="venv", interpreter="bin/python3.10"))


# -- relocation pieces --------------------------------------------------------------------------


def test_relocated_launchers_run_from_anywhere(tmp_path, py310):
    env_bin = tmp_path / "moved env" / "bin"
    env_bin.mkdir(parents=True)
    (env_bin / "python3.10").symlink_to(py310)
    body = b"import sys\nprint(sys.argv[1:])\n"
    shebang = b"#!/scratch/build-1/env/bin/python3.10 -s\n" + body
    pip_long = (b"#!/bin/sh\n'''exec' \"/scratch/build 1/env/bin/python3.10\" \"$0\" \"$@\"\n' '''\n" + body)

    for n, (data, prefix) in enumerate([(shebang, "/scratch/build-1/env"), (pip_long, "/scratch/build 1/env")]):
        new = envbuild.relocatable_script(data, prefix)
        assert new is not None and prefix.encode() not in new and new.endswith(body)
        script = env_bin / f"tool{n}"
        script.write_bytes(new)
        script.chmod(0o755)
        link = tmp_path / f"link{n}"
        link.symlink_to(script)
        p = subprocess.run([str(link), "a b", "c"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        assert p.returncode == 0, p.stderr
        assert p.stdout == "['a b', 'c']\n"

    assert envbuild.relocatable_script(b"#!/usr/bin/env python\n", "/scratch/env") is None
    assert envbuild.relocatable_script(b"#!/scratch/env/bin/sub/python\n", "/scratch/env") is None
    assert envbuild.relocatable_script(b"#!/scratch/env/bin/bash -e\necho\n", "/scratch/env") == \
        b"#!/usr/bin/env bash -e\necho\n"


def test_find_leaks_sees_paths_across_read_chunks_and_in_symlinks(tmp_path):
    needle = "/tmp/build-dir-xyz"
    (tmp_path / "split").write_bytes(b"x" * ((1 << 20) - 5) + needle.encode() + b"tail")
    (tmp_path / "clean").write_bytes(b"/tmp/build-dir-xy" + b"_" * 100)
    (tmp_path / "link").symlink_to(needle + "/bin/python")
    assert envbuild.find_leaks(tmp_path, [needle]) == ["link", "split"]


# -- conda-pack on a conda-layout prefix --------------------------------------------------------

PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
LONG_PLACEHOLDER = "/home/builder/conda-bld/pkg_1700000000/_h_env_placehold" + "_placehold" * 15


def _package(pkgs: Path, dist: str, files: dict[str, tuple[bytes, dict]]) -> Path:
    """An extracted package in the package cache: files as built, with info/paths.json."""
    pkg = pkgs / dist
    if pkg.exists():
        return pkg
    paths = []
    for rel, (data, meta) in files.items():
        p = pkg / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(0o755 if rel.startswith("bin/") else 0o644)
        paths.append({"_path": rel, "path_type": "hardlink", "size_in_bytes": len(data), **meta})
    (pkg / "info").mkdir()
    (pkg / "info" / "paths.json").write_text(json.dumps({"paths": paths, "paths_version": 1}))
    return pkg


def _install(prefix: Path, pkg: Path, name: str, version: str, build: str) -> None:
    """Link a cached package into `prefix` the way conda does: placeholders replaced by the prefix
    (binary ones null-padded to the same length), untouched files hard-linked to the cache."""
    paths = json.loads((pkg / "info" / "paths.json").read_text())["paths"]
    for entry in paths:
        src, dst = pkg / entry["_path"], prefix / entry["_path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        placeholder = entry.get("prefix_placeholder")
        if placeholder is None:
            os.link(src, dst)
            continue
        data = src.read_bytes()
        if entry["file_mode"] == "text":
            data = data.replace(placeholder.encode(), str(prefix).encode())
        else:
            pad = b"\0" * (len(placeholder) - len(str(prefix)))
            data = data.replace(placeholder.encode() + b"\0", str(prefix).encode() + pad + b"\0")
        dst.write_bytes(data)
        os.chmod(dst, src.stat().st_mode)
    record = {"name": name, "version": version, "build": build, "build_number": 0,
              "url": f"https://conda.anaconda.org/conda-forge/linux-64/{name}-{version}-{build}.conda",
              "files": [e["_path"] for e in paths], "link": {"source": str(pkg), "type": 1},
              "extracted_package_dir": str(pkg), "package_tarball_full_path": f"{pkg}.conda"}
    (prefix / "conda-meta").mkdir(exist_ok=True)
    (prefix / "conda-meta" / f"{name}-{version}-{build}.json").write_text(json.dumps(record))


def fabricate_conda_env(prefix: Path, pkgs: Path) -> None:
    """What `conda create -p PREFIX python=3.10 mytool` and then `pip install pipped` leave behind."""
    libpython = b"\x7fELF\x02\x01" + b"\0" * 10 + LONG_PLACEHOLDER.encode() + b"/lib\0" + b"\x01\x02" * 20
    python = _package(pkgs, "python-3.10.13-h0", {
        "lib/libpython3.10.so.1.0": (libpython, {"prefix_placeholder": LONG_PLACEHOLDER, "file_mode": "binary"}),
        "lib/python3.10/_sysconfigdata__linux_x86_64-linux-gnu.py":
            (f"build_time_vars = {{'prefix': '{PLACEHOLDER}'}}\n".encode(),
             {"prefix_placeholder": PLACEHOLDER, "file_mode": "text"}),
        "lib/python3.10/os.py": (b"sep = '/'\n", {}),
        "lib/python3.10/__pycache__/os.cpython-310.pyc": (b"\x6f\x0d\x0d\x0a" + b"\0" * 12, {}),
        "bin/2to3-3.10": (f"#!{PLACEHOLDER}/bin/python3.10\nimport sys\n".encode(),
                          {"prefix_placeholder": PLACEHOLDER, "file_mode": "text"}),
    })
    mytool = _package(pkgs, "mytool-1.0-0", {
        "share/mytool/data.txt": (b"shared data\n", {}),
        "bin/mytool-config": (f"#!/bin/sh\necho {PLACEHOLDER}/include\n".encode(),
                              {"prefix_placeholder": PLACEHOLDER, "file_mode": "text"}),
    })
    _install(prefix, python, "python", "3.10.13", "h0")
    _install(prefix, mytool, "mytool", "1.0", "0")
    (prefix / "conda-meta" / "history").write_text(
        f"==> 2024-05-01 10:11:12 <==\n# cmd: conda create -p {prefix} python=3.10 mytool\n+conda-forge::python-3.10.13-h0\n")
    site = prefix / "lib/python3.10/site-packages"
    (site / "pipped").mkdir(parents=True)
    (site / "pipped/__init__.py").write_text("VALUE = 42\n")
    (site / "pipped/__pycache__").mkdir()
    (site / "pipped/__pycache__/__init__.cpython-310.pyc").write_bytes(b"\x6f\x0d\x0d\x0a" + b"\0" * 12)
    script = f"#!{prefix}/bin/python3.10\nfrom pipped import VALUE\nprint(VALUE)\n".encode()
    (prefix / "bin/pipped").write_bytes(script)
    (prefix / "bin/pipped").chmod(0o755)
    digest = base64.urlsafe_b64encode(hashlib.sha256(script).digest()).rstrip(b"=").decode()
    dist = site / "pipped-1.0.dist-info"
    dist.mkdir()
    (dist / "RECORD").write_text(
        f"../../../bin/pipped,sha256={digest},{len(script)}\r\n"
        "pipped/__init__.py,sha256=abc,11\r\npipped/__pycache__/__init__.cpython-310.pyc,,\r\n"
        "pipped-1.0.dist-info/RECORD,,\r\n")


def test_conda_pack_step_gives_the_same_relocatable_archive_from_any_build_path(tmp_path):
    pytest.importorskip("conda_pack")
    pkgs = tmp_path / "pkgs"
    blobs = []
    for n, where in enumerate(["b1/scratch", "b2/a-longer/scratch-directory"]):
        build_dir = tmp_path / where
        prefix = build_dir / "env"
        fabricate_conda_env(prefix, pkgs)
        packed = build_dir / "packed"
        envbuild.pack_conda(prefix, packed)
        envbuild.make_reproducible(packed, envbuild.CONDA_DEST_PREFIX)
        assert envbuild.find_leaks(packed, [str(build_dir)]) == []
        assert envbuild.find_leaks(packed, [str(pkgs)]) == [], "conda-meta must not name the package cache"
        archive.write_tar_gz(packed, tmp_path / f"{n}.tar.gz")
        blobs.append((tmp_path / f"{n}.tar.gz").read_bytes())
    assert blobs[0] == blobs[1]

    dest = envbuild.CONDA_DEST_PREFIX
    with tarfile.open(tmp_path / "0.tar.gz") as tar:
        names = tar.getnames()
        read = lambda name: tar.extractfile(name).read()  # noqa: E731
        assert "bin/activate" in names and "bin/deactivate" in names and "bin/conda-unpack" not in names
        assert not [n for n in names if "__pycache__" in n]
        assert read("conda-meta/history") == b""
        assert json.loads(read("conda-meta/python-3.10.13-h0.json"))["link"]["source"] == ""
        sysconfig = read("lib/python3.10/_sysconfigdata__linux_x86_64-linux-gnu.py")
        assert sysconfig == f"build_time_vars = {{'prefix': '{dest}'}}\n".encode()
        lib = read("lib/libpython3.10.so.1.0")
        assert len(lib) == 16 + len(LONG_PLACEHOLDER) + 5 + 40 and (dest + "/lib\0").encode() in lib
        assert read("bin/mytool-config") == f"#!/bin/sh\necho {dest}/include\n".encode()
        pipped = read("bin/pipped")
        assert pipped.startswith(b"#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")/python3.10\" \"$0\"")
        assert read("bin/2to3-3.10").startswith(b"#!/bin/sh\n'''exec'")
        record = read("lib/python3.10/site-packages/pipped-1.0.dist-info/RECORD").decode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(pipped).digest()).rstrip(b"=").decode()
        assert record.splitlines() == [f"../../../bin/pipped,sha256={digest},{len(pipped)}",
                                       "pipped/__init__.py,sha256=abc,11", "pipped-1.0.dist-info/RECORD,,"]


def test_dir_output_of_a_conda_env_leaves_the_package_cache_alone(tmp_path):
    pytest.importorskip("conda_pack")
    pkgs = tmp_path / "pkgs"
    prefix = tmp_path / "build" / "env"
    fabricate_conda_env(prefix, pkgs)
    cached = pkgs / "mytool-1.0-0/share/mytool/data.txt"
    os.chmod(cached, 0o664)
    os.utime(cached, (1_700_000_000, 1_700_000_000))
    packed = tmp_path / "build" / "packed"
    envbuild.pack_conda(prefix, packed)
    out = tmp_path / "out" / "env"
    out.parent.mkdir()
    envbuild.emit(packed, out, "dir")
    st = cached.stat()
    assert (st.st_mode & 0o777, st.st_mtime) == (0o664, 1_700_000_000)
    shipped = (out / "share/mytool/data.txt").stat()
    assert (shipped.st_mode & 0o777, shipped.st_mtime, shipped.st_nlink) == (0o644, 0, 1)


# -- real venv builds ---------------------------------------------------------------------------

NUMPY_TESTS = "lib/*/site-packages/numpy/*/tests"
# A pyc the compile step makes (pack_exclude applies after it too) of a module nothing imports.
CONFTEST_PYC = "lib/*/site-packages/numpy/__pycache__/conftest.*.pyc"


def write_local_package(work: Path) -> None:
    """A package installed from a path in the scratch directory, as requirements files often do."""
    pkg = work / "localpkg"
    (pkg / "localpkg").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=61"]\n'
                                        'build-backend = "setuptools.build_meta"\n'
                                        '[project]\nname = "localpkg"\nversion = "0.1"\n')
    (pkg / "localpkg" / "__init__.py").write_text("ANSWER = 42\n")


@pytest.fixture(scope="module")
def venv_builds(tmp_path_factory, py310):
    """Two builds of one spec in different directories: a tar.gz with an empty pip cache and pip run
    from its wheel (the user cache cannot be written: no compiled copy of pip), and a format = "dir"
    build with the first's pip cache, pip run from a compiled copy made in a new user cache, a poisoned
    user pip config and PIP_* environment. The spec installs from the registry (pip and a requirements
    file) and from a local path."""
    builds = {}
    for name, fmt in (("a", "tar.gz"), ("dir", "dir")):
        work = tmp_path_factory.mktemp(f"envbuild-{name}")
        (work / "requirements.txt").write_text("six==1.17.0\n./localpkg\n")
        write_local_package(work)
        spec = {"python": "3.10", "manager": "venv", "interpreter": py310, "pip": ["numpy<2"],
                "requirements": "requirements.txt", "pack_exclude": [NUMPY_TESTS, CONFTEST_PYC], "format": fmt}
        if name == "a":
            (work / "not-a-dir").write_text("")
            env = {"XDG_CACHE_HOME": str(work / "not-a-dir" / "cache"), "PIP_CACHE_DIR": str(work / "cache" / "pip")}
        else:
            env = {"XDG_CACHE_HOME": str(builds["a"].parent / "cache")}
        if name == "dir":
            home = work / "home"
            (home / ".config/pip").mkdir(parents=True)
            (home / ".config/pip/pip.conf").write_text("[global]\nindex-url = http://127.0.0.1:9/simple\n")
            env.update(HOME=str(home), PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_NO_INDEX="1")
        out = "env.tar.gz" if fmt == "tar.gz" else "env"
        p = run_builder(work, spec, out, env)
        log = (work / "logs/build.log").read_text()
        assert p.returncode == 0, p.stderr + log[-3000:]
        pip = re.search(r"^== pip install: \S+ (\S+)/pip ", log, re.M)[1]
        assert pip.endswith(".whl") if name == "a" else pip.startswith(env["XDG_CACHE_HOME"] + "/tpbuild-tools/")
        builds[name] = work / out
    return builds


@pytest.mark.slow
def test_venv_builds_are_byte_identical(venv_builds, tmp_path):
    """The dir build archived as a tar.gz build archives it: the same bytes, though built elsewhere, with
    a warm pip cache, pip run from its compiled copy rather than its wheel, and hostile user config.
    (Through the CLI: tests/test_env_rule.py.)"""
    archive.write_tar_gz(venv_builds["dir"], tmp_path / "dir.tar.gz")
    assert (tmp_path / "dir.tar.gz").read_bytes() == venv_builds["a"].read_bytes()


@pytest.mark.slow
def test_venv_tarball_works_where_it_is_unpacked(venv_builds, tmp_path, py310):
    env_dir = tmp_path / "another place" / "model env"
    env_dir.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(venv_builds["a"]), "-C", str(env_dir)], check=True)
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    p = subprocess.run(
        ["bash", "-c", f'source "{env_dir}/bin/activate" && echo "$VIRTUAL_ENV" && command -v python && '
                       'python -c "import six, numpy, sys, localpkg; print(numpy.__version__, six.__version__, sys.prefix)"'],
        cwd="/", capture_output=True, text=True, env=clean)
    assert p.returncode == 0, p.stderr
    venv, python, versions = p.stdout.splitlines()
    assert venv == str(env_dir) and python == f"{env_dir}/bin/python"
    numpy_version, six_version, prefix = versions.split(" ", 2)
    assert numpy_version.startswith("1.") and six_version == "1.17.0" and prefix == str(env_dir)

    # Launchers run without activation, from wherever the env landed.
    p = subprocess.run([str(env_dir / "bin/f2py"), "-v"], capture_output=True, text=True, env=clean)
    assert p.returncode == 0 and p.stdout.strip() == numpy_version, p.stderr
    # The packages' metadata is whole, as the pip that installed them (run from its wheel) sees it.
    wheel = envbuild.find_interpreter(EnvSpec(python="3.10", manager="venv", interpreter=py310)).pip_wheel
    p = subprocess.run([str(env_dir / "bin/python"), f"{wheel}/pip", "check"], capture_output=True, text=True, env=clean)
    assert p.returncode == 0, p.stdout + p.stderr

    # Importing writes nothing: every pyc is valid where it landed (tar restored all mtimes to 0).
    p = subprocess.run([str(env_dir / "bin/python"), "-c", "import numpy, six"], env=clean, capture_output=True)
    assert p.returncode == 0, p.stderr
    touched = [n.rel for n in archive.walk(env_dir) if n.st.st_mtime != 0]
    assert touched == []


@pytest.mark.slow
def test_venv_tarball_contents(venv_builds):
    with tarfile.open(venv_builds["a"]) as tar:
        names = tar.getnames()
        six_pyc = tar.extractfile("lib/python3.10/site-packages/__pycache__/six.cpython-310.pyc").read()
        cfg = tar.extractfile("pyvenv.cfg").read().decode()
        record = tar.extractfile("lib/python3.10/site-packages/six-1.17.0.dist-info/RECORD").read().decode()
    assert names[:2] == ["bin", "bin/Activate.ps1"] and "bin/activate" in names
    assert "bin/activate.csh" not in names and "bin/activate.fish" not in names
    # What the spec installs, and nothing to install more with: no pip, no setuptools.
    site = "lib/python3.10/site-packages/"
    assert not [n for n in names if n.startswith(("bin/pip", f"{site}pip", f"{site}setuptools", f"{site}_distutils"))]
    assert not [n for n in names if n.startswith("lib/python3.10/site-packages/numpy/core/tests")]
    assert "lib/python3.10/site-packages/numpy/core/__init__.py" in names
    assert int.from_bytes(six_pyc[4:8], "little") == 0b11, "pycs must be checked-hash (PEP 552)"
    assert "home = " in cfg and "command" not in cfg
    assert "__pycache__" not in record and "six.py," in record
    assert "lib/python3.10/site-packages/localpkg/__init__.py" in names
    assert "lib/python3.10/site-packages/numpy/conftest.py" in names
    assert "lib/python3.10/site-packages/numpy/__pycache__/__init__.cpython-310.pyc" in names
    assert "lib/python3.10/site-packages/numpy/__pycache__/conftest.cpython-310.pyc" not in names
    assert not [n for n in names if n.endswith("direct_url.json")], "file:// records name the scratch directory"


@pytest.mark.slow
def test_no_build_path_anywhere_in_the_env(venv_builds, tmp_path):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    subprocess.run(["tar", "-xzf", str(venv_builds["a"]), "-C", str(env_dir)], check=True)
    assert envbuild.find_leaks(env_dir, [str(venv_builds["a"].parent)]) == []


@pytest.mark.slow
def test_dir_format_is_the_tree_normalised(venv_builds):
    """Its entries are the tarball's (test_venv_builds_are_byte_identical), with the archive's modes and mtimes."""
    out = venv_builds["dir"]
    for n in archive.walk(out):
        assert n.st.st_mtime == 0 and (n.path.is_symlink() or n.st.st_mode & 0o7777 in (0o644, 0o755)), n.rel
    p = subprocess.run(["bash", "-c", f'source "{out}/bin/activate" && python -c "import numpy, six"'],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr


@pytest.mark.slow
def test_checks_name_what_is_wrong(venv_builds, tmp_path):
    def copy() -> Path:
        dst = tmp_path / f"env{len(list(tmp_path.iterdir()))}"
        shutil.copytree(venv_builds["dir"], dst, symlinks=True)
        return dst

    envbuild.check_env(copy(), "3.10")
    with pytest.raises(BuildError, match="the env's Python is 3.10, but python = \"3.11\""):
        envbuild.check_env(copy(), "3.11")
    env = copy()
    (env / "bin/activate").unlink()
    with pytest.raises(BuildError, match="bin/activate is missing at the root"):
        envbuild.check_env(env, "3.10")
    env = copy()
    shutil.rmtree(env / "lib/python3.10/site-packages/numpy")
    with pytest.raises(BuildError, match="numpy is not importable in the env"):
        envbuild.check_env(env, "3.10")


@pytest.mark.slow
def test_env_without_numpy_fails_the_build(tmp_path, py310):
    p = run_builder(tmp_path, {"python": "3.10", "manager": "venv", "interpreter": py310, "pip": ["six"]})
    assert p.returncode == 1
    assert "numpy is not importable in the env" in p.stderr and "numpy<2" in p.stderr
    assert not (tmp_path / "env.tar.gz").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("envbuild-")] == []


@pytest.mark.slow
def test_pip_failure_names_the_log_and_keeps_the_tools_output_there(tmp_path, py310):
    p = run_builder(tmp_path, {"python": "3.10", "manager": "venv", "interpreter": py310,
                               "pip": ["numpy<2", "tpbuild-no-such-package-zz9"]})
    log = tmp_path / "logs" / "build.log"
    assert p.returncode == 1
    assert f"pip install failed (exit 1); full log: {log}" in p.stderr
    assert "tpbuild-no-such-package-zz9" in p.stderr  # the log's tail is shown too
    assert "No matching distribution found for tpbuild-no-such-package-zz9" in log.read_text()


@pytest.mark.slow
def test_editable_install_fails_the_build_naming_the_file(tmp_path, py310):
    write_local_package(tmp_path)
    (tmp_path / "requirements.txt").write_text("-e ./localpkg\n")
    p = run_builder(tmp_path, {"python": "3.10", "manager": "venv", "interpreter": py310, "pip": ["numpy<2"],
                               "requirements": "requirements.txt"})
    assert p.returncode == 1, p.stderr
    assert f"the env still names its build directory {tmp_path} in " in p.stderr
    # setuptools writes a .pth or a finder module, depending on its version and the project layout.
    assert "lib/python3.10/site-packages/__editable__" in p.stderr
    assert "without -e" in p.stderr
