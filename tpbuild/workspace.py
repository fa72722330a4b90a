"""The workspace: its root, its `tpbuild.toml`, and the packages below it.

The root is the nearest ancestor holding `tpbuild.toml`. Every directory below it with a `BUILD.toml`
is a package named by its path from the root. `[workspace]` and `[cache]` belong to the engine; every
other table (`[triton]`, …) belongs to a rule set and is handed to it unread, so the engine stays
ignorant of what rule sets configure.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

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


@dataclass(frozen=True)
class Workspace:
    root: Path
    workspace: WorkspaceSection
    cache: CacheSection
    sections: dict  # rule-set tables, by name
    source: tomlsource.TomlSource

    @property
    def out_dir(self) -> Path:
        return self.root / OUT_DIR

    def packages(self, walked: list[tuple[str, tuple]] | None = None, misnamed: list[str] | None = None) -> list[str]:
        """Package paths, sorted; scandir recursion because os.walk stats more than it needs. `walked`
        collects each directory looked into with its `sig` from before the look: a package added
        since shows as a change of one of their mtimes. `misnamed` collects files that look meant as
        a manifest but are not read (`build.toml`), so they are reported instead of passed over."""
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
            if misnamed is not None:
                misnamed.extend(f"{rel}/{e.name}" if rel else e.name for e in entries
                                if e.name != BUILD_FILE and e.name.lower() == BUILD_FILE.lower())
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

    def build_file(self, package: str) -> Path:
        return self.root / package / BUILD_FILE


def _ignored(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, p.rstrip("/") + "/*")
               for p in patterns)


def load(root: Path) -> Workspace:
    src = tomlsource.load(root / WORKSPACE_FILE, WORKSPACE_FILE)
    sections: dict = {}
    parsed: dict = {}
    for name, value in src.data.items():
        if not isinstance(value, dict):
            raise src.error((name,), f"unexpected top-level key {name!r}: put settings in a table such as [cache]")
        if name in ("workspace", "cache"):
            model = WorkspaceSection if name == "workspace" else CacheSection
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
