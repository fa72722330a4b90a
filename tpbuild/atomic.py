"""Atomic publication in directories that many builds (threads and processes, on one machine or on a
shared filesystem) write at once, and the temp space that makes it possible.

A file is published by writing a temp file on the same filesystem and renaming it into place, so a
reader sees the old file or the new one, never a part. Temp names are unique per process, thread
and call, so writers never share one.

Every temp name of a process lives in its own directory, `<tmp>/<pid>.<random>`, which the process
holds an exclusive `flock` on for as long as it lives. A `kill -9` releases the lock (the kernel
closes the descriptor), so `sweep` can tell the leftovers of a dead build from the work of a live
one without trusting pids (reused, and meaningless across the machines sharing a cache): a
directory whose lock it can take is dead and removed whole, the lock held while it goes. A process
removes its own at exit, and a failed write removes its temp file.

A directory is made under a `.new.` name and locked before it takes its real name. A build killed
between the two leaves an unlocked `.new.` directory, which is dead like any other. A sweep can take
one whose maker is still between those steps; the maker then finds its directory gone when it locks
or renames it, and starts over with a new name.

`crash_point` is a test-only hook: with `TPBUILD_TEST_KILL_AT=<name>` in the environment, the process
kills itself with SIGKILL when it reaches that publish step, so the crash tests can hit every step
deterministically. It is read once at import and costs a comparison otherwise.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import signal
import threading
import time
from pathlib import Path
from collections.abc import Iterable

_KILL_AT = os.environ.get("TPBUILD_TEST_KILL_AT")
_NEW = ".new."  # a process directory being made: locked, then renamed to its real name
_YOUNG = 3600.0  # seconds: unlocked names of other forms (an older tpbuild's temps) are swept after this
_lock = threading.Lock()
_dirs: dict[str, tuple[str, int]] = {}  # parent -> (this process's directory, its locked descriptor)


def crash_point(name: str) -> None:
    if _KILL_AT == name:
        os.kill(os.getpid(), signal.SIGKILL)


def process_dir(parent: Path) -> Path:
    """This process's own temp directory below `parent`, made and locked on first use."""
    return Path(_process_dir(str(parent)))


def _process_dir(key: str) -> str:
    hit = _dirs.get(key)
    # Gone when the directory it was in was deleted (clean). Strings, not pathlib: this is asked for
    # every blob, action cache entry and placed file a build writes.
    if hit is not None and os.path.isdir(hit[0]):
        return hit[0]
    with _lock:
        hit = _dirs.get(key)
        if hit is not None and os.path.isdir(hit[0]):
            return hit[0]
        Path(key).mkdir(parents=True, exist_ok=True)
        while (made := _make(key)) is None:
            pass
        if hit is not None:
            os.close(hit[1])
        _dirs[key] = made
        return made[0]


def _make(parent: str) -> tuple[str, int] | None:
    """A new locked process directory, or None when a sweep took it half-made (try again)."""
    name = f"{os.getpid()}.{os.urandom(4).hex()}"
    # Locked before it gets its real name, so a sweep never sees it unlocked under that name.
    new = f"{parent}/{_NEW}{name}"
    os.mkdir(new)
    crash_point("process-dir")
    try:
        fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # a filesystem without locks (ENOLCK): sweeps fall back to the directory's age
        pass
    final = f"{parent}/{name}"
    try:
        os.rename(new, final)
    except FileNotFoundError:  # swept between mkdir and the lock
        os.close(fd)
        return None
    return final, fd


@atexit.register
def _leave() -> None:
    """An exiting process removes its own temp directories (a killed one leaves them to `sweep`)."""
    for d, fd in list(_dirs.values()):
        if not _emptied(d):
            remove(Path(d))
        os.close(fd)
    _dirs.clear()


def _emptied(d: str) -> bool:
    """Whether `d` was removed as holding only empty directories, which is what a process that renamed
    every temp file into place leaves (`temp_name`'s subdirectories): removed so, a build that removed
    no tree imports no shutil (2 ms of an edit at 1,000 models, with the bz2, lzma and zlib it brings)."""
    try:
        for sub in os.listdir(d):
            os.rmdir(f"{d}/{sub}")
        os.rmdir(d)
    except OSError:  # a file, a fuller tree, or gone: `remove` is for all of that
        return False
    return True


def temp_path(parent: Path, hint: str) -> Path:
    """A fresh name in this process's temp directory below `parent` (usually `<cache>/tmp`)."""
    return Path(temp_name(parent, hint))


_spread: set[str] = set()  # the subdirectories of process directories known to exist


def temp_name(parent: Path | str, hint: str) -> str:
    """`temp_path` as a string, for the writers that publish a file per action.

    Spread over subdirectories rather than all in one: ext4 gives a new file an inode in its
    directory's block group, and without a journal it skips every inode of that group freed in the
    last seconds, one inode-table lookup each (`recently_deleted` in the kernel's `find_inode_bit`).
    After `rm -rf` of a cache, thousands of temp files created in one directory paid that scan each:
    most of a clean build's system time (`perf`). New subdirectories are placed in other groups."""
    r = os.urandom(4).hex()
    sub = f"{_process_dir(str(parent))}/{r[:2]}"  # one of 256
    if sub not in _spread:
        os.makedirs(sub, exist_ok=True)
        _spread.add(sub)
    return f"{sub}/{hint}.{threading.get_ident()}.{r}"


def write_bytes(dest: Path | str, data: bytes | Iterable[bytes], tmp_parent: Path, hint: str) -> None:
    """`data` may come in chunks (a memo written as it is encoded: at 10,000 models a whole memo's
    text, its bytes and the two joined were three copies of tens of megabytes at a build's peak)."""
    tmp = temp_name(tmp_parent, hint)
    try:
        with open(tmp, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                f.writelines(data)
        crash_point(f"publish-{hint}")
        os.replace(tmp, dest)
    except BaseException:
        unlink(tmp)
        raise


def unlink(p: Path | str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def sweep(parent: Path) -> int:
    """Remove what dead processes left below `parent`; a live process's directory is locked and kept.
    Returns how many entries went."""
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return 0
    gone = 0
    mine = {os.path.basename(p) for p, _fd in _dirs.values()}
    for name in names:
        if name in mine:
            continue
        p = parent / name
        gone += _sweep_one(p, name)
    return gone


def _sweep_one(p: Path, name: str) -> bool:
    try:
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        return _old(p) and _removed(p)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its process is alive
        except OSError:  # no locks on this filesystem: only what is old enough is taken for dead
            return _old(p) and _removed(p)
        if not name.startswith(_NEW) and not name.split(".")[0].isdigit():
            return _old(p) and _removed(p)  # an older tpbuild's temp: only when old
        # Removed with the lock held: a maker still between mkdir and rename waits for it, then
        # finds its directory gone and starts over.
        return _removed(p)
    finally:
        os.close(fd)


def _removed(p: Path) -> bool:
    remove(p)
    return True


def _old(p: Path) -> bool:
    try:
        return os.lstat(p).st_mtime < time.time() - _YOUNG
    except FileNotFoundError:
        return False


def remove(p: Path) -> None:
    """Remove a file or a whole tree, including the read-only files and directories outputs are made of."""
    if p.is_symlink() or not p.is_dir():
        unlink(p)
        return

    def onerror(func, path, _exc):
        try:
            os.chmod(os.path.dirname(path), 0o755)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o755)
            func(path)
        except FileNotFoundError:
            pass

    import shutil  # here: most builds remove no tree, and shutil brings bz2, lzma and zlib

    shutil.rmtree(p, onerror=onerror)
