"""Persisted memo of file digests, keyed by (size, mtime_ns, inode), so unchanged files are never re-read.

Format: the first line `tpbuild-statcache v1`, then a pickle of {path: (size, mtime_ns, ino, digest)}.
An unknown header is a miss (start empty), never an error.

The racy case (git's "racy clean"): a file rewritten with the same size within the filesystem's
timestamp granularity of our hashing keeps its stat. So an entry whose mtime is within
`RACY_WINDOW_NS` of the moment it was hashed is used for this run but not persisted: the next run
re-reads it. A file must sit unmodified for two seconds before its digest is trusted from the stat alone.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from pathlib import Path

from . import digest
from .layout import RACY_WINDOW_NS

HEADER = b"tpbuild-statcache v1\n"

Sig = tuple  # (size, mtime_ns, ino)


def signature(st: os.stat_result) -> Sig:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class StatCache:
    def __init__(self, path: Path):
        self.path = path
        self._entries: dict[str, tuple] = {}
        self._racy: set[str] = set()
        self._dirty = False
        self._lock = threading.Lock()
        try:
            with open(path, "rb") as f:
                if f.readline() == HEADER:
                    self._entries = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError):
            self._entries = {}

    def digest(self, path: str, full: str | None = None) -> tuple[str, Sig]:
        """Digest and stat signature of a file; `path` is the memo key, `full` where to read it."""
        full = full or path
        st = os.stat(full)
        sig = signature(st)
        hit = self._entries.get(path)
        if hit is not None and hit[:3] == sig and path not in self._racy:
            return hit[3], sig
        d = digest.of_file(full)
        with self._lock:
            self._entries[path] = (*sig, d)
            self._dirty = True
            if st.st_mtime_ns >= time.time_ns() - RACY_WINDOW_NS:
                self._racy.add(path)
            else:
                self._racy.discard(path)
        return d, sig

    def peek(self, path: str) -> Sig | None:
        """The signature recorded when `path` was last hashed."""
        hit = self._entries.get(path)
        return hit[:3] if hit is not None else None

    def save(self) -> None:
        if not self._dirty:
            return
        keep = {k: v for k, v in self._entries.items() if k not in self._racy}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(HEADER)
            pickle.dump(keep, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.path)
        self._dirty = False
