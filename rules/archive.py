"""Deterministic tar.gz archives of directory trees, and the same normalisation for trees kept as trees.

An archive's bytes must depend only on the names, kinds and contents of its files (and on this Python's
tarfile and zlib), never on when, where or by whom the tree was made: tpbuild keys downstream actions by
output contents, so a rebuilt environment that comes out byte-identical re-wires nothing (early cutoff).
Hence:
- entries in sorted order (a directory right before its contents), no `./` prefix;
- every mtime `MTIME`, uid/gid 0, empty user and group names;
- modes reduced to 0755 (directories, and files with any execute bit) or 0644, symlinks 0777;
- symlinks stored as symlinks with their target verbatim; hard links stored as separate regular files,
  because which name of a hard-linked pair comes first is an accident of the build;
- a gzip header with mtime 0 and no file name.

Entries are streamed from disk one at a time: an environment can be gigabytes.

Exclusion patterns are `fnmatch` globs matched against archive-relative paths (`lib/python3.10/...`),
where `*` also matches `/`, so `*/tests` drops every `tests` directory below the root. A matched
directory drops its whole subtree.
"""

from __future__ import annotations

import fnmatch
import gzip
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# 0 rather than a "plausible" date: nothing in an env depends on entry mtimes (pycs are hash-based),
# and 0 says plainly that the time carries no information.
MTIME = 0

# conda-pack's default. On a numpy env (65 MB of tar) level 4 takes half the CPU of 6 (gzip's default)
# for a 5% larger archive, and 9 (tarfile's default) three times 6's for 1% less; unpacking costs
# the same. Compression is paid on every env build, for minutes of CPU on a multi-GB env.
COMPRESSLEVEL = 4


class ArchiveError(Exception):
    """A tree holds something an archive cannot represent faithfully (a device, a fifo, a socket)."""


@dataclass(frozen=True)
class Node:
    rel: str  # archive-relative path, '/'-separated
    path: Path
    st: os.stat_result  # lstat: symlinks are never followed
    excluded: bool


def is_excluded(rel: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p.rstrip("/")) for p in patterns)


def walk(root: Path, exclude: Iterable[str] = ()) -> Iterator[Node]:
    """Every entry below `root` in archive order. An excluded entry is yielded (flagged) but an
    excluded directory is not entered."""
    patterns = tuple(exclude)

    def visit(directory: Path, prefix: str) -> Iterator[Node]:
        with os.scandir(directory) as it:
            names = sorted(e.name for e in it)
        for name in names:
            rel = f"{prefix}{name}"
            path = directory / name
            st = os.lstat(path)
            excluded = is_excluded(rel, patterns)
            yield Node(rel, path, st, excluded)
            if stat.S_ISDIR(st.st_mode) and not excluded:
                yield from visit(path, rel + "/")

    yield from visit(Path(root), "")


def normal_mode(st: os.stat_result) -> int:
    if stat.S_ISLNK(st.st_mode):
        return 0o777
    if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111:
        return 0o755
    return 0o644


def _check_kind(node: Node) -> None:
    mode = node.st.st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        raise ArchiveError(f"{node.rel} is neither a file, a directory nor a symlink: "
                           "remove it or exclude it from the archive")


def write_tar_gz(root: Path, out: Path, *, exclude: Iterable[str] = (), mtime: int = MTIME,
                 compresslevel: int = COMPRESSLEVEL) -> None:
    """Archive the contents of `root` (not `root` itself) to `out`, replacing it atomically."""
    out = Path(out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=compresslevel) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for node in walk(root, exclude):
                if node.excluded:
                    continue
                _check_kind(node)
                info = tarfile.TarInfo(node.rel)
                info.mtime = mtime
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = normal_mode(node.st)
                if stat.S_ISLNK(node.st.st_mode):
                    info.type = tarfile.SYMTYPE
                    info.linkname = os.readlink(node.path)
                    tar.addfile(info)
                elif stat.S_ISDIR(node.st.st_mode):
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = node.st.st_size
                    with open(node.path, "rb") as f:
                        tar.addfile(info, f)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 is for the temp file, not the artifact
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def prune(root: Path, exclude: Iterable[str]) -> list[str]:
    """Delete the entries of `root` that `exclude` matches; returns their archive-relative paths."""
    removed = []
    for node in list(walk(root, exclude)):
        if node.excluded:
            if stat.S_ISDIR(node.st.st_mode):
                shutil.rmtree(node.path)
            else:
                node.path.unlink()
            removed.append(node.rel)
    return removed


def normalize_tree(root: Path, *, mtime: int = MTIME) -> None:
    """Give a tree kept as a directory the modes and mtimes its archive would have.

    Ownership is left alone: only root may change it, and the tree's consumer stores contents, not owners.
    """
    nodes = list(walk(root))
    for node in nodes:
        _check_kind(node)
    # Children before parents, so setting a directory's mtime is the last thing that touches it.
    for node in reversed(nodes):
        if not stat.S_ISLNK(node.st.st_mode):
            os.chmod(node.path, normal_mode(node.st))
        os.utime(node.path, (mtime, mtime), follow_symlinks=False)
    os.chmod(root, 0o755)
    os.utime(root, (mtime, mtime))
