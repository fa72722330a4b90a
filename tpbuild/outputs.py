"""The output tree `tpbuild-out/` and the workspace's memory of the last build.

`BuildState` (`tpbuild-out/.tpbuild/state`; first line `tpbuild-state v2`, then a pickle) records,
per action, the key and entries of its last result, and, per materialized output, its tree digest and
the stat of every file placed. With it a no-op build reads no action cache entry and places no file.
It is tied to one cache directory by that cache's id: pointing the workspace at another cache (or
emptying it) starts from a clean memory.

Outputs are hardlinks (or reflinks) of read-only blobs. A tree is assembled in a temporary directory
and renamed into place, so an interrupted build leaves the old tree or the new one, never a mix.
"""

from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .action import Entry, OutputEntry, Symlink, tree_digest
from .cas import Cas
from .statcache import signature

HEADER = b"tpbuild-state v2\n"


@dataclass
class BuildState:
    path: Path
    cache_id: str
    actions: dict = field(default_factory=dict)  # action id -> (key, entries)
    outputs: dict = field(default_factory=dict)  # output rel path -> (tree digest, {path: (kind, digest, sig)})
    dirty: bool = False

    def remember(self, action_id: str, key: str, entries) -> None:
        hit = self.actions.get(action_id)
        if hit is None or hit[0] != key:
            self.actions[action_id] = (key, entries)
            self.dirty = True

    @classmethod
    def load(cls, path: Path, cache_id: str) -> "BuildState":
        try:
            with open(path, "rb") as f:
                if f.readline() == HEADER:
                    data = pickle.load(f)
                    if data.get("cache_id") == cache_id:
                        return cls(path, cache_id, data["actions"], data["outputs"])
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, KeyError, AttributeError):
            pass
        return cls(path, cache_id)

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".state.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(HEADER)
            pickle.dump({"cache_id": self.cache_id, "actions": self.actions, "outputs": self.outputs}, f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.path)
        self.dirty = False


def cache_id(cache_root: Path) -> str:
    """A random id made when a cache directory is first used; a new cache gets a new id."""
    p = cache_root / "id"
    try:
        return p.read_text().strip()
    except FileNotFoundError:
        cache_root.mkdir(parents=True, exist_ok=True)
        tmp = cache_root / f".id.{os.getpid()}"
        tmp.write_text(os.urandom(16).hex())
        try:
            os.link(tmp, p)  # first writer wins; others read theirs
        except FileExistsError:
            pass
        tmp.unlink()
        return p.read_text().strip()


def _intact(root: Path, rel: str, rec) -> bool:
    """Every file placed last time is still there, unmodified (same inode, size and mtime)."""
    base = f"{root}/{rel}/"  # strings, not pathlib: a no-op build checks every placed file
    try:
        return all(signature(os.lstat(base + path)) == sig for path, (_kind, _d, sig) in rec[1].items())
    except OSError:
        return False


def materialize(state: BuildState, root: Path, rel: str, entries: tuple[Entry, ...], cas: Cas) -> bool:
    """Make `root/rel` hold exactly `entries`; False if it already did.

    An intact tree is updated file by file, each file replaced by an atomic rename, so one edited
    model in a repository of a thousand touches one file. Otherwise (first build, a tree damaged by
    hand) the tree is assembled aside and renamed into place whole."""
    digest = tree_digest(entries)
    rec = state.outputs.get(rel)
    intact = rec is not None and _intact(root, rel, rec)
    if intact and rec[0] == digest:
        return False
    placed = None
    if intact:
        try:
            placed = _update(root / rel, rec[1], entries, cas)
        except OSError:  # a file became a directory or the other way round: rebuild the tree whole
            placed = None
    if placed is None:
        placed = _replace(root, rel, entries, cas)
    state.outputs[rel] = (digest, placed)
    state.dirty = True
    return True


def _place(p: Path, e: OutputEntry, cas: Cas) -> tuple:
    if isinstance(e, Symlink):
        os.symlink(e.target, p)
    else:
        cas.link(e.digest, e.executable, p)
    return (*e.identity, signature(os.lstat(p)))


def _update(dest: Path, old: dict, entries: tuple[Entry, ...], cas: Cas) -> dict:
    placed = {}
    for e in entries:
        prev = old.get(e.path)
        if prev is not None and prev[:2] == e.identity:
            placed[e.path] = prev
            continue
        p = dest / e.path
        if not p.parent.is_dir():
            p.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(p) and not os.path.islink(p):
            remove_tree(p)
        tmp = p.with_name(f".{p.name}.tpbuild-new")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        placed[e.path] = _place(tmp, e, cas)
        os.replace(tmp, p)
    for path in old.keys() - placed.keys():
        p = dest / path
        if os.path.lexists(p) and not (os.path.isdir(p) and not os.path.islink(p)):
            os.unlink(p)
        parent = p.parent
        while parent != dest and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    return placed


def _replace(root: Path, rel: str, entries: tuple[Entry, ...], cas: Cas) -> dict:
    dest = root / rel
    work = root / "tpbuild-out" / ".tpbuild" / "tmp"
    if not work.is_dir():
        work.mkdir(parents=True, exist_ok=True)
    tmp = work / f"new.{os.getpid()}.{os.urandom(4).hex()}"
    tmp.mkdir()
    placed = {}
    try:
        for d in sorted({os.path.dirname(e.path) for e in entries} - {""}):
            os.makedirs(tmp / d, exist_ok=True)
        for e in entries:
            placed[e.path] = _place(tmp / e.path, e, cas)
    except OSError:
        remove_tree(tmp)  # the old tree stays as it was
        raise
    if not dest.parent.is_dir():  # mkdir of an existing directory is slow on some filesystems
        dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):
        trash = work / f"old.{os.getpid()}.{os.urandom(4).hex()}"
        os.rename(dest, trash)
        os.rename(tmp, dest)
        remove_tree(trash)
    else:
        os.rename(tmp, dest)
    return placed


def remove_tree(p: Path) -> None:
    """rmtree that does not trip over the read-only files and directories outputs are made of."""
    if p.is_symlink() or p.is_file():
        p.unlink()
        return

    def onerror(func, path, _exc):
        os.chmod(os.path.dirname(path), 0o755)
        func(path)

    shutil.rmtree(p, onerror=onerror)
