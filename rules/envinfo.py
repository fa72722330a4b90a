"""What a prebuilt env (a conda-pack or venv-pack tarball, or an unpacked env directory) holds: its
Python version, the kind of env, and the packages someone installed into it on purpose.

`tpbuild import` keeps such an env as it is (a source, hashed like any other) and, from this,
suggests the `python_env` target that would build it instead. Only metadata is read: conda's
`conda-meta/*.json` (name, version, depends, channel, the files each package owns) and the
`*.dist-info` directories of `lib/python3.X/site-packages` (METADATA, REQUESTED). Nothing in the env
is run, so an env for another platform or a Python this machine lacks reads the same.

"On purpose" is, for pip, the distributions pip marked REQUESTED (installed by name, not as a
dependency); where no installer left that mark, the distributions nothing else installed depends
on. For conda, the packages no other package depends on. The seeding tools (pip, setuptools, wheel)
and python itself are left out: a `python_env` brings them.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

SEED = frozenset({"pip", "setuptools", "wheel", "distribute", "python"})
_SITE = re.compile(r"^lib/python(3\.\d+)/site-packages/([^/]+\.dist-info)/(METADATA|REQUESTED)$")
_CONDA_META = re.compile(r"^conda-meta/[^/]+\.json$")
_LIB_PYTHON = re.compile(r"^lib/python(3\.\d+)/")
_SUBDIR = re.compile(r"^(noarch|(linux|osx|win|emscripten|wasi|zos)-[a-z0-9_]+)$")  # conda platform subdirectories
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class EnvReadError(Exception):
    """The env cannot be read (not a tar archive, a truncated one, an unreadable file)."""


@dataclass(frozen=True)
class EnvInfo:
    python: str | None                      # "3.11", or None when nothing in the env says
    manager: str | None                     # "conda" | "venv" | None (a layout neither tool makes)
    interpreter: str | None = None          # venv: the base interpreter pyvenv.cfg names
    conda: tuple[str, ...] = ()             # "name==version" of the top-level conda packages
    channels: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()               # "name==version" of the top-level pip distributions


@dataclass
class _Dist:
    name: str
    version: str
    requires: set[str] = field(default_factory=set)
    requested: bool = False


def canonical(name: str) -> str:
    """PEP 503 normalised name, so 'Foo_Bar' required by one package is 'foo-bar' installed by another."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read(path: Path) -> EnvInfo:
    files = _tar_members(path) if path.is_file() else _dir_members(path)
    dists: dict[str, _Dist] = {}
    requested: set[str] = set()
    conda: list[dict] = []
    pyvenv = ""
    pythons: set[str] = set()
    for name, data in files:
        if name == "pyvenv.cfg":
            pyvenv = data.decode("utf-8", "replace")
        elif _CONDA_META.match(name):
            try:
                conda.append(json.loads(data))
            except ValueError:
                continue
        elif m := _SITE.match(name):
            pythons.add(m.group(1))
            key = f"{m.group(1)}/{m.group(2)}"
            if m.group(3) == "REQUESTED":
                requested.add(key)
            else:
                dists[key] = _parse_metadata(data)
        elif m := _LIB_PYTHON.match(name):
            pythons.add(m.group(1))
    for key in requested & dists.keys():
        dists[key].requested = True

    cfg = dict(_cfg_lines(pyvenv))
    python = _conda_python(conda) or _minor(cfg.get("version") or cfg.get("version_info")) or \
        (min(pythons) if len(pythons) == 1 else None)
    conda_owned = {f.split("/")[-2] for pkg in conda for f in pkg.get("files", ()) if ".dist-info/" in f}
    pip = [d for key, d in dists.items() if key.split("/")[1] not in conda_owned]
    if conda:
        manager, interpreter = "conda", None
    elif cfg:
        home = cfg.get("home")
        manager, interpreter = "venv", (f"{home.rstrip('/')}/python{python}" if home and python else None)
    else:
        manager, interpreter = None, None
    return EnvInfo(python=python, manager=manager, interpreter=interpreter,
                   conda=_top_conda(conda), channels=_channels(conda), pip=_top_pip(pip))


def _tar_members(path: Path):
    """(name, bytes) of the metadata files in a tar archive, read in one sequential pass."""
    try:
        with tarfile.open(path, "r|*") as t:
            for m in t:
                name = m.name.removeprefix("./")
                if m.isfile() and _wanted(name):
                    f = t.extractfile(m)
                    yield name, f.read() if f else b""
                elif m.isdir():
                    yield name + "/", b""
    except (tarfile.TarError, OSError, EOFError) as e:
        raise EnvReadError(f"not a readable tar archive ({e})") from None


def _dir_members(path: Path):
    inside = path.resolve()
    try:
        for rel in ("pyvenv.cfg",):
            if (path / rel).is_file():
                yield rel, (path / rel).read_bytes()
        for f in sorted(path.glob("conda-meta/*.json")):
            yield f"conda-meta/{f.name}", f.read_bytes()
        for lib in sorted(path.glob("lib/python3.*")):
            yield f"lib/{lib.name}/", b""
            for d in sorted(lib.glob("site-packages/*.dist-info")):
                for leaf in ("METADATA", "REQUESTED"):
                    if (d / leaf).is_file() and (d / leaf).resolve().is_relative_to(inside):  # never follow out
                        yield f"lib/{lib.name}/site-packages/{d.name}/{leaf}", (d / leaf).read_bytes()
    except OSError as e:
        raise EnvReadError(f"unreadable ({e.strerror}: {e.filename})") from None


def _wanted(name: str) -> bool:
    return name == "pyvenv.cfg" or bool(_CONDA_META.match(name) or _SITE.match(name))


def _cfg_lines(text: str):
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            yield key.strip(), value.strip()


def _minor(version: str | None) -> str | None:
    m = re.match(r"^(3\.\d+)", version or "")
    return m.group(1) if m else None


def _parse_metadata(data: bytes) -> _Dist:
    msg = HeaderParser().parsestr(data.decode("utf-8", "replace"))
    requires = set()
    for req in msg.get_all("Requires-Dist") or ():
        if "extra ==" in req.replace("extra==", "extra =="):
            continue  # an optional dependency: installed only if someone asked for the extra
        m = _REQ_NAME.match(req)
        if m:
            requires.add(canonical(m.group(1)))
    return _Dist(msg.get("Name", "").strip(), msg.get("Version", "").strip(), requires)


def _top_pip(dists: list[_Dist]) -> tuple[str, ...]:
    dists = [d for d in dists if d.name and canonical(d.name) not in SEED]
    chosen = [d for d in dists if d.requested]
    if not chosen:
        needed = {r for d in dists for r in d.requires}
        chosen = [d for d in dists if canonical(d.name) not in needed]
    return tuple(sorted({f"{d.name}=={d.version}" for d in chosen}, key=str.lower))


def _conda_python(pkgs: list[dict]) -> str | None:
    return next((_minor(p.get("version")) for p in pkgs if p.get("name") == "python"), None)


def _top_conda(pkgs: list[dict]) -> tuple[str, ...]:
    needed = {dep.split()[0] for p in pkgs for dep in p.get("depends", ()) if dep.strip()}
    return tuple(sorted(f"{p['name']}=={p['version']}" for p in pkgs
                        if p.get("name") and p.get("version") and p["name"] not in needed
                        and p["name"] not in SEED and not p["name"].startswith("_")))


def _channels(pkgs: list[dict]) -> tuple[str, ...]:
    """conda-forge from 'conda-forge' or 'https://conda.anaconda.org/conda-forge/linux-64'."""
    out = set()
    for p in pkgs:
        ch = p.get("schannel") or p.get("channel") or ""
        parts = [x for x in ch.rstrip("/").split("/") if x]
        if len(parts) > 1 and _SUBDIR.match(parts[-1]):
            parts = parts[:-1]
        if parts and parts[-1] != "pypi":
            out.add(parts[-1])
    return tuple(sorted(out))

