"""The workspace: its root, its `tpbuild.toml`, and the packages below it.

The root is the nearest ancestor holding `tpbuild.toml`. Every directory below it with a `BUILD.toml`
is a package named by its path from the root. `[workspace]`, `[cache]` and `[remote]` belong to the engine; every
other table (`[triton]`, …) belongs to a rule set and is handed to it unread, so the engine stays
ignorant of what rule sets configure.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import tomlsource
from .manifest import validation_error
from .layout import BUILD_FILE, OUT_DIR, WORKSPACE_FILE, find_root, sig  # noqa: F401 (re-exported)


class WorkspaceSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ignore: tuple[str, ...] = ()


class CacheSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dir: str | None = None
    remote: str | None = None
    remote_upload: bool = True
    salt: str = ""
    max_size: str | None = None


class RemoteSection(BaseModel):
    """Remote execution (REAPI); see tpbuild/reapi/service.py for where each value may also come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    executor: str | None = None
    instance_name: str = ""
    exec_properties: dict[str, str] = {}
    queue_timeout: float = Field(600.0, gt=0)


@dataclass(frozen=True)
class Workspace:
    root: Path
    workspace: WorkspaceSection
    cache: CacheSection
    remote: RemoteSection
    sections: dict  # rule-set tables, by name
    source: tomlsource.TomlSource

    def packages(self, walked: list[tuple[str, tuple]] | None = None) -> list[str]:
        """Package paths, sorted; scandir recursion because os.walk stats more than it needs. `walked`
        collects each directory looked into with its `sig` from before the look: a package added
        since shows as a change of one of their mtimes."""
        found: list[str] = []
        ignores = self.workspace.ignore

        def walk(dir_path: str, rel: str) -> None:
            if walked is not None:
                walked.append((rel, sig(dir_path)))
            try:
                entries = list(os.scandir(dir_path))
            except OSError:
                return
            for e in entries:
                if e.name == BUILD_FILE and e.is_file():
                    found.append(rel)
                    break
            for e in entries:
                if e.name.startswith(".") or not e.is_dir(follow_symlinks=False):
                    continue
                child = f"{rel}/{e.name}" if rel else e.name
                if child == OUT_DIR or _ignored(child, ignores):
                    continue
                walk(e.path, child)

        walk(str(self.root), "")
        found.sort()
        return found


def _ignored(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, p.rstrip("/") + "/*")
               for p in patterns)


ENGINE_SECTIONS = {"workspace": WorkspaceSection, "cache": CacheSection, "remote": RemoteSection}


def load(root: Path) -> Workspace:
    src = tomlsource.load(root / WORKSPACE_FILE, WORKSPACE_FILE)
    sections: dict = {}
    parsed: dict = {}
    for name, value in src.data.items():
        if not isinstance(value, dict):
            raise src.error((name,), f"unexpected top-level key {name!r}: put settings in a table such as [cache]")
        if name in ENGINE_SECTIONS:
            model = ENGINE_SECTIONS[name]
            try:
                parsed[name] = model.model_validate(value)
            except ValidationError as e:
                raise validation_error(src, (name,), e) from None
        else:
            sections[name] = value
    return Workspace(
        root=root,
        workspace=parsed.get("workspace", WorkspaceSection()),
        cache=parsed.get("cache", CacheSection()),
        remote=parsed.get("remote", RemoteSection()),
        sections=sections,
        source=src,
    )


def cache_dir(ws: Workspace, flag: str | None) -> Path:
    if flag:
        return Path(flag).expanduser().resolve()
    env = os.environ.get("TPBUILD_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    if ws.cache.dir:
        return (ws.root / Path(ws.cache.dir).expanduser()).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tpbuild"


def memo_dir(cache_dir: Path, root: Path) -> Path:
    """Where a workspace's stat memo and analysis memo live: in the cache, not in tpbuild-out, so that
    deleting tpbuild-out (to restore outputs from the cache) does not also throw away what makes the
    restore fast."""
    import xxhash

    return cache_dir / "workspaces" / xxhash.xxh3_64_hexdigest(str(root).encode())
