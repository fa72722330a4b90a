"""Persisted memo of file digests, keyed by the file's stat signature (`layout.stat_sig`), so
unchanged files are never re-read.

Format: a journal (`memo.Journal`, appended to by each build with what it hashed) of kind
`statcache`: path -> [size, mtime_ns, ino, mode, digest].

The racy case (git's "racy clean"): a file rewritten with the same size within the filesystem's
timestamp granularity of our hashing keeps its stat. So an entry whose mtime is within
`RACY_WINDOW_NS` of the moment it was hashed is used for this run but not persisted: the next run
re-reads it. A file must sit unmodified for two seconds before its digest is trusted from the stat alone.
"""

from __future__ import annotations

import os
import threading
import time
from itertools import compress, repeat
from operator import eq, is_, itemgetter, not_
from pathlib import Path

from . import digest, memo
from .layout import RACY_WINDOW_NS, sigs, stat_sig as signature  # noqa: F401 (the signature the memo keys by)
from .observed import Observed

KIND, VERSION = "statcache", 3

Sig = tuple  # layout.stat_sig
_NO_RECORD = [None] * 5  # in place of a path's record when it has none, or one not of a stat and a digest


class StatCache:
    def __init__(self, path: Path, tmp_parent: Path | None = None, observed: Observed | None = None,
                 eager: bool = True):
        """`tmp_parent`: where saving makes its temp file (`<cache>/tmp`); the memo's own directory
        by default. `observed`: the stats the no-op stamp's check took (observed.py). `eager`: index
        every entry at once, for a build that looks at most of them (see `memo.Journal`); a delta build
        looks at a few (`incremental.py`), each then found and decoded when asked for (`memo.Journal`'s
        `lazy`). Either way an entry is decoded only when asked for, those `digests` asks for in one
        parse; and the memo is read only when first asked (`_memo`): an ordinary no-op build asks it
        nothing when the settle memo vouches for its sources' stats (`vouch`, `delta.Premise.sourced`) and
        its blobs' (`cas.Cas.whole_at`, and stamped at the stats they were proven at: `proven`)."""
        self.path = path
        self._stat = observed.stat if observed is not None else lambda full: signature(os.stat(full))
        self._sigs = observed.sigs if observed is not None else sigs  # of many paths, None for one not there
        self._tmp_parent = tmp_parent or path.parent / "tmp"
        self._lazy = not eager
        # Read when first asked (`_memo`): a no-op build whose settle memo vouches for its sources' and its
        # blobs' stats asks it nothing (at 10,000 models, 3.9 MB not read and split into 30,000 records).
        self._journal: memo.Journal | None = None
        self._new: dict[str, list] = {}  # hashed by this build: saved unless racy
        self._racy: set[str] = set()
        # Stats another memo vouches for the digests at (`vouch`): path -> stat.
        self._vouched: dict[str, Sig] = {}
        self._lock = threading.Lock()
        self._opening = threading.Lock()

    @property
    def _memo(self) -> memo.Journal:
        """The journal, read on first use (the scheduler's threads may ask at once)."""
        if self._journal is None:
            with self._opening:
                if self._journal is None:
                    self._journal = memo.Journal(self.path, KIND, VERSION, None, self._tmp_parent,
                                                 f"the stat memo {self.path}", lazy=self._lazy)
        return self._journal

    def digest(self, path: str, full: str | None = None) -> tuple[str, Sig]:
        """Digest and stat signature of a file; `path` is the memo key, `full` where to read it."""
        full = full or path
        sig = self._stat(full)
        hit = self._entry(path)
        if hit is not None and tuple(hit[:4]) == sig and path not in self._racy:
            return hit[4], sig
        return self._hashed(path, full, sig), sig

    def digests(self, paths: list[str], base: str = "", sigs: list[Sig | None] | None = None) \
            -> tuple[list[str | None], list[Sig | None]]:
        """`digest` of many files (`base + path` read, `path` the memo key), as two columns: their digests
        and their stats, None for one that could not be read (its caller asks `digest` again for the
        reason). A no-op build at 10,000 models checks 30,000 files so, its sources and the blobs its
        results name, by column: the stats taken in C (`Observed.sigs`, `layout.sigs`), the records looked
        up in C (`memo.Journal.get_all`) and compared with the stats in C; only a file whose stat is not
        the one recorded (or whose record is not a whole one, or racy) goes through a Python loop.
        `sigs`: their stats, when the caller took them (`sigs`) before it knew it needed their digests."""
        fulls = list(map(base.__add__, paths)) if base else paths
        hits = self._entries(paths)
        if sigs is None:
            sigs = self._sigs(fulls)
        if not ({*map(type, hits)} <= {list} and {*map(len, hits)} <= {5}):  # some record absent, or not whole
            hits = [h if h.__class__ is list and len(h) == 5 else _NO_RECORD for h in hits]
        found = list(map(itemgetter(4), hits))
        same = list(map(eq, map(tuple, map(itemgetter(slice(0, 4)), hits)), sigs))
        racy = self._racy
        if racy and not racy.isdisjoint(paths):
            same = [s and p not in racy for s, p in zip(same, paths)]
        for i in compress(range(len(paths)), map(not_, same)):
            try:
                found[i] = None if sigs[i] is None else self._hashed(paths[i], fulls[i], sigs[i])
            except OSError:
                found[i] = None
        return found, sigs

    def sigs(self, fulls: list[str]) -> list[Sig | None]:
        """The stats of many files as `digests` takes them (the no-op stamp's check's, where it took them),
        for a memo that compares them with stats of its own (`cas.Cas.whole_at`)."""
        return self._sigs(fulls)

    def _hashed(self, path: str, full: str, sig: Sig) -> str:
        """Hash a file whose stat is not the recorded one, and record it at that stat."""
        d = digest.of_file(full)
        with self._lock:
            self._new[path] = [*sig, d]
            if sig[1] >= time.time_ns() - RACY_WINDOW_NS:
                self._racy.add(path)
            else:
                self._racy.discard(path)
        return d

    def peek(self, path: str) -> Sig | None:
        """The signature recorded when `path` was last hashed."""
        hit = self._entry(path)
        return tuple(hit[:4]) if hit is not None else None

    def vouch(self, paths: list[str], stats: list[Sig]) -> None:
        """Take `stats` as the ones the files' digests were taken at, as another memo found them (the
        settle memo: `delta.Premise.sourced`), so that `peeks` answers them without reading this memo."""
        self._vouched.update(zip(paths, stats))

    def peeks(self, paths: list[str]) -> list[Sig | None]:
        """`peek` of each path, in C while every one has a well-formed entry (the no-op stamp asks of
        every source and blob, 30,000 at 10,000 models), or is at a stat vouched for (`vouch`) and none
        was hashed since."""
        if self._vouched and not self._new:
            found = list(map(self._vouched.get, paths))
            if None not in found:
                return found
        hits = self._entries(paths)
        if {*map(type, hits)} == {list} and {*map(len, hits)} == {5}:
            return list(map(tuple, map(itemgetter(slice(0, 4)), hits)))
        return list(map(self.peek, paths))

    def proven(self, paths: list[str], found: list[Sig | None]) -> list[Sig | None]:
        """`peeks` of files this build found whole through this memo, or at a stat such a check found
        them whole at before (`cas.Cas.verified`, `cas.Cas.whole_at`): `found`, the stat each was found
        at (None: not found so, looked up). A file is found whole only at its entry's stat, or hashed
        and entered at the stat it was hashed at, kept unless racy: so that stat is its entry's, and the
        no-op stamp's 20,000 blobs at 10,000 models need no entry decoded."""
        racy = self._racy
        if None in found or (racy and not racy.isdisjoint(paths)):
            looked = iter(self.peeks(list(compress(paths, map(is_, found, repeat(None))))))
            found = [next(looked) if s is None else None if p in racy else s for p, s in zip(paths, found)]
        return found

    def _entries(self, paths: list[str]) -> list:
        """Each path's entry as read, not checked (None when absent): hashed by this build, before the
        memo's record (looked up in C, `memo.Journal.get_all`)."""
        journal = self._memo
        journal.preload(paths)
        hits = journal.get_all(paths)
        return list(map(self._new.get, paths, hits)) if self._new else hits

    def _entry(self, path: str) -> list | None:
        hit = self._new.get(path)
        if hit is None:
            hit = self._memo.get(path)
        return hit if isinstance(hit, list) and len(hit) == 5 else None

    def forget(self, path: str) -> None:
        journal = self._memo
        with self._lock:
            journal.remove(path)
            self._new.pop(path, None)

    def save(self) -> str | None:
        """None when saved (or nothing to save), else a warning (see memo.Journal.save). A memo never read
        is left as it is: nothing was asked of it, so nothing hashed nor forgotten."""
        if self._journal is None:
            return None
        journal = self._memo
        with self._lock:
            for path, entry in self._new.items():
                if path in self._racy:
                    journal.remove(path)  # hashed too soon after its last change: not trusted later
                else:
                    journal.put(path, entry)
            self._new.clear()
        return journal.save()
