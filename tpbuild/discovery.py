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
"dirs": [every directory looked into, in the walk's order], "stats": their `layout.stat_sig`s, four
integers each, all zeros for one listed every time, as one `layout.packed_text`, "packages": [those
with a manifest], "misnamed": {directory: [names]}}: flat lists and one text, which decode fast. When no
directory's stat moved (the usual build) they are checked in one pass, in order, the stats taken now
packed and compared with the recorded ones as two arrays (80,000 JSON numbers at 10,000 models were an
object each, and 20,000 tuples made of them to compare); otherwise the walk goes down the tree, listing
what moved and taking the rest from the record. It is saved only into an existing state directory (a
query in a workspace never built leaves nothing).
"""

from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path

from . import memo
from .layout import BUILD_FILE, OUT_DIR, RACY_WINDOW_NS, STATE_DIR, packed, packed_sigs, packed_text, stat_at,\
    unpacked
from .observed import Observed

KIND, VERSION = "packages", 3
UNTRUSTED = [0, 0, 0, 0]  # the stat of a directory listed every time: no directory has it


def discover(root: Path, ignores: tuple[str, ...], observed: Observed, walked: list | None,
             misnamed: list | None) -> list[str]:
    """Package paths, sorted. `walked` collects each directory looked into with its `sig` from before
    the look (the no-op stamp records them); `misnamed` the files that look meant as a manifest but
    are not read (`build.toml`)."""
    path = Path(root) / STATE_DIR / KIND
    last = _load(path, str(root), list(ignores))
    walked = walked if walked is not None else []
    start = len(walked)
    unchanged = last is not None and _unchanged(f"{root}/", last, observed, walked)
    observed.dirs_done()
    if unchanged:
        observed.discovery, observed.scanned = "reused", 0
        if misnamed is not None:
            misnamed.extend(f"{rel}/{n}" if rel else n for rel, names in last["misnamed"].items() for n in names)
        return sorted(last["packages"])
    del walked[start:]
    return _walk(root, ignores, observed, walked, misnamed, last, path)


def _unchanged(base: str, last: dict, observed: Observed, walked: list) -> bool:
    """Every recorded directory has its recorded stat (collected into `walked`, in the walk's order).
    Stat'ed and compared a slice at a time (`Observed.dir_sigs`: in C, without a stamp; from the last by
    a helper), so a change near the top stats little more than the walk that follows it does."""
    dirs, recorded = last["dirs"], last["stats"]
    for i in range(0, len(dirs), _SLICE):
        rels = dirs[i:i + _SLICE]
        now = observed.dir_sigs([base + rel if rel else base[:-1] for rel in rels])
        if None in now or packed_sigs(now) != recorded[4 * i:4 * (i + len(rels))]:
            return False
        walked += zip(rels, now)
    return True


_SLICE = 1024  # directories `_unchanged` stats at a time


def _walk(root: Path, ignores: tuple[str, ...], observed: Observed, walked: list, misnamed: list | None,
          last: dict | None, path: Path) -> list[str]:
    """Down the tree from the root, listing each directory whose stat moved since `last` recorded it."""
    horizon = time.time_ns() - RACY_WINDOW_NS
    known: dict[str, tuple] = {}
    children: dict[str, list[str]] = {}
    if last is not None:
        stats = last["stats"]
        known = {rel: stat_at(stats, i) for i, rel in enumerate(last["dirs"])}
        for rel in last["dirs"]:
            if rel:
                parent, _, name = rel.rpartition("/")
                children.setdefault(parent, []).append(name)
    had = set(last["packages"]) if last is not None else set()
    was_misnamed = last["misnamed"] if last is not None else {}
    dirs: list[str] = []
    stats_now: list[int] = []
    found: list[str] = []
    odd: dict[str, list[str]] = {}
    scanned = 0

    def walk(dir_path: str, rel: str) -> None:
        nonlocal scanned
        s = observed.sig(dir_path)
        walked.append((rel, s))
        if s is not None and known.get(rel) == s:
            manifest, names, subdirs, trusted = rel in had, was_misnamed.get(rel, []), children.get(rel, []), True
        else:
            manifest, names, subdirs, trusted = _listed(dir_path, rel, ignores)
            scanned += 1
        dirs.append(rel)
        stats_now.extend(s if trusted and s is not None and s[1] < horizon else UNTRUSTED)
        if manifest:
            found.append(rel)
        if names:
            odd[rel] = names
        for name in subdirs:
            walk(f"{dir_path}/{name}", f"{rel}/{name}" if rel else name)

    walk(str(root), "")
    observed.discovery = "rescanned" if last is not None else "walked"
    observed.scanned = scanned
    if misnamed is not None:
        misnamed.extend(f"{rel}/{n}" if rel else n for rel, names in odd.items() for n in names)
    if path.parent.is_dir():  # a failed save (a full disk) only means listing again next time
        memo.save(path, KIND, VERSION, {"root": str(root), "ignore": list(ignores), "dirs": dirs, "stats": packed_text(packed(stats_now)),
                                        "packages": found, "misnamed": odd},
                  path.parent / "tmp", "the package discovery memo")
    found.sort()
    return found


def _listed(dir_path: str, rel: str, ignores: tuple[str, ...]) -> tuple[bool, list[str], list[str], bool]:
    """A directory's manifest, misnamed manifests and subdirectories to walk, from listing it; and
    whether its stat vouches for them next time."""
    try:
        entries = list(os.scandir(dir_path))
    except OSError:
        return False, [], [], False
    manifest = trusted = False
    for e in entries:
        if e.name == BUILD_FILE and e.is_file():
            manifest, trusted = True, not e.is_symlink()
            break
    else:
        trusted = True
    names = [e.name for e in entries if e.name != BUILD_FILE and e.name.lower() == BUILD_FILE.lower()]
    subdirs = []
    for e in entries:
        if e.name.startswith(".") or not e.is_dir(follow_symlinks=False):
            continue
        child = f"{rel}/{e.name}" if rel else e.name
        if child == OUT_DIR or _ignored(child, ignores):
            continue
        subdirs.append(e.name)
    return manifest, names, subdirs, trusted


def _load(path: Path, root: str, ignores: list[str]) -> dict | None:
    """The last discovery's record, if it is of this root and these ignore patterns and of the shape
    `_walk` saves (a damaged one is not used: everything is listed again), its stats unpacked."""
    data = memo.load(path, KIND, VERSION)
    if not isinstance(data, dict) or data.get("root") != root or data.get("ignore") != ignores:
        return None
    dirs, packages, odd = data.get("dirs"), data.get("packages"), data.get("misnamed")
    try:
        stats = data["stats"] = unpacked(data.get("stats"))
    except ValueError:
        return None
    if not (isinstance(dirs, list) and isinstance(packages, list)
            and isinstance(odd, dict) and len(stats) == 4 * len(dirs) and dirs[:1] == [""]):
        return None
    if not (set(map(type, dirs)) == {str} and set(map(type, packages)) <= {str}
            and all(isinstance(v, list) and set(map(type, v)) <= {str} for v in odd.values())):
        return None
    # Relative paths below the root only, as the walk makes them: no empty, hidden or parent component.
    # Looked for in them all at once, each between NULs (which no path holds: one that does is refused).
    joined = "\0" + "\0".join(dirs[1:]) + "\0"
    if "\0." in joined or "\0/" in joined or "/." in joined or "//" in joined or "/\0" in joined:
        return None
    return data


def _ignored(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel, p.rstrip("/") + "/*")
               for p in patterns)
