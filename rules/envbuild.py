"""Builds the Python execution environment of a `python_env` target: a relocatable, checked,
byte-reproducible env archive (or directory) for Triton's `EXECUTION_ENV_PATH`.

Run as the target's action, in a scratch directory holding the spec's input files:
    python -m tpbuild_triton.envbuild --spec spec.json --out OUTPATH --log LOGFILE
Exit 0 built, 1 the build failed (the message names the log), 2 bad spec or missing tool.

The steps, for both kinds of manager:
1. create the env in a private build directory: `conda|mamba|micromamba create -p` (then `env update -f
   environment.yml`), or `python3.X -m venv --without-pip`; then `pip install` the pip specs inside it
   (a venv's with the base interpreter's bundled pip wheel: the venv itself gets no pip or setuptools);
2. make it relocatable: conda envs through conda-pack with every prefix rewritten to the fixed
   `CONDA_DEST_PREFIX`; venvs with our own `bin/activate` that finds the env from its own location.
   In both, launchers in bin/ whose shebang names the build prefix start the env's own interpreter
   relative to the script instead. A venv's python symlinks keep pointing at its base interpreter
   (`home` in pyvenv.cfg): it runs only where that interpreter exists at the same path.
3. bytecode: every `__pycache__` is dropped and the tree recompiled with *checked-hash* pycs
   (PEP 552) under PYTHONHASHSEED=0, and `__pycache__` lines leave the RECORD files. Timestamp pycs
   would go stale the moment the archive fixes all mtimes (every import would recompile, and fail to
   cache where the env directory is read-only); shipping no pycs at all would make every model load
   compile numpy & co. Checked-hash pycs are valid wherever the sources are unchanged, and still
   notice an edited source. marshal's reference flags, which depend on the compiling process, are
   then made canonical (see `pyc`);
4. `pack_exclude` removes entries (before step 3 and again after it), then the checks: `bin/activate` at the root, the env's Python is
   `python`, numpy imports (the backend needs it), and the path of the directory the builder runs
   in appears nowhere in the tree (it would break the env elsewhere and make two builds differ).
   That directory must therefore be a scratch directory of its own, as the executor's are;
5. a deterministic tar.gz (see `archive`), or the normalised tree itself for format = "dir".

Isolation: tools run with PYTHONNOUSERSITE=1, a HOME and XDG_CONFIG_HOME inside the build directory
(so no user-level pip or conda config: ~/.config/pip, ~/.pip, ~/.condarc), and without the caller's
PIP_* and PYTHON* variables. Machine-wide config (/etc/pip.conf, /etc/xdg/pip, a conda install's own
condarc) stays: that is how a machine reaches its registry (certificates, proxies, mirrors). pip's
download cache stays the user's (a cache, not config: it changes speed, not results).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from tpbuild.plugin import BuildError, UserError, at, process_dir, sweep

from . import archive, pyc, worker
from .settings import PythonVersion

# Where conda-pack pretends the env lives. Triton unpacks envs to a random /tmp/python_env_* and never
# runs conda-unpack, so no path is right; a fixed one keeps the build path out of the archive and the
# archive the same wherever it was built. It must be shorter than any prefix placeholder a binary
# package was built with (the oldest, /opt/anaconda1anaconda2anaconda3, has 32 characters).
CONDA_DEST_PREFIX = "/opt/tpbuild/env"

# For wheels built from sdists during the install (1980-01-01: zip cannot store earlier dates).
SOURCE_DATE_EPOCH = "315532800"



class EnvSpec(BaseModel):
    """The attributes of `python_env`; `requirements` and `environment` are paths relative to the
    directory the builder runs in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    python: PythonVersion
    manager: Literal["conda", "mamba", "micromamba", "venv"] = "conda"
    conda: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    requirements: str | None = None
    environment: str | None = None
    interpreter: str | None = None
    pack_exclude: tuple[str, ...] = ()
    format: Literal["tar.gz", "dir"] = "tar.gz"
    # A locked env: `locked` is a requirements file of `name==version --hash=...` lines and `wheels` the
    # directory holding exactly those wheels; they replace `pip` and `requirements` (see `pylock`).
    locked: str | None = None
    wheels: str | None = None

    @field_validator("conda", "channels", "pip")
    @classmethod
    def _specs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for s in v:
            if not s.strip():
                raise ValueError("empty entry: remove it")
            if s.startswith("-"):
                raise ValueError(f"{s!r} is an option, not a package: options belong in a requirements "
                                 "file (pip) or environment.yml (conda)")
        return v

    @field_validator("requirements", "environment", "locked", "wheels")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is not None and (os.path.isabs(v) or ".." in Path(v).parts):
            raise ValueError(f"{v!r} must be a path relative to the build directory")
        return v

    @field_validator("pack_exclude")
    @classmethod
    def _globs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for g in v:
            if not g or g.startswith("/"):
                raise ValueError(f"{g!r}: patterns match paths inside the env, like \"lib/*/tests\"")
        return v

    @model_validator(mode="after")
    def _manager_attrs(self) -> "EnvSpec":
        if (self.locked is None) != (self.wheels is None) or (self.locked and (self.pip or self.requirements)):
            raise ValueError("a locked spec has locked and wheels, and neither pip nor requirements")
        if self.manager == "venv":
            conda_only = [n for n in ("conda", "channels", "environment") if getattr(self, n)]
            if conda_only:
                raise ValueError(f"{', '.join(conda_only)} need a conda-family manager, but manager = \"venv\": "
                                 "move the packages to pip, or set manager = \"conda\"")
        elif self.interpreter is not None:
            raise ValueError(f"interpreter applies to manager = \"venv\" only ({self.manager} installs its own "
                             "Python): remove it")
        return self


def load_spec(path: Path) -> EnvSpec:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the env spec: {e}", at(path)) from None
    try:
        return EnvSpec.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'spec'}: {err['msg']}" for err in e.errors())
        raise UserError(f"invalid python_env spec: {problems}", at(path)) from None


# -- tools ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interpreter:
    """A base Python for venvs, as probed: `path` is what the venv's python symlinks point at."""

    path: str
    version: str  # full, "3.10.13"
    pip: str  # the version of the pip wheel its ensurepip bundles, which installs the env's packages
    pip_wheel: str  # that wheel's path ("" when it is not where ensurepip keeps it)


# The wheel is in ensurepip's `_bundled` directory, or where the distribution keeps wheels instead
# (Debian's python3-pip-whl: /usr/share/python-wheels, ensurepip's `_WHEEL_PKG_DIR` since 3.10).
_PROBE = """
import ensurepip, glob, json, os, sys
pip = ensurepip.version()
dirs = [getattr(ensurepip, "_WHEEL_PKG_DIR", None), os.path.join(os.path.dirname(ensurepip.__file__), "_bundled")]
wheels = [w for d in dirs if d for w in sorted(glob.glob(os.path.join(d, f"pip-{pip}-*.whl")))]
print(json.dumps(dict(version=sys.version.split()[0], pip=pip, pip_wheel=(wheels or [""])[0])))
"""


def _probe(path: str) -> Interpreter | str:
    """The interpreter at `path`, or why it cannot make venvs."""
    probed = worker.probe(path, _PROBE)
    if isinstance(probed, dict):
        if not probed["pip_wheel"]:
            return (f"has no pip-{probed['pip']} wheel where its ensurepip keeps it, so it cannot install into "
                    "venvs (Debian: apt-get install python3.X-venv)")
        return Interpreter(path, **probed)
    if "ensurepip" in probed:
        return "has no ensurepip module, so it cannot create venvs (Debian: apt-get install python3.X-venv)"
    return probed


def find_interpreter(spec: EnvSpec) -> Interpreter:
    """The base interpreter of a venv: `interpreter` if given, else the first working `python3.X` on PATH."""
    wanted = spec.python
    candidates = worker.python_candidates(wanted, spec.interpreter, "")
    if not candidates:
        raise UserError(f"python{wanted} is not on PATH, and manager = \"venv\" needs a Python {wanted} to "
                        f"base the env on: install Python {wanted}, or set interpreter to the path of one")
    problems = []
    for path in candidates:
        probed = _probe(path)
        if isinstance(probed, str):
            problems.append(f"{path} {probed}")
        elif worker.minor(probed.version) != wanted:
            problems.append(f"{path} is Python {probed.version}, not {wanted}")
        else:
            return probed
    raise UserError(f"no usable Python {wanted} for the venv: {'; '.join(problems)}. Set interpreter to the path "
                    f"of a working Python {wanted}, or change python")


def find_conda_tool(spec: EnvSpec) -> str:
    """The path of the conda-family executable `manager` names."""
    name = spec.manager
    path = shutil.which(name)
    if path is None:
        # Set by `conda init` / micromamba's shell hook even when the tool itself is not on PATH.
        env_exe = os.environ.get("MAMBA_EXE" if name != "conda" else "CONDA_EXE", "")
        if os.path.basename(env_exe) == name and os.access(env_exe, os.X_OK):
            path = env_exe
    if path is None:
        raise UserError(f"manager = \"{name}\" needs `{name}`, which is not installed here (not on PATH). "
                        f"Install {name}, or set manager = \"venv\" to build a virtualenv from a local "
                        f"Python {spec.python} and pip instead")
    return path


def _tool_version(path: str) -> str:
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"{path} does not run: {e}") from None
    if r.returncode != 0:
        raise UserError(f"`{path} --version` failed: {(r.stderr or r.stdout).strip()}")
    # mamba 1.x prints "mamba 1.5.8\nconda 24.1.2": both versions matter.
    return " / ".join(line.strip() for line in r.stdout.splitlines() if line.strip())


def _conda_pack_version(spec: EnvSpec) -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("conda-pack")
    except PackageNotFoundError:
        raise UserError(f"manager = \"{spec.manager}\" packs the env with conda-pack, which is not installed in "
                        f"the Python running tpbuild ({sys.executable}): `pip install conda-pack`, or set "
                        "manager = \"venv\"") from None


def tool_fingerprint(spec: EnvSpec) -> dict:
    """What besides the spec decides the env's bytes, for the action key: the manager's version (for a
    venv, the base interpreter's path, full version and bundled pip), the platform, and the Python and
    zlib that write the archive. Raises UserError (exit 2) when the tool is missing."""
    fp: dict[str, str] = {"manager": spec.manager}
    if spec.manager == "venv":
        interp = find_interpreter(spec)
        fp.update(interpreter=interp.path, python=interp.version, pip=interp.pip)
    else:
        fp[spec.manager] = _tool_version(find_conda_tool(spec))
        fp["conda-pack"] = _conda_pack_version(spec)
    libc, libc_version = platform.libc_ver()
    fp.update(machine=platform.machine(), libc=f"{libc} {libc_version}".strip(),
              packer=f"python {platform.python_version()}, zlib {zlib.ZLIB_RUNTIME_VERSION}")
    return fp


# -- running tools --------------------------------------------------------------------------------

def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"))


def _tool_env(home: Path) -> dict[str, str]:
    cache = os.environ.get("PIP_CACHE_DIR") or str(_user_cache() / "pip")
    return {
        **worker.scrubbed_env(),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PIP_CACHE_DIR": cache,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
    }


# -- creating envs --------------------------------------------------------------------------------


def _pip_install(spec: EnvSpec, pip: list[str], log: worker.StepLog, env: dict[str, str], workdir: Path) -> None:
    """Install the spec's packages with `pip`, the argv that starts pip with the env's own Python."""
    if not _pip_wanted(spec):
        return
    argv = [*pip, "install", "--no-compile", "--progress-bar", "off"]
    if spec.locked:
        # Exactly the locked files: no index (no network), no resolver, no sdist builds, every hash checked.
        log.run("pip install (locked)", argv + ["--no-index", "--find-links", spec.wheels, "--no-deps",
                                                "--only-binary", ":all:", "--require-hashes", "-r", spec.locked],
                env=env, cwd=workdir)
        return
    if spec.requirements:
        argv += ["-r", spec.requirements]
    log.run("pip install", argv + list(spec.pip), env=env, cwd=workdir)


def _pip_wanted(spec: EnvSpec) -> bool:
    return bool(spec.pip or spec.requirements or spec.locked)


def _create_venv(spec: EnvSpec, interp: Interpreter, prefix: Path, log: worker.StepLog, env: dict[str, str],
                 workdir: Path) -> None:
    """A venv without pip, its packages installed by the base interpreter's bundled pip run from its wheel
    (as ensurepip itself runs it): the env holds the spec's packages and what they need, nothing to
    install more with. ensurepip's bootstrap (pip and setuptools installed and compiled into every env, for
    tools no model runs) took about 40% of a numpy env's build CPU and 28% of its archive."""
    log.run("create venv", [interp.path, "-m", "venv", "--without-pip", str(prefix)], env=env, cwd=workdir)
    if _pip_wanted(spec):
        _pip_install(spec, [str(prefix / "bin" / "python"), f"{_pip_from(interp, log, env, workdir)}/pip"], log, env,
                     workdir)


def _pip_from(interp: Interpreter, log: worker.StepLog, env: dict[str, str], workdir: Path) -> str:
    """Where a venv's pip runs from: an unpacked copy of the interpreter's bundled pip wheel, compiled
    for it, kept in the user's cache beside pip's own (`tpbuild-tools/`), named by the wheel's SHA-256 and
    the Python version; the wheel itself when that cache cannot be written (a read-only home).

    Run from the zipped wheel, pip's modules are compiled again on every import (zipimport keeps no
    bytecode): about a CPU-second of every env build. The copy holds the wheel's files, so pip installs
    the same either way (tests/test_envbuild.py builds one env each way: byte-identical), and it is not
    a key input beyond the pip version the key already has. It is published by renaming the complete,
    compiled directory into place, so a builder sees all of it or none; one killed midway leaves its
    temp directory to the next one's sweep."""
    wheel = Path(interp.pip_wheel)
    try:
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        root = _user_cache() / "tpbuild-tools"
        final = root / f"{wheel.name.removesuffix('.whl')}-{sha[:16]}-py{worker.minor(interp.version)}"
        if final.is_dir():
            return str(final)
        sweep(root / "tmp")
        tmp = process_dir(root / "tmp") / final.name
        tmp.mkdir()
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp)
        # Compiled where it will be (-d), so pip's tracebacks name the published path.
        if log.run("compile pip", [interp.path, "-m", "compileall", "-q", "-d", str(final), str(tmp)], env=env,
                   cwd=workdir, check=False) != 0:
            raise OSError("compileall failed (see above)")
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp)  # another build published it first
        return str(final)
    except (OSError, zipfile.BadZipFile) as e:
        log.note(f"pip runs from its wheel {wheel}: no compiled copy in the user cache ({e})")
        return str(wheel)


def _create_conda(spec: EnvSpec, tool: str, prefix: Path, log: worker.StepLog, env: dict[str, str], workdir: Path) -> None:
    argv = [tool, "create", "-y", "-p", str(prefix)]
    if spec.manager != "micromamba":
        argv.append("--no-default-packages")  # `create_default_packages` of a condarc would sneak in
    for ch in spec.channels:
        argv += ["-c", ch]
    log.run(f"{spec.manager} create", argv + [f"python={spec.python}", *spec.conda], env=env, cwd=workdir)
    if spec.environment:
        if spec.manager == "micromamba":
            argv = [tool, "install", "-y", "-p", str(prefix), "-f", spec.environment]
        else:
            argv = [tool, "env", "update", "-p", str(prefix), "-f", spec.environment]
        log.run(f"{spec.manager} environment", argv, env=env, cwd=workdir)
    python = prefix / "bin" / "python"
    if _pip_wanted(spec) and not (prefix / "bin" / "pip").exists():
        raise BuildError(f"pip specs need pip in the env, but {spec.manager} did not install it: add \"pip\" to conda")
    _pip_install(spec, [str(python), "-m", "pip"], log, env, workdir)


def pack_conda(prefix: Path, staging: Path) -> None:
    """Unpack-ready copy of a conda env at `staging`, every prefix rewritten to `CONDA_DEST_PREFIX`.

    conda-pack (not our own walk) decides what belongs to the env and how each conda file's prefix is
    rewritten: it reads the packages' own has_prefix records. It writes a plain tar that we unpack,
    not its "no-archive" directory, which hard-links files of the package cache (later steps would
    change them there), fails when two packages ship the same file (conda-pack issue 422), and moves
    its empty temp file into the output directory.
    """
    import conda_pack

    packed = staging.with_name(staging.name + ".tar")
    # conda-pack writes to a temp file first; keep that multi-GB file in the scratch directory too,
    # not in a /tmp that may be small (conda-pack issue 191). This process builds one env and exits.
    tempfile.tempdir = str(staging.parent)
    try:
        conda_pack.pack(prefix=str(prefix), output=str(packed), format="tar", dest_prefix=CONDA_DEST_PREFIX,
                        ignore_missing_files=True, force=True)
    except (conda_pack.CondaPackException, ValueError) as e:
        raise BuildError("conda-pack could not pack the env", detail=str(e)) from None
    finally:
        tempfile.tempdir = None
    staging.mkdir()
    with tarfile.open(packed) as tar:
        # "tar" keeps absolute symlinks, which the "data" default of Python 3.14 would refuse.
        tar.extractall(staging, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
    packed.unlink()
    history = staging / "conda-meta" / "history"
    if history.exists():
        # One time-stamped line per transaction, with the build path: neither belongs in an artifact.
        _replace_file(history, b"")


# -- making the tree relocatable and reproducible -------------------------------------------------


def _replace_file(path: Path, data: bytes) -> None:
    """Write through a new inode: `path` may be a hard link (conda-pack's tar keeps them) whose other
    names must not change."""
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# Runs the interpreter next to the script's real location, wherever the env was unpacked. The shell
# reads line 2 as `exec ...`; Python reads lines 2-3 as a string literal and goes on with the script.
_PY_LAUNCHER = "#!/bin/sh\n'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")/{exe}\"{opts} \"$0\" \"$@\"\n' '''\n"
# pip's own launcher for interpreter paths too long (or spaced) for a shebang line.
_SH_LAUNCHER = re.compile(rb"'''exec' (\"[^\"]*\"|\S+)(.*) \"\$0\" \"\$@\"")


def relocatable_script(data: bytes, prefix: str) -> bytes | None:
    """`data` with a launcher that no longer names `prefix`, or None if it does not start one from
    `prefix/bin`. Python scripts get `_PY_LAUNCHER`; others `#!/usr/bin/env NAME`, as conda-pack does."""
    bin_dir = prefix.encode() + b"/bin/"
    lines = data.split(b"\n", 3)
    exe = opts = None
    if lines[0] == b"#!/bin/sh" and len(lines) == 4 and lines[2] == b"' '''":
        m = _SH_LAUNCHER.fullmatch(lines[1])
        if m:
            exe, opts, body = m[1].strip(b'"'), m[2], lines[3]
    elif lines[0].startswith(b"#!"):
        exe, _, rest = lines[0][2:].strip().partition(b" ")
        opts = b" " + rest if rest else b""
        body = data[len(lines[0]) + 1:]
    if exe is None or not exe.startswith(bin_dir) or b"/" in exe[len(bin_dir):]:
        return None
    name = exe[len(bin_dir):].decode()
    if name.startswith("python"):
        header = _PY_LAUNCHER.format(exe=name, opts=opts.decode()).encode()
    else:
        header = f"#!/usr/bin/env {name}{opts.decode()}\n".encode()
    return header + body


def _relocate_scripts(bin_dir: Path, prefix: str) -> None:
    if not bin_dir.is_dir():
        return
    for path in sorted(bin_dir.iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as f:
            if f.read(2) != b"#!":
                continue
        new = relocatable_script(path.read_bytes(), prefix)
        if new is not None:
            _replace_file(path, new)


_ACTIVATE = r"""# Activates the env holding this script: `source bin/activate` from bash or zsh.
# Written by tpbuild in place of the venv's own script, which names the directory the env was built in:
# this one finds the env from its own location, so the env works wherever it is unpacked.

deactivate () {
    if [ -n "${_OLD_VIRTUAL_PATH:-}" ] ; then
        PATH="${_OLD_VIRTUAL_PATH:-}"
        export PATH
        unset _OLD_VIRTUAL_PATH
    fi
    if [ -n "${_OLD_VIRTUAL_PYTHONHOME:-}" ] ; then
        PYTHONHOME="${_OLD_VIRTUAL_PYTHONHOME:-}"
        export PYTHONHOME
        unset _OLD_VIRTUAL_PYTHONHOME
    fi
    hash -r 2> /dev/null
    if [ -n "${_OLD_VIRTUAL_PS1:-}" ] ; then
        PS1="${_OLD_VIRTUAL_PS1:-}"
        export PS1
        unset _OLD_VIRTUAL_PS1
    fi
    unset VIRTUAL_ENV
    unset VIRTUAL_ENV_PROMPT
    if [ ! "${1:-}" = "nondestructive" ] ; then
        unset -f deactivate
    fi
}

deactivate nondestructive

if [ -n "${BASH_VERSION:-}" ] ; then
    _tpbuild_activate="${BASH_SOURCE[0]}"
elif [ -n "${ZSH_VERSION:-}" ] ; then
    _tpbuild_activate="${(%):-%x}"
else
    echo "bin/activate must be sourced from bash or zsh" >&2
    return 1
fi
VIRTUAL_ENV="$(cd -- "$(dirname -- "$_tpbuild_activate")/.." > /dev/null && pwd)"
unset _tpbuild_activate
export VIRTUAL_ENV
VIRTUAL_ENV_PROMPT="$(basename -- "$VIRTUAL_ENV")"
export VIRTUAL_ENV_PROMPT

_OLD_VIRTUAL_PATH="$PATH"
PATH="$VIRTUAL_ENV/bin:$PATH"
export PATH

if [ -n "${PYTHONHOME:-}" ] ; then
    _OLD_VIRTUAL_PYTHONHOME="${PYTHONHOME:-}"
    unset PYTHONHOME
fi

if [ -z "${VIRTUAL_ENV_DISABLE_PROMPT:-}" ] ; then
    _OLD_VIRTUAL_PS1="${PS1:-}"
    PS1="(${VIRTUAL_ENV_PROMPT}) ${PS1:-}"
    export PS1
fi

hash -r 2> /dev/null
"""


def _relocate_venv(prefix: Path) -> None:
    bin_dir = prefix / "bin"
    (bin_dir / "activate").write_text(_ACTIVATE)
    # csh and fish have no dependable way for a sourced script to find itself; Activate.ps1 already does.
    for name in ("activate.csh", "activate.fish"):
        (bin_dir / name).unlink(missing_ok=True)
    cfg = prefix / "pyvenv.cfg"
    # `command` (3.11+) records how the venv was made, build path included; `home` must stay.
    lines = [ln for ln in cfg.read_text().splitlines() if ln.partition("=")[0].strip() != "command"]
    cfg.write_text("\n".join(lines) + "\n")


def _strip_bytecode(tree: Path) -> None:
    """Drop all pycs: conda's (and any a package's install wrote) are timestamp-based and name the build path."""
    archive.prune(tree, ("__pycache__", "*/__pycache__"))


def _drop_local_direct_urls(tree: Path) -> None:
    """PEP 610 records of packages installed from a local path or file name that path: a scratch
    directory that is gone after the build (or a machine's own wheel directory). Without the record,
    the package is what it is anyway: installed, at its version."""
    for record in sorted(tree.glob("lib/python3*/site-packages/*.dist-info/direct_url.json")):
        try:
            url = json.loads(record.read_text()).get("url", "")
        except ValueError:
            continue
        if url.startswith("file:"):
            record.unlink()


def _fix_records(tree: Path) -> None:
    """Keep RECORD files true to the tree: lines of files that are gone (the pycs, local direct_url
    records) go, and launchers rewritten in bin/ get their new hash and size (pip hashed them while
    they still named the build path)."""
    bin_dir = os.path.normpath(tree / "bin")
    for record in sorted(tree.glob("lib/python3*/site-packages/*.dist-info/RECORD")):
        site = record.parent.parent
        lines = record.read_bytes().splitlines(keepends=True)
        out = []
        for line in lines:
            text = line.decode()
            body = text.rstrip("\r\n")
            row = next(csv.reader([body]), None)
            target = os.path.normpath(site / row[0]) if row else ""
            if row and not os.path.lexists(target):
                continue
            if os.path.dirname(target) == bin_dir and os.path.isfile(target) and not os.path.islink(target):
                data = Path(target).read_bytes()
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                buf = io.StringIO()
                csv.writer(buf, lineterminator=text[len(body):]).writerow([row[0], f"sha256={digest}", len(data)])
                line = buf.getvalue().encode()
            out.append(line)
        if out != lines:
            _replace_file(record, b"".join(out))


def _compile(tree: Path, log: worker.StepLog, env: dict[str, str]) -> None:
    # Relative paths: the pycs' co_filename must not name the build directory. One process, sorted
    # order and a fixed hash seed (set and frozenset constants) make the bytes repeatable.
    # A file that does not compile (py2-only test data, templates) is skipped, as pip would.
    log.run("compile bytecode",
            [str(tree / "bin" / "python3"), "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", "lib"],
            env={**env, "PYTHONHASHSEED": "0"}, cwd=tree, check=False)


# -- checks ---------------------------------------------------------------------------------------


def _last_line(text: str) -> str:
    """The error itself, without the traceback that leads to it."""
    return ([ln for ln in text.splitlines() if ln.strip()] or ["no output"])[-1]


def check_env(tree: Path, python: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    """The env is what Triton needs, each failure with its own remedy."""
    if env is None:
        env = {**worker.scrubbed_env(), "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if not (tree / "bin" / "activate").is_file():
        raise BuildError("bin/activate is missing at the root of the env, and Triton needs it there: "
                         "check that pack_exclude does not remove it")
    exe = tree / "bin" / "python3"
    if not os.path.exists(exe):
        raise BuildError("bin/python3 is missing from the env (Triton 25.08+ runs the env through it): "
                         "check that pack_exclude does not remove it")

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(exe), "-c", code], capture_output=True, text=True, env=env, cwd=cwd or tree.parent,
                              stdin=subprocess.DEVNULL, timeout=300)

    r = run("import sys; print('%d.%d' % sys.version_info[:2])")
    if r.returncode != 0:
        raise BuildError("the env's bin/python3 does not run", detail=_last_line(r.stderr))
    got = r.stdout.strip()
    if got != python:
        raise BuildError(f"the env's Python is {got}, but python = \"{python}\": a package pinned another Python; "
                         f"pin \"python={python}\" compatible versions, or change python")
    r = run("import numpy")
    if r.returncode != 0:
        raise BuildError("numpy is not importable in the env, and Triton's Python backend imports it: add numpy "
                         "to pip or conda (\"numpy<2\" for stubs built from r24.10 or older)",
                         detail=_last_line(r.stderr))


def find_leaks(tree: Path, needles: Iterable[str]) -> list[str]:
    """Archive-relative paths of files (or symlink targets) that contain any of `needles`."""
    pats = [n.encode() for n in needles]
    overlap = max(len(p) for p in pats) - 1
    found = []
    for node in archive.walk(tree):
        if stat.S_ISLNK(node.st.st_mode):
            target = os.fsencode(os.readlink(node.path))
            if any(p in target for p in pats):
                found.append(node.rel)
        elif stat.S_ISREG(node.st.st_mode):
            with open(node.path, "rb") as f:
                tail = b""
                while chunk := f.read(1 << 20):
                    window = tail + chunk
                    if any(p in window for p in pats):
                        found.append(node.rel)
                        break
                    tail = window[-overlap:] if overlap else b""
    return found


# -- the build ------------------------------------------------------------------------------------


def build(spec: EnvSpec, out: Path, log_path: Path, workdir: Path) -> None:
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(workdir).absolute()
    fingerprint = tool_fingerprint(spec)  # missing tools fail before anything is made
    for attr in ("requirements", "environment", "locked"):
        rel = getattr(spec, attr)
        if rel and not (workdir / rel).is_file():
            raise UserError(f"{attr} file {rel!r} is not in the build directory {workdir}")
    log = worker.StepLog(log_path)
    build_dir = Path(tempfile.mkdtemp(prefix="envbuild-", dir=workdir))
    try:
        log.note(f"tpbuild envbuild: {spec.model_dump_json()}")
        log.note(f"tools: {json.dumps(fingerprint, sort_keys=True)}")
        home = build_dir / "home"
        home.mkdir()
        env = _tool_env(home)
        prefix = build_dir / "env"
        if spec.manager == "venv":
            _create_venv(spec, find_interpreter(spec), prefix, log, env, workdir)
            _relocate_venv(prefix)
            tree, launcher_prefix = prefix, str(prefix)
        else:
            _create_conda(spec, find_conda_tool(spec), prefix, log, env, workdir)
            tree, launcher_prefix = build_dir / "packed", CONDA_DEST_PREFIX
            pack_conda(prefix, tree)
        # The whole scratch directory: local paths in requirements live there too.
        needles = sorted({str(workdir), os.path.realpath(workdir)})
        finish_tree(tree, spec, launcher_prefix=launcher_prefix, needles=needles, log=log, env=env)
        emit(tree, out, spec.format)
        log.note(f"built {out}")
    except archive.ArchiveError as e:
        raise BuildError(str(e)) from None
    finally:
        log.close()
        shutil.rmtree(build_dir, ignore_errors=True)


def make_reproducible(tree: Path, launcher_prefix: str) -> None:
    """Remove what differs between two builds of the same spec: pycs, local direct_url records,
    launchers naming `launcher_prefix`, and the RECORD lines describing them."""
    _strip_bytecode(tree)
    _drop_local_direct_urls(tree)
    _relocate_scripts(tree / "bin", launcher_prefix)
    _fix_records(tree)


def finish_tree(tree: Path, spec: EnvSpec, *, launcher_prefix: str, needles: list[str], log: worker.StepLog,
                env: dict[str, str]) -> None:
    """Steps 2-4 of the module docstring on a created (and for conda, packed) env."""
    make_reproducible(tree, launcher_prefix)
    # pack_exclude before compiling, so what it drops (numpy's tests: half its modules) is not compiled
    # for nothing, and again after, for patterns that name pycs themselves.
    removed = archive.prune(tree, spec.pack_exclude)
    _compile(tree, log, env)
    log.note(f"canonicalized marshal references in {pyc.canonicalize_tree(tree, spec.python)} pycs")
    removed += archive.prune(tree, spec.pack_exclude)
    log.note(f"pack_exclude removed {len(removed)} entries")
    check_env(tree, spec.python, env, cwd=tree.parent)
    leaks = find_leaks(tree, needles)
    if leaks:
        shown = ", ".join(leaks[:10]) + (f" and {len(leaks) - 10} more" if len(leaks) > 10 else "")
        raise BuildError(f"the env still names its build directory {needles[0]} in {shown}: it would break where "
                         "the env is unpacked and make every build differ. Install local packages without -e (editable "
                         "installs point into the build directory), or leave the file out with pack_exclude")


def emit(tree: Path, out: Path, fmt: str) -> None:
    if fmt == "tar.gz":
        archive.write_tar_gz(tree, out)
        return
    archive.normalize_tree(tree)
    if out.is_symlink() or out.is_file():
        out.unlink()
    elif out.exists():
        shutil.rmtree(out)
    shutil.move(str(tree), str(out))


def main(argv: list[str] | None = None) -> int:
    return worker.main(argv, prog="envbuild", description="Build a python_env target's environment.",
                       out_help="the tar.gz or directory to write", load_spec=load_spec, build=build)


if __name__ == "__main__":
    sys.exit(main())
