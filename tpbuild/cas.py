"""The local content-addressed blob store: `<cache>/cas/<aa>/<hex>[.x]`.

Blobs are immutable and read-only; executables are stored apart (`.x`) because hardlinks share a
mode. Every write goes to a temp file in the cache and is renamed into place, so a reader never sees
half a blob and any number of builds can write at once (the same digest is the same bytes, so the
last rename wins harmlessly).

Read-only modes do not stop root (CI containers) or a user who `chmod`s, so nothing an action can
write shares an inode with a blob: a `run` action's inputs are copies or reflinks (`link(...,
share=False)`), never hardlinks. Only outputs in tpbuild-out are hardlinks, for speed, and those are
checked: a blob is re-hashed (through the stat memo, so only when its stat moved) before its first
use in a build, whether to restore an output, feed an action or upload it. One that no longer
matches its name (a disk fault, an output edited in place through its hardlink) is moved aside to
`<cache>/quarantine/` (kept for inspection, not silently deleted), listed in `quarantined` for the
build to warn about, and reported as missing, so the action that made it runs again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from itertools import compress
from operator import itemgetter
from pathlib import Path

from . import atomic, digest
from .layout import packed_sigs, stat_sig

_FICLONE = 0x40049409  # linux/fs.h: share extents (reflink) where the filesystem can


class Cas:
    def __init__(self, root: Path, statcache=None):
        # Blobs are verified through the stat memo: an unchanged stat means unchanged content, and
        # an in-place edit through a hardlinked output changes the stat, so it is re-hashed and caught.
        self.statcache = statcache
        self.root = root / "cas"
        self._root_text = str(self.root)
        self.tmp = root / "tmp"
        self.quarantine_dir = root / "quarantine"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.quarantined: list[tuple[str, Path]] = []  # (digest, where the damaged blob went)
        # Blobs known whole in this build, (digest, executable) -> the stat they were verified at
        # (`layout.stat_sig`), None for one this build stored itself: what a placed hardlink of it had,
        # if its content is unchanged, so a link of it proves a placed file (`build._Linked`, which looks
        # up 60,000 of them at 10,000 models: a mapping read directly, not a method). Keyed without the
        # path, which is made only to look at the blob. Read-only outside this class.
        self.verified: dict[tuple[str, bool], tuple | None] = {}
        self._lock = threading.Lock()
        self._dirs: set[Path] = set()  # shard directories known to exist: mkdir is slow on some filesystems

    def path(self, d: str, executable: bool = False) -> Path:
        return Path(self.path_text(d, executable))

    def path_text(self, d: str, executable: bool = False) -> str:
        # A plain string: a no-op build checks every blob it names, and pathlib costs 10x more per path.
        hx = digest.hex_part(d)
        return f"{self._root_text}/{hx[:2]}/{hx}{'.x' if executable else ''}"

    def temp_path(self, hint: str = "blob") -> Path:
        return atomic.temp_path(self.tmp, hint)

    def _publish(self, tmp: str, d: str, executable: bool) -> None:
        """Rename a temp file that already has its blob mode into the store."""
        dest = self.path_text(d, executable)
        shard = dest[:dest.rindex("/")]
        if shard not in self._dirs:
            os.makedirs(shard, exist_ok=True)
            self._dirs.add(shard)
        atomic.crash_point("publish-blob")
        os.replace(tmp, dest)
        with self._lock:
            self.verified[(d, executable)] = None

    def _have(self, d: str, executable: bool) -> bool:
        """Whether the blob is stored; if so its atime is set, which tells eviction it is in use again
        (not its mtime: that is part of the stat signature of the blob and of its hardlinked outputs)."""
        p = self.path_text(d, executable)
        try:
            os.utime(p, ns=(time.time_ns(), os.stat(p).st_mtime_ns))
        except FileNotFoundError:
            return False
        except PermissionError:  # another user's blob in a shared cache: there, just not touched
            pass
        return True

    def _write(self, d: str, executable: bool, fill) -> None:
        """Store a blob whose bytes `fill(fd)` writes into a fresh temp file. The file gets its blob mode
        through its descriptor (no path lookup, whatever the umask), then is renamed into place."""
        tmp = atomic.temp_name(self.tmp, "blob")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                fill(fd)
                os.fchmod(fd, _mode(executable))
            finally:
                os.close(fd)
            self._publish(tmp, d, executable)
        except BaseException:
            atomic.unlink(tmp)
            raise

    def put_bytes(self, data: bytes, executable: bool = False) -> str:
        d = digest.of_bytes(data)
        if not self._have(d, executable):
            self._write(d, executable, lambda fd: _write_all(fd, data))
        return d

    def put_file(self, src: Path, *, executable: bool, move: bool, known: str | None = None) -> tuple[str, int]:
        """Store a file; `move` takes it (scratch outputs), otherwise it is copied (sources, which the
        user may edit later). `known` is a digest the caller already computed for `src`."""
        if move:
            d = known or digest.of_file(src)
            size = os.stat(src).st_size
            if self._have(d, executable):
                os.unlink(src)
            else:
                os.chmod(src, _mode(executable))
                self._publish(str(src), d, executable)
            return d, size
        # Small files (every source a model ships) are read once and hashed in memory: the digest is
        # of the bytes stored, not of a source that may change meanwhile. Larger ones are copied,
        # then the copy is hashed.
        with open(src, "rb") as f:
            data = f.read(_SMALL + 1)
            if len(data) <= _SMALL:
                return self.put_bytes(data, executable), len(data)
        import shutil  # here: a build that stores no large file (an edit) does not import it

        tmp = self.temp_path()
        try:
            shutil.copyfile(src, tmp)
            d = digest.of_file(tmp)
            size = tmp.stat().st_size
            if self._have(d, executable):
                tmp.unlink()
            else:
                os.chmod(tmp, _mode(executable))
                self._publish(str(tmp), d, executable)
        except BaseException:
            atomic.unlink(tmp)
            raise
        return d, size

    def verify(self, d: str, executable: bool = False) -> bool:
        """True if the blob exists and its content matches its name (checked once per build)."""
        if (d, executable) in self.verified:
            return True
        key = self.path_text(d, executable)
        try:
            if self.statcache is not None:
                got, s = self.statcache.digest(key)
            else:
                s = stat_sig(os.stat(key))
                got = digest.of_file(key)
            ok = got == d
        except FileNotFoundError:
            return False
        if not ok:
            self.quarantine(d, executable, s[2])  # its inode (layout.stat_sig)
            return False
        with self._lock:
            self.verified[(d, executable)] = s
        return True

    def names(self, blobs: list[tuple[str, bool]]) -> list[str]:
        """Where each (digest, executable) blob is below the store's root (`path_text` less the root), for
        a memo that names the blobs it checks again (`verify_all`, `whole_at`)."""
        start = len(self._root_text) + 1
        return [self.path_text(d, x)[start:] for d, x in blobs]

    def paths_of(self, blobs: list[tuple[str, bool]], names: list[str] | None = None) -> list[str]:
        """`path_text` of each (digest, executable) blob; from their `names` when a memo kept them."""
        if names is None:
            return [self.path_text(d, x) for d, x in blobs]
        return list(map(f"{self._root_text}/".__add__, names))

    def whole_at(self, blobs: list[tuple[str, bool]], names: list[str], stats: bytes) -> bool:
        """Whether every blob is at the stat a memo recorded it found whole at (`stats`: their `stat_sig`s
        flattened and `layout.packed`, as bytes; none within the racy window, as the stat memo keeps a
        digest), compared in one piece: if so each is verified, as `verify_all` would find it through the
        stat memo's records at those same stats, without looking them up (the settle memo's 20,000 blobs
        of a no-op build at 10,000 models). False: nothing is known, `verify_all` says which are whole."""
        now = self.statcache.sigs(self.paths_of(blobs, names)) if self.statcache is not None else None
        if now is None or None in now or packed_sigs(now).tobytes() != stats:
            return False
        with self._lock:
            self.verified.update(zip(blobs, now))
        return True

    def verify_all(self, blobs: list[tuple[str, bool]], names: list[str] | None = None) -> set[tuple[str, bool]]:
        """`verify` of many (digest, executable) blobs, through the stat memo in one pass
        (`StatCache.digests`, by column): those that are not whole (missing, or damaged and quarantined).
        A blob not found whole so is asked of `verify` again, which says why as ever. `names`: the blobs'
        `names`, when a memo kept them (a no-op build at 10,000 models checks 20,000 blobs)."""
        verified = self.verified
        if verified and not verified.keys().isdisjoint(blobs):
            unknown = [b not in verified for b in blobs]
            blobs = list(compress(blobs, unknown))
            names = None if names is None else list(compress(names, unknown))
        if not blobs:
            return set()
        paths = self.paths_of(blobs, names)
        found, sigs = self.statcache.digests(paths) if self.statcache is not None else ([None] * len(paths), None)
        if found == list(map(itemgetter(0), blobs)):  # every one whole: the common case, compared in C
            whole = dict(zip(blobs, sigs))
        else:
            whole = {b: s for b, d, s in zip(blobs, found, sigs or found) if d == b[0]}
        with self._lock:
            verified.update(whole)
        if len(whole) == len(blobs):
            return set()
        return {b for b in blobs if b not in whole and not self.verify(*b)}

    def quarantine(self, d: str, executable: bool = False, ino: int | None = None) -> Path | None:
        """Move a blob that does not match its name out of the store; where it went (None if it was
        already gone: another build moved it first). `ino`: the inode found damaged, so a sound blob
        another build stored meanwhile under the same name is left alone."""
        src = self.path_text(d, executable)
        try:
            if ino is not None and os.stat(src).st_ino != ino:
                return None
        except FileNotFoundError:
            return None
        self.quarantine_dir.mkdir(exist_ok=True)
        dest = self.quarantine_dir / f"{os.path.basename(src)}.{time.time_ns()}"
        try:
            os.rename(src, dest)
        except FileNotFoundError:
            return None
        if self.statcache is not None:
            self.statcache.forget(src)
        with self._lock:
            self.quarantined.append((d, dest))
        return dest

    def link(self, d: str, executable: bool, dest: Path | str, share: bool = True) -> None:
        """Make `dest` hold the blob: reflink, else (with `share`) hardlink, else copy. A file that
        something may write (a `run` action's input) must not `share` the blob's inode."""
        src = self.path_text(d, executable)
        if share and _reflink_works is False:
            # The usual case (no reflinks here): link straight away; `dest` is mostly new.
            try:
                if _hardlink(src, dest):
                    return
            except FileExistsError:
                pass
        atomic.unlink(dest)
        if _reflink(src, dest):
            os.chmod(dest, _mode(executable))
            return
        if share and _hardlink(src, dest):
            return
        import shutil

        shutil.copyfile(src, dest)
        os.chmod(dest, _mode(executable))


_SMALL = 1 << 20  # bytes: a source up to this size is stored from memory (put_file)


def _mode(executable: bool) -> int:
    return 0o555 if executable else 0o444


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _hardlink(src: str, dest: Path | str) -> bool:
    """False where the filesystem cannot link it (another device, no links allowed, too many)."""
    try:
        os.link(src, dest)
        return True
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        return False


_reflink_works: bool | None = None


def _reflink(src: str, dest: Path | str) -> bool:
    global _reflink_works
    if _reflink_works is False:
        return False
    try:
        with open(src, "rb") as s, open(dest, "wb") as t:
            fcntl.ioctl(t.fileno(), _FICLONE, s.fileno())
        _reflink_works = True
        return True
    except OSError:
        try:
            os.unlink(dest)
        except FileNotFoundError:
            pass
        _reflink_works = False
        return False


def scan(cache_root: Path) -> Iterator[tuple[str, bool, str]]:
    """Every blob stored: (digest, executable, path)."""
    root = cache_root / "cas"
    try:
        shards = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for shard in shards:
        if not shard.is_dir(follow_symlinks=False):
            continue
        for e in sorted(os.scandir(shard.path), key=lambda e: e.name):
            exe = e.name.endswith(".x")
            yield f"{digest.ALGO}:{e.name.removesuffix('.x')}", exe, e.path
