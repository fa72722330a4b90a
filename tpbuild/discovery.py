"""Package discovery: every directory below the root with a `BUILD.toml`, found again by listing only
the directories that changed since the last build.

Listing 20,000 directories took a 10,000-model build about a second. A directory's entries are what
its stat vouches for: adding, removing or renaming an entry (a new BUILD.toml, a new or deleted
package directory) moves its mtime. So the last discovery's findings are kept per directory with the
stat taken before listing it, and a directory whose stat is unchanged is not listed again: its
manifest and its subdirectories are the recorded ones (each still stat'ed, and listed if it changed).
With the no-op stamp's stats at hand (`observed.py`), an unchanged workspace is discovered without a
system call.

What a stat does not vouch for is listed every time: a directory recorded within the racy window of
its listing (an entry added in the same timestamp granule keeps its mtime), one that could not be
listed, and one whose `BUILD.toml` is a symlink (its target can appear or go without the directory
changing). Ignore patterns come from tpbuild.toml: other patterns, or another root, and the record
is not used.

Format: `tpbuild-out/.tpbuild/packages`, a memo (`memo.py`) of kind `packages`: {"root", "ignore",
"dirs": {rel: [size, mtime_ns, ino, mode, manifest (0/1), [misnamed names], [subdirectory names]]}}.
It is saved only into an existing state directory (a query in a workspace never built leaves nothing).
"""

from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path

from . import memo
from .layout import BUILD_FILE, OUT_DIR, RACY_WINDOW_NS, STATE_DIR
from .observed import Observed

KIND, VERSION = "packages", 1


def discover(root: Path, ignores: tuple[str, ...], observed: Observed, walked: list | None,
             misnamed: list | None) -> list[str]:
    """Package paths, sorted. `walked` collects each directory looked into with its `sig` from before
    the look (the no-op stamp records them); `misnamed` the files that look meant as a manifest but
    are not read (`build.toml`)."""
    path = Path(root) / STATE_DIR / KIND
    last = _load(path, str(root), list(ignores))
    horizon = time.time_ns() - RACY_WINDOW_NS
    dirs: dict[str, list] = {}
    found: list[str] = []
    scanned = 0

    def walk(dir_path: str, rel: str) -> None:
        nonlocal scanned
        s = observed.sig(dir_path)
        if walked is not None:
            walked.append((rel, s))
        rec = last.get(rel) if s is not None else None
        if rec is None or rec[:4] != list(s):
            rec = _listed(dir_path, rel, s, ignores)
            scanned += 1
        if rec[4]:
            found.append(rel)
        if misnamed is not None:
            misnamed.extend(f"{rel}/{n}" if rel else n for n in rec[5])
        if rec[0] is not None and rec[1] < horizon:
            dirs[rel] = rec
        for name in rec[6]:
            walk(f"{dir_path}/{name}", f"{rel}/{name}" if rel else name)

    walk(str(root), "")
    found.sort()
    observed.discovery = "reused" if not scanned else "rescanned" if last else "walked"
    observed.scanned = scanned
    if scanned or dirs.keys() != last.keys():
        state = path.parent
        if state.is_dir():  # a failed save (a full disk) only means listing again next time
            memo.save(path, KIND, VERSION, {"root": str(root), "ignore": list(ignores), "dirs": dirs},
                      state / "tmp", "the package discovery memo")
    return found


def _listed(dir_path: str, rel: str, s: tuple | None, ignores: tuple[str, ...]) -> list:
    """A directory's record, from listing it (`s`: its stat before the listing)."""
    try:
        entries = list(os.scandir(dir_path))
    except OSError:
        return [None, 0, 0, 0, 0, [], []]  # never kept: listed again next time
    manifest = 0
    trusted = s is not None
    for e in entries:
        if e.name == BUILD_FILE and e.is_file():
            manifest = 1
            trusted = trusted and not e.is_symlink()
            break
    misnamed = [e.name for e in entries if e.name != BUILD_FILE and e.name.lower() == BUILD_FILE.lower()]
    children = []
    for e in entries:
        if e.name.startswith(".") or not e.is_dir(follow_symlinks=False):
            continue
        child = f"{rel}/{e.name}" if rel else e.name
        if child == OUT_DIR or _ignored(child, ignores):
            continue
        children.append(e.name)
    head = list(s) if trusted else [None, 0, 0, 0]
    return [*head, manifest, misnamed, children]


def _load(path: Path, root: str, ignores: list[str]) -> dict[str, list]:
    data = memo.load(path, KIND, VERSION)
    if not isinstance(data, dict) or data.get("root") != root or data.get("ignore") != ignores:
        return {}
    dirs = data.get("dirs")
    if not isinstance(dirs, dict):
        return {}
    return {rel: rec for rel, rec in dirs.items() if _sound(rec)}


def _sound(rec) -> bool:
    """A record of the shape `_listed` makes (a damaged one is listed again, for its directory alone)."""
    return (isinstance(rec, list) and len(rec) == 7 and all(type(v) is int for v in rec[:5])
            and isinstance(rec[5], list) and isinstance(rec[6], list)
            and all(isinstance(n, str) and n and "/" not in n for n in rec[5])
            and all(isinstance(n, str) and n and "/" not in n and n[0] != "." for n in rec[6]))


def _ignored(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, p.rstrip("/") + "/*")
               for p in patterns)
