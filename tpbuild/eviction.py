"""Keeping the local cache under `[cache] max_size`: least-recently-used eviction.

When: at the end of a build that added to the cache (ran or downloaded something). A no-op build never
scans the cache, and a build that only restored outputs adds nothing, so neither pays for this.
Measured: the blob store and the action cache (the stat and analysis memos are small and kept).

What goes: the cache is trimmed to `LOW_WATER` of the limit, so the next builds do not each evict a
little. First the damaged blobs `Cas.quarantine` moved aside (kept for inspection, but without this a
cache under a limit would grow by every one of them forever), oldest first, then blobs no entry names
(left by interrupted builds), then action entries, least recently used first (last use = the later
of a file's mtime and atime), each with the blobs that only it named: an entry always goes before the
blobs it references, so no reader finds an entry whose blobs are gone because of us. Never evicted:
the entries this build used and every blob they name, and anything written or used within `GRACE`
seconds — which keeps what concurrent builds are producing (a blob the store already holds is touched
when it is stored again). A concurrent build that restores an entry older than that at the very
moment it is evicted can fail to place an output; the next build reruns it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from pydantic import ByteSize, TypeAdapter, ValidationError

from . import digest
from .action import blobs_of
from .actioncache import ActionCache
from .errors import UserError, at
from .shaindex import ShaIndex

LOW_WATER = 0.9
GRACE = 600.0
# The names `Cas.quarantine` gives (<blob>.<ns>): anything else in the directory is not ours to delete.
QUARANTINED = re.compile(r"[0-9a-f]+(\.x)?\.[0-9]+")


def max_size(ws) -> int | None:
    """`[cache] max_size` in bytes ("20GB", "512MiB", "1000000"); exit 2 naming its line if malformed."""
    text = ws.cache.max_size
    if text is None:
        return None
    try:
        size = int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        size = 0
    if size <= 0:
        raise UserError(f"[cache] max_size = {text!r} is not a size: write e.g. \"20GB\", \"500MiB\"",
                        at(ws.source.path, ws.source.line_of(("cache", "max_size"))))
    return size


@dataclass
class Evicted:
    entries: int = 0
    blobs: int = 0
    bytes: int = 0
    quarantined: int = 0


@dataclass
class _File:
    path: Path
    size: int
    used: float


def evict(cache_dir: Path, limit: int, live_keys: set[str], live_blobs: set[tuple[str, bool]]) -> Evicted:
    """Trim the cache under `limit` bytes; `live_*` are this build's keys and (digest, executable) blobs."""
    ac = ActionCache(cache_dir)
    entries = {f"{digest.ALGO}:{f.path.name}": f for f in _scan(ac.root)}
    blobs = {(f"{digest.ALGO}:{f.path.name.removesuffix('.x')}", f.path.name.endswith(".x")): f
             for f in _scan(cache_dir / "cas")}
    quarantined = _quarantined(cache_dir / "quarantine")
    total = sum(f.size for f in entries.values()) + sum(f.size for f in blobs.values()) + \
        sum(f.size for f in quarantined)
    done = Evicted()
    if total <= limit:
        return done
    target = int(limit * LOW_WATER)
    fresh = time.time() - GRACE
    index = ShaIndex(cache_dir)
    names: dict[str, list[tuple[str, bool]]] = {}
    refs: dict[tuple[str, bool], int] = {}
    for key in entries:
        named = list(blobs_of((ac.get(key) or ((), 0))[0]))
        names[key] = named
        for b in named:
            refs[b] = refs.get(b, 0) + 1

    def drop(f: _File) -> bool:
        nonlocal total
        try:
            f.path.unlink()
        except FileNotFoundError:  # another build evicted it first
            return False
        total -= f.size
        done.bytes += f.size
        return True

    def drop_blob(b: tuple[str, bool]) -> None:
        f = blobs[b]
        if b in live_blobs or f.used > fresh or not drop(f):
            return
        done.blobs += 1
        hx = digest.hex_part(b[0])
        if not f.path.with_name(hx if b[1] else f"{hx}.x").exists():  # the map is per content:
            index.forget(b[0])  # keep it while the same bytes stay stored in the other mode

    for f in sorted(quarantined, key=lambda f: f.used):
        if total <= target:
            return done
        if f.used <= fresh and drop(f):
            done.quarantined += 1
    for b in sorted((b for b in blobs if refs.get(b, 0) == 0), key=lambda b: blobs[b].used):
        if total <= target:
            return done
        drop_blob(b)
    for key in sorted(entries, key=lambda k: entries[k].used):
        if total <= target:
            break
        f = entries[key]
        if key in live_keys or f.used > fresh or not drop(f):
            continue
        done.entries += 1
        for b in names[key]:
            refs[b] -= 1
            if refs[b] == 0 and b in blobs:
                drop_blob(b)
    return done


def _quarantined(root: Path) -> list[_File]:
    """The blobs quarantined in `root`, each last used when it was moved there, as its name says (its
    times are the blob's, or those of whatever wrote into it through an output's hardlink)."""
    named = [e for e in _listing(root) if QUARANTINED.fullmatch(e.name)]
    return [_File(Path(e.path), st.st_size, int(e.name.rpartition(".")[2]) / 1e9)
            for e, st in _stats(named) if S_ISREG(st.st_mode)]


def _scan(root: Path) -> list[_File]:
    """Every file two levels below `root` (`<aa>/<name>`), with its size and last use."""
    return [_File(Path(e.path), st.st_size, max(st.st_atime, st.st_mtime))
            for shard in _listing(root) if shard.is_dir(follow_symlinks=False)
            for e, st in _stats(_listing(shard.path))]


def _listing(directory: Path | str) -> list[os.DirEntry]:
    """The entries of `directory`, none when it is not there."""
    try:
        return list(os.scandir(directory))
    except FileNotFoundError:
        return []


def _stats(entries: list[os.DirEntry]) -> list[tuple[os.DirEntry, os.stat_result]]:
    """Each entry with its lstat, less those gone meanwhile (another build evicted them first)."""
    found = []
    for e in entries:
        try:
            found.append((e, e.stat(follow_symlinks=False)))
        except FileNotFoundError:
            continue
    return found
    for shard in shards:
        if not shard.is_dir(follow_symlinks=False):
            continue
        for e in os.scandir(shard.path):
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            found.append(_File(Path(e.path), st.st_size, max(st.st_atime, st.st_mtime)))
    return found
