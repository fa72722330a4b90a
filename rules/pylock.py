"""The lock file of a `python_env`: `pylock.<target>.toml` beside its BUILD.toml, in the standard
format of PEP 751, as uv writes it, plus one table of ours:

    [tool.tpbuild]
    format = 1
    target = "//envs:torch"
    python = "3.11"                       # what the lock was resolved for ...
    platform = "x86_64-manylinux_2_28"
    inputs = "sha256:…"                   # ... and from: python, platform, pip specs, requirements file

A spec says what a team wants (`numpy<2`); what it resolves to changes whenever the index does. The lock
holds the resolution: every distribution by name, version, URL and SHA-256. A build installs exactly
those wheels (fetched once by hash, then kept in the blob store), so the same lock gives the same env on
every machine, today and next year, and needs no index. `inputs` tells whether the lock still answers the
spec: a `pip`, `requirements`, `python` or platform change makes it stale, which a build refuses and
`tpbuild lock` repairs.

Only wheels are installed from a lock. A package with nothing but a source distribution is refused (at
`tpbuild lock` and at build): building it is running its setup code with build requirements of its own,
which the lock does not pin, so the result would be neither reproducible nor offline. The remedy is to
build the wheel once, publish it on the index the lock resolves from, and lock again.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FORMAT = 1

_SHA256 = re.compile(r"[0-9a-f]{64}")
_WHEEL = re.compile(r"[A-Za-z0-9_.]+-[A-Za-z0-9_.!+]+(-[0-9][^-/]*)?-[^-/]+-[^-/]+-[^-/]+\.whl")


class LockError(Exception):
    """The lock file cannot be used as it is; the message says what to change."""


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    file: str  # the file name, which pip reads the tags from
    url: str
    sha256: str


@dataclass(frozen=True)
class Request:
    """What a lock is resolved from: one env's packages, for its Python and the server's platform."""

    python: str
    platform: str
    pip: tuple[str, ...]
    requirements: str | None  # the requirements file's text

    def inputs(self) -> str:
        body = json.dumps([FORMAT, self.python, self.platform, list(self.pip), self.requirements],
                          separators=(",", ":")).encode()
        return f"sha256:{hashlib.sha256(body).hexdigest()}"


def file_name(target: str) -> str:
    """PEP 751's name for one of several locks in a directory: pylock.<name>.toml."""
    return f"pylock.{target}.toml"


def read_inputs(data: bytes) -> str | None:
    """The `inputs` a lock was made from, or None when it is not a lock tpbuild wrote."""
    try:
        doc = tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    ours = doc.get("tool", {}).get("tpbuild", {})
    return ours.get("inputs") if isinstance(ours, dict) else None


def parse(data: bytes) -> tuple[str, tuple[Wheel, ...]]:
    """A lock's `inputs` and its wheels, sorted by name. Raises LockError on anything a locked install
    cannot use: a package without a wheel, one from a path or a VCS, a missing or malformed hash."""
    try:
        doc = tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise LockError(f"not a valid TOML file ({e})") from None
    ours = doc.get("tool", {}).get("tpbuild")
    if not isinstance(ours, dict) or ours.get("format") != FORMAT or not isinstance(ours.get("inputs"), str):
        raise LockError(f"no [tool.tpbuild] table of format {FORMAT}: it was not written by this `tpbuild lock`")
    if doc.get("lock-version") != "1.0":
        raise LockError(f"lock-version {doc.get('lock-version')!r}: only PEP 751 lock-version \"1.0\" is read")
    wheels: list[Wheel] = []
    for i, pkg in enumerate(doc.get("packages", [])):
        where = f"packages[{i}]"
        name, version = pkg.get("name"), pkg.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            raise LockError(f"{where}: a package needs a name and a version (pinned)")
        where = f"{where} ({name} {version})"
        for kind in ("vcs", "directory", "archive"):
            if kind in pkg:
                raise LockError(f"{where} comes from a {kind}, not an index: a locked env installs wheels of an "
                                "index only. Publish it as a wheel and lock again, or leave this env unlocked")
        listed = pkg.get("wheels") or []
        if not listed:
            raise LockError(sdist_only(name, version))
        for w in listed:
            url, sha = w.get("url"), (w.get("hashes") or {}).get("sha256")
            if not isinstance(url, str) or not isinstance(sha, str) or not _SHA256.fullmatch(sha):
                raise LockError(f"{where}: every wheel needs a url and a sha256 hash")
            name_in_url = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
            fname = w.get("name") or name_in_url
            if not _WHEEL.fullmatch(fname):
                raise LockError(f"{where}: {fname!r} is not a wheel file name")
            wheels.append(Wheel(name, version, fname, url, sha))
    if len({w.file for w in wheels}) != len(wheels):
        raise LockError("a wheel file is listed twice")
    return ours["inputs"], tuple(sorted(wheels, key=lambda w: (w.name.lower(), w.file)))


def sdist_only(name: str, version: str) -> str:
    return (f"{name} {version} has no wheel for this Python and platform, only a source distribution. A locked env "
            "installs wheels only (building one runs its setup with build requirements the lock does not pin): build "
            f"the wheel once (`pip wheel --no-deps {name}=={version}`), publish it on your index and lock again, "
            "or leave this env unlocked")


def hashed_requirements(wheels: tuple[Wheel, ...]) -> bytes:
    """The lock as pip installs it: `name==version --hash=sha256:…` per package, every wheel's hash."""
    by_pkg: dict[tuple[str, str], list[str]] = {}
    for w in wheels:
        by_pkg.setdefault((w.name, w.version), []).append(w.sha256)
    return "".join(f"{n}=={v} " + " ".join(f"--hash=sha256:{h}" for h in sorted(hs)) + "\n"
                   for (n, v), hs in sorted(by_pkg.items())).encode()


def with_our_table(uv_lock: str, target: str, request: Request) -> str:
    """uv's lock with `[tool.tpbuild]` appended (uv writes no [tool] table of its own)."""
    body = uv_lock.rstrip("\n")
    return (f"{body}\n\n[tool.tpbuild]\nformat = {FORMAT}\ntarget = {json.dumps(target)}\n"
            f"python = {json.dumps(request.python)}\nplatform = {json.dumps(request.platform)}\n"
            f"inputs = {json.dumps(request.inputs())}\n")


def lock_path(package_dir: Path, target: str) -> Path:
    return package_dir / file_name(target)
