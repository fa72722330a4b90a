"""The output tree `tpbuild-out/` and the workspace's memory of the last build.

`BuildState` (`tpbuild-out/.tpbuild/state`, a journal of kind `state` whose meta is the cache's id,
see `memo.Journal`) records, per action (`a:<id>`), the key, entries and tree digest of its last
result (a `Last`: the entries are decoded when first read, the tree digest is what a downstream key
takes of a whole tree, so an unchanged action costs its record's parse, `delta`), and, per
materialized output (`o:<path>`), its tree digest, the stat of every file placed and the stat of
every directory of the tree. With it a no-op build reads no action cache entry and places no file,
and a build appends only the records it changed. It is tied to one cache directory by that cache's
id: pointing the workspace at another cache (or emptying it) starts from a clean memory.

Outputs are hardlinks (or reflinks) of read-only blobs, for speed; an output edited in place through
its link changes its stat, so the tree is re-placed, and the blob's stat, so the blob store finds
it damaged before anything uses it (see `cas`).

Crash consistency, for a `kill -9` at any point:
- a tree is intact only if every recorded file *and every directory* has its recorded stat: a file
  added by a build that was killed before saving the state moves its directory's mtime, so the
  tree is checked against what is there, not only against what was recorded;
- no temp name is ever inside an output: a tree is assembled, and a single file prepared, in this
  process's temp directory under `tpbuild-out/.tpbuild/tmp`, then renamed into place; a rename onto
  a link of the same inode is a no-op in POSIX, which would leave the temp name behind, so it is
  unlinked then;
- what a killed build left in those temp directories is swept by the next build (`atomic.sweep`);
- `prune` removes the outputs of targets that no longer exist, and only paths this state recorded
  placing (ninja's `-t cleandead`).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from . import atomic, memo
from .action import Entry, EntryKind, OutputEntry, Symlink, blobs_of, tree_digest
from .cas import Cas
from .layout import OUT_DIR, STATE_DIR, stat_sig

KIND, VERSION = "state", 5


class Last:
    """An action's last result as the state holds it. `tree` is `tree_digest(entries)`, kept so a
    downstream key needs no re-hash of an unchanged upstream's entries; the entries themselves are
    built when first read (most unchanged actions never need them)."""

    __slots__ = ("key", "tree", "_raw", "_entries")

    def __init__(self, key: str, tree: str, entries: tuple | None = None, raw: list | None = None):
        self.key = key
        self.tree = tree
        self._entries = entries
        self._raw = raw

    @property
    def entries(self) -> tuple[OutputEntry, ...]:
        if self._entries is None:
            self._entries = tuple(Entry.from_json(e) for e in self._raw)
            self._raw = None
        return self._entries

    def entry(self, path: str) -> OutputEntry | None:
        """The entry at `path`, built alone."""
        if self._raw is None:
            return next((e for e in self._entries if e.path == path), None)
        return next((Entry.from_json(e) for e in self._raw if e[0] == path), None)

    def blobs(self) -> list[tuple[str, bool]]:
        """(digest, executable) of every blob the entries name (`action.blobs_of`), without building them."""
        if self._raw is None:
            return list(blobs_of(self._entries))
        return [(e[2], e[1] == EntryKind.EXECUTABLE) for e in self._raw if e[1] != EntryKind.SYMLINK]

    def to_json(self) -> list:
        return [self.key, self._raw if self._raw is not None else [e.to_json() for e in self._entries], self.tree]


class BuildState:
    def __init__(self, path: Path, cache_id: str):
        self.path = path
        self._journal = memo.Journal(path, KIND, VERSION, cache_id, path.parent / "tmp", f"the build state {path}",
                                     convert=(_from_json, _to_json), keep_text=True)
        self.actions: MutableMapping[str, Last] = _Records(self._journal, "a:")
        # output rel path -> (tree digest, {path: (kind, digest, sig)}, {directory: sig})
        self.outputs: MutableMapping[str, tuple] = _Records(self._journal, "o:")

    def remember(self, action_id: str, key: str, entries) -> None:
        hit = self.actions.get(action_id)
        if hit is None or hit.key != key:
            self.actions[action_id] = Last(key, tree_digest(entries), entries)

    @classmethod
    def load(cls, path: Path, cache_id: str) -> "BuildState":
        return cls(path, cache_id)

    def save(self) -> str | None:
        """None when saved (or unchanged), else a warning (see memo.Journal.save)."""
        if not self._journal.changed:
            return None
        atomic.crash_point("save-state")
        return self._journal.save()


class _Records(MutableMapping):
    """One kind of record of the state's journal (decoded when first read: a build that changes one
    model reads the records of what it touches, not all of them). A record that does not decode is
    absent: the build re-checks what it would have said."""

    def __init__(self, journal: memo.Journal, prefix: str):
        self._journal = journal
        self._prefix = prefix
        n = len(prefix)
        self._keys = {k[n:] for k in journal.keys() if k.startswith(prefix)}

    def preload(self, keys) -> None:
        """Decode these records in one parse (see `memo.Journal.preload`)."""
        self._journal.preload([self._prefix + k for k in keys if k in self._keys])

    def __contains__(self, key: object) -> bool:
        return key in self._keys  # without decoding it (a record that does not decode is found absent later)

    def __getitem__(self, key: str):
        hit = self._journal.get(self._prefix + key) if key in self._keys else None
        if hit is None:
            self._keys.discard(key)
            raise KeyError(key)
        return hit

    def __setitem__(self, key: str, value) -> None:
        self._journal.put(self._prefix + key, value)
        self._keys.add(key)

    def __delitem__(self, key: str) -> None:
        self._keys.remove(key)
        self._journal.remove(self._prefix + key)

    def __iter__(self):
        return iter(list(self._keys))

    def __len__(self) -> int:
        return len(self._keys)


def _from_json(key: str, v) -> Last | tuple:
    if key.startswith("a:"):
        k, entries, tree = v
        if not (isinstance(k, str) and isinstance(tree, str) and isinstance(entries, list)
                and all(type(e) is list and len(e) == 4 and e[1] in _KINDS for e in entries)):
            raise ValueError("not an action record")  # a miss: the action is looked up again
        return Last(k, tree, raw=entries)
    d, files, dirs = v
    return (d, {p: (k, bd, tuple(s)) for p, (k, bd, s) in files.items()}, {p: tuple(s) for p, s in dirs.items()})


_KINDS = {k.value for k in EntryKind}


def _to_json(key: str, v) -> list:
    if key.startswith("a:"):
        return v.to_json()
    d, files, dirs = v
    return [d, {p: list(x) for p, x in files.items()}, dirs]


def cache_id(cache_root: Path) -> str:
    """A random id made when a cache directory is first used; a new cache gets a new id."""
    p = cache_root / "id"
    try:
        return p.read_text().strip()
    except FileNotFoundError:
        cache_root.mkdir(parents=True, exist_ok=True)
        tmp = atomic.temp_path(cache_root / "tmp", "id")
        tmp.write_text(os.urandom(16).hex())
        try:
            os.link(tmp, p)  # first writer wins; others read theirs
        except FileExistsError:
            pass
        tmp.unlink()
        return p.read_text().strip()


def _intact(root: Path, rel: str, rec, proven=None) -> bool:
    """Every file placed last time is still there, unmodified (same inode, size, mtime and mode), and
    no directory of the tree gained or lost an entry since (its own stat is unchanged); known from
    `proven` (see `materialize`) where it can tell, else looked at."""
    if proven is not None and proven(rel, rec):
        return True
    base = f"{root}/{rel}/"  # strings, not pathlib, and a plain loop: a build checks every placed file
    lstat = os.lstat
    try:
        for path, (_kind, _d, recorded) in rec[1].items():
            if stat_sig(lstat(base + path)) != recorded:
                return False
        for path, recorded in rec[2].items():
            if stat_sig(lstat(base + path)) != recorded:
                return False
    except OSError:
        return False
    return True


def in_place(state: BuildState, root: Path, rel: str, digest: str, proven=None) -> bool:
    """`root/rel` holds, intact, the tree of this digest as this state placed it. `proven`: see `materialize`."""
    rec = state.outputs.get(rel)
    return rec is not None and rec[0] == digest and _intact(root, rel, rec, proven)


def materialize(state: BuildState, root: Path, rel: str, entries: tuple[Entry, ...], cas: Cas, proven=None) -> bool:
    """Make `root/rel` hold exactly `entries`; False if it already did.

    An intact tree is updated file by file, each file replaced by an atomic rename, so one edited
    model in a repository of a thousand touches one file. Otherwise (first build, a tree damaged by
    hand or by a killed build) the tree is assembled aside and renamed into place whole. `proven(rel,
    record)`: True when the caller knows the tree intact as recorded (a delta build, from the stamp's
    check of every placed file: `incremental.py`), else it is checked here."""
    digest = tree_digest(entries)
    rec = state.outputs.get(rel)
    intact = rec is not None and _intact(root, rel, rec, proven)
    if intact and rec[0] == digest:
        return False
    placed = None
    if intact:
        try:
            placed = _update(root, root / rel, rec[1], entries, cas)
        except OSError:  # a file became a directory or the other way round: rebuild the tree whole
            placed = None
    if placed is None:
        placed, dirs = assemble(root, rel, entries, cas)
    else:  # only the directories whose entries were replaced or removed moved (if none was made or removed)
        touched = {os.path.dirname(p) for p in rec[1].keys() - placed.keys()}
        touched.update(os.path.dirname(p) for p, r in placed.items() if r is not rec[1].get(p))
        dirs = _dirs(root / rel, entries, rec[2], touched)
    state.outputs[rel] = (digest, placed, dirs)
    return True


def assemble(root: Path, rel: str, entries: tuple[Entry, ...], cas: Cas) -> tuple[dict, dict]:
    """`root/rel` assembled whole from `entries` (aside, then renamed into place): its files' records and
    its directories' stats, as a build state records a placed tree (the placement lane runs this too)."""
    return _replace(root, rel, entries, cas), _dirs(root / rel, entries)


def _dirs(dest: Path, entries: tuple[OutputEntry, ...], old: dict | None = None,
          touched: set[str] = frozenset()) -> dict:
    """The stat of every directory of the tree, taken once it is complete. `old`: the directories'
    stats before an update in place, which touched only the entries of `touched`: when the tree has
    the same directories, the others are at their old stat (a repository of 10,000 models, one
    model changed, is not 30,000 lstats)."""
    names = {""}
    for e in entries:
        d = os.path.dirname(e.path)
        while d and d not in names:
            names.add(d)
            d = os.path.dirname(d)
    base = f"{dest}/"
    if old is not None and names == old.keys():
        return {d: stat_sig(os.lstat(base + d)) if d in touched else old[d] for d in sorted(names)}
    return {d: stat_sig(os.lstat(base + d)) for d in sorted(names)}


def _work(root: Path) -> Path:
    return root / STATE_DIR / "tmp"


def _place(p: Path, e: OutputEntry, cas: Cas) -> tuple:
    if isinstance(e, Symlink):
        os.symlink(e.target, p)
    else:
        cas.link(e.digest, e.executable, p)
    return (*e.identity, stat_sig(os.lstat(p)))


def _update(root: Path, dest: Path, old: dict, entries: tuple[Entry, ...], cas: Cas) -> dict:
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
            atomic.remove(p)
        tmp = atomic.temp_path(_work(root), "file")
        try:
            placed[e.path] = _place(tmp, e, cas)
            atomic.crash_point("update-file")
            os.replace(tmp, p)
        finally:
            atomic.unlink(tmp)  # left behind when `p` already was a link of the same blob
    for path in old.keys() - placed.keys():
        p = dest / path
        if os.path.lexists(p) and not (os.path.isdir(p) and not os.path.islink(p)):
            os.unlink(p)
        _prune_empty(p.parent, dest)
    return placed


def _prune_empty(d: Path, stop: Path) -> None:
    """Remove `d` and its parents, up to `stop`, while they are empty."""
    while d != stop and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent


def _replace(root: Path, rel: str, entries: tuple[Entry, ...], cas: Cas) -> dict:
    dest = root / rel
    tmp = atomic.temp_path(_work(root), "new")
    tmp.mkdir()
    placed = {}
    try:
        for d in sorted({os.path.dirname(e.path) for e in entries} - {""}):
            os.makedirs(tmp / d, exist_ok=True)
        for e in entries:
            placed[e.path] = _place(tmp / e.path, e, cas)
    except OSError:
        atomic.remove(tmp)  # the old tree stays as it was
        raise
    atomic.crash_point("replace-tree")
    if not dest.parent.is_dir():  # mkdir of an existing directory is slow on some filesystems
        dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):
        trash = atomic.temp_path(_work(root), "old")
        os.rename(dest, trash)
        atomic.crash_point("swap-tree")
        os.rename(tmp, dest)
        atomic.remove(trash)
    else:
        os.rename(tmp, dest)
    return placed


def prune(state: BuildState, root: Path, live: set[str]) -> list[str]:
    """Remove the outputs this state recorded placing that are not in `live` (targets that no longer
    exist), and the directories that leaves empty up to tpbuild-out; returns what went."""
    gone = []
    for rel in sorted(state.outputs.keys() - live):
        p = root / rel
        if os.path.lexists(p):
            atomic.remove(p)
        del state.outputs[rel]
        gone.append(rel)
        _prune_empty(p.parent, root / OUT_DIR)
    return gone

