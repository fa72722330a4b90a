"""Builds (or verifies) the `triton_python_backend_stub` of a `python_stub` target.

Run as the target's action, in a scratch directory holding the spec and the sources:
    python -m tpbuild_triton.stubbuild --spec spec.json --out OUTPATH --log LOGFILE
Exit 0 built, 1 the build or a check failed (the message names the log), 2 bad spec or missing tool.

The seed's recipe, automated: take the python_backend sources (`src/`, a checkout of the workspace; or
a clone of `git` at the commit analysis resolved; or none for `prebuilt`), configure them in a scratch
build directory with the `rYY.MM` tags of the server release, `TRITON_ENABLE_GPU`, the interpreter as
`PYTHON_EXECUTABLE` and the user's `cmake_args`, build only the target `triton-python-backend-stub`,
then check the binary's ELF dynamic section (see `elf`) instead of reading `ldd` by eye.

The probes below run twice: at analysis (a missing tool is exit 2 before anything runs, and the tools'
versions enter the action key) and again here, where they must still hold.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tpbuild.plugin import BuildError, UserError, at

from . import elf, worker

STUB = "triton_python_backend_stub"
TARGET = "triton-python-backend-stub"


def apt_hint(python: str) -> str:
    """Everything the python_backend build needs from Debian/Ubuntu (the seed's list, completed)."""
    return (f"apt-get install cmake g++ make rapidjson-dev libarchive-dev zlib1g-dev libboost-dev "
            f"python{python}-dev")


class StubSpec(BaseModel):
    """What the builder needs; `source` and `prebuilt` are paths relative to the directory it runs in,
    tool paths are the ones analysis probed (and keyed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    python: str
    kind: Literal["source", "git", "prebuilt"]
    source: str | None = None
    git: str | None = None
    commit: str | None = None
    prebuilt: str | None = None
    branch: str | None = None
    gpu: bool = False
    cmake_args: tuple[str, ...] = ()
    interpreter: str | None = None


# -- tools ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PythonInfo:
    """The interpreter the stub embeds: its ABI decides which libpython the binary links."""

    path: str
    version: str
    soabi: str
    ldversion: str
    shared: bool
    include: str


_PROBE = ("import json, sys, sysconfig; v = sysconfig.get_config_var; print(json.dumps(dict("
          "version=sys.version.split()[0], soabi=v('SOABI') or '', ldversion=v('LDVERSION') or '', "
          "shared=bool(v('Py_ENABLE_SHARED')), include=sysconfig.get_path('include') or '')))")


def find_python(python: str, interpreter: str | None) -> PythonInfo:
    """The interpreter to build against: `interpreter`, else the first `python3.X` on PATH that can
    (shared libpython and headers): a static build (pyenv's default) would give a stub without libpython."""
    candidates = worker.python_candidates(python, interpreter,
                                          f"Debian: apt-get install python{python}-dev gives /usr/bin/python{python}")
    problems = []
    for path in candidates:
        probed = worker.probe(path, _PROBE)
        if isinstance(probed, str):
            problems.append(f"{path} {probed}")
            continue
        info = PythonInfo(path=path, **probed)
        if worker.minor(info.version) != python:
            problems.append(f"{path} is Python {info.version}, not {python}")
        elif not info.shared:
            problems.append(f"{path} has no shared libpython{python}.so (a static build)")
        elif not os.path.isfile(os.path.join(info.include, "Python.h")):
            problems.append(f"{path} has no headers (no {info.include}/Python.h)")
        else:
            return info
    found = "; ".join(problems) if problems else f"no python{python} on PATH"
    raise UserError(f"the stub needs a Python {python} with a shared libpython and its headers: {found}. "
                    f"Install one ({apt_hint(python)}) and set interpreter = \"/usr/bin/python{python}\" if "
                    "another python comes first on PATH")


def _first_line(path: str) -> str:
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"{path} does not run: {e}") from None
    return (r.stdout.strip().splitlines() or [f"exit {r.returncode}"])[0]


def build_tools(python: str) -> dict[str, str]:
    """cmake, make and the C and C++ compilers (CC/CXX if set, as cmake itself would choose)."""
    wanted = {"cmake": ["cmake"], "make": ["make"],
              "cc": [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc"],
              "cxx": [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++"]}
    found: dict[str, str] = {}
    for role, names in wanted.items():
        path = next(filter(None, (shutil.which(n) for n in names)), None)
        if path:
            found[role] = path
    missing = [names[0] for role, names in wanted.items() if role not in found]
    if missing:
        raise UserError(f"building a stub needs {', '.join(missing)}, not found on PATH. Install the build "
                        f"tools and the python_backend's dependencies: {apt_hint(python)}")
    return found


def tool_fingerprint(spec: StubSpec) -> dict:
    """What besides the spec and the sources decides the binary: the tools' versions, the Python's ABI,
    the platform. A prebuilt stub is only checked, by code the rule version covers."""
    if spec.kind == "prebuilt":
        return {}
    fp: dict = {role: f"{path}: {_first_line(path)}" for role, path in build_tools(spec.python).items()}
    info = find_python(spec.python, spec.interpreter)
    fp["python"] = {k: v for k, v in asdict(info).items() if k != "include"}
    if spec.kind == "git":
        fp["git"] = _first_line(_git())
    libc, libc_version = platform.libc_ver()
    fp.update(machine=platform.machine(), libc=f"{libc} {libc_version}".strip())
    return fp


def _git() -> str:
    git = shutil.which("git")
    if git is None:
        raise UserError("git sources need git, which is not on PATH: apt-get install git")
    return git


def resolve_ref(url: str, ref: str) -> str:
    """The commit `ref` (a branch, tag or commit) names in `url` now: it goes into the key, so a moved
    branch rebuilds and an unchanged one is a cache hit without cloning."""
    if re.fullmatch(r"[0-9a-f]{40}", ref):
        return ref
    try:
        r = subprocess.run([_git(), "ls-remote", url, ref, f"{ref}^{{}}"], capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except subprocess.TimeoutExpired:
        raise UserError(f"git ls-remote {url} timed out: check the network, or use source = a local checkout") from None
    if r.returncode != 0:
        raise UserError(f"cannot read {url}: {(r.stderr.strip().splitlines() or ['git ls-remote failed'])[-1]}")
    refs = dict(reversed(line.split("\t", 1)) for line in r.stdout.splitlines() if "\t" in line)
    # A peeled tag (`^{}`) names the commit; a branch or lightweight tag names it directly.
    for name in (f"refs/tags/{ref}^{{}}", f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
        if name in refs:
            return refs[name]
    raise UserError(f"{url} has no branch or tag {ref!r}: set ref to one it has (or a full commit hash)")


# -- the build ------------------------------------------------------------------------------------

# cmake's messages for a missing dependency -> what provides it on Debian/Ubuntu.
_PACKAGE_HINTS = {"rapidjson": "rapidjson-dev", "libarchive": "libarchive-dev", "zlib": "zlib1g-dev",
                  "boost": "libboost-dev", "python": "python{python}-dev", "pythonlibs": "python{python}-dev",
                  "python.h": "python{python}-dev",
                  "threads": "libc6-dev"}
_MISSING = re.compile(r'Could NOT find (\w+)|package configuration file provided by\s+"(\w+)"|'
                      r"No CMAKE_(C|CXX)_COMPILER could be found|(Python\.h): No such file")


def _missing_dependency(log_text: str, python: str) -> str | None:
    """What a failed configure or build lacked, and how to get it, read from its output."""
    for m in _MISSING.finditer(log_text):
        if m[3]:
            return f"no {'C++' if m[3] == 'CXX' else 'C'} compiler: {apt_hint(python)}"
        name = m[1] or m[2] or m[4]
        pkg = _PACKAGE_HINTS.get(name.lower(), "").format(python=python)
        return f"{name} is missing: " + (f"apt-get install {pkg}" if pkg else
                                         f"install its development package ({apt_hint(python)})")
    return None


def _cmake_args(spec: StubSpec, src: Path, build: Path, workdir: Path) -> list[str]:
    flags = f"-ffile-prefix-map={workdir}=/tpbuild"  # no scratch path in the binary: equal builds, equal bytes
    args = [f"-S{src}", f"-B{build}", "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_INSTALL_PREFIX={build / 'install'}",
            f"-DTRITON_ENABLE_GPU={'ON' if spec.gpu else 'OFF'}",
            f"-DCMAKE_C_FLAGS_INIT={flags}", f"-DCMAKE_CXX_FLAGS_INIT={flags}",
            # Both spellings: pybind11 2.10 reads the first, FindPython the second; without them it may
            # take another python3 on PATH than the one whose libpython the stub must embed.
            f"-DPYTHON_EXECUTABLE={spec.interpreter}", f"-DPython_EXECUTABLE={spec.interpreter}"]
    args += [f"-DTRITON_{repo}_REPO_TAG={spec.branch}" for repo in ("BACKEND", "COMMON", "CORE")]
    return args + [a if a.startswith("-") else f"-D{a}" for a in spec.cmake_args]


def _run_step(log: worker.StepLog, step: str, argv: list[str], env: dict[str, str], cwd: Path, python: str) -> None:
    if log.run(step, argv, env=env, cwd=cwd, check=False) == 0:
        return
    tail = log.tail()
    hint = _missing_dependency(log.text(), python)
    raise BuildError(f"{step} failed" + (f": {hint}" if hint else "") + f"; full log: {log.path}", detail=tail)


def _find_binary(build: Path) -> Path:
    found = sorted((p for p in build.rglob(STUB) if p.is_file() and os.access(p, os.X_OK)),
                   key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise BuildError(f"the build finished without a {STUB}: is this a python_backend checkout? (its "
                         f"CMakeLists.txt must define the target {TARGET})")
    return found[0]


def _clone(spec: StubSpec, dest: Path, log: worker.StepLog, cwd: Path) -> None:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    git = _git()
    _run_step(log, "git clone", [git, "clone", "--quiet", "--no-checkout", spec.git, str(dest)], env, cwd, spec.python)
    _run_step(log, "git checkout", [git, "-C", str(dest), "checkout", "--quiet", spec.commit], env, cwd, spec.python)


def build(spec: StubSpec, out: Path, log_path: Path, workdir: Path) -> None:
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(workdir).absolute()
    fingerprint = tool_fingerprint(spec)  # tools still there and the same kind as analysis saw
    log = worker.StepLog(log_path)
    try:
        log.note(f"tpbuild stubbuild: {spec.model_dump_json()}")
        log.note(f"tools: {json.dumps(fingerprint, sort_keys=True)}")
        if spec.kind == "prebuilt":
            binary = workdir / spec.prebuilt
        else:
            src = workdir / spec.source if spec.kind == "source" else workdir / "clone"
            if spec.kind == "git":
                _clone(spec, src, log, workdir)
            if not (src / "CMakeLists.txt").is_file():
                raise BuildError("the stub sources have no CMakeLists.txt at their root: point source (or git) "
                                 "at a python_backend checkout")
            build_dir = workdir / "build"
            env = {**worker.scrubbed_env(), "HOME": str(workdir / "tmp")}  # no user cmake package registry
            _run_step(log, "cmake configure", ["cmake", *_cmake_args(spec, src, build_dir, workdir)],
                      env, workdir, spec.python)
            jobs = str(len(os.sched_getaffinity(0)))
            _run_step(log, "cmake build", ["cmake", "--build", str(build_dir), "--target", TARGET, "-j", jobs],
                      env, workdir, spec.python)
            binary = _find_binary(build_dir)
        log.note("check libpython")
        lib = elf.check_libpython(binary, spec.python)
        log.note(f"the stub links {lib}")
        shutil.copyfile(binary, out)
        os.chmod(out, 0o755)
        log.note(f"built {out}")
    finally:
        log.close()


def load_spec(path: Path) -> StubSpec:
    try:
        return StubSpec.model_validate(json.loads(Path(path).read_text()))
    except (OSError, ValueError, ValidationError) as e:
        raise UserError(f"invalid python_stub spec: {e}", at(path)) from None


def main(argv: list[str] | None = None) -> int:
    return worker.main(argv, prog="stubbuild", description="Build and check a python_stub target's stub.",
                       out_help="where the checked stub goes", load_spec=load_spec, build=build)


if __name__ == "__main__":
    sys.exit(main())
