"""Where a workspace's files are, and how a file's state is told apart: kept free of the manifest and
schema machinery (pydantic, the rule sets), so the no-op stamp (`noop.py`) can answer from these alone."""

from __future__ import annotations

import os
import struct
import sys
from array import array
from binascii import a2b_base64, b2a_base64
from itertools import chain, repeat, starmap
from operator import attrgetter, itemgetter

# pathlib (and the re it imports) and errors are not imported here: the prefetch helper imports this
# module for `stat_sig` and `sig` alone, and starts its stats the sooner (prefetch.py).

WORKSPACE_FILE = "tpbuild.toml"
BUILD_FILE = "BUILD.toml"
OUT_DIR = "tpbuild-out"
STATE_DIR = f"{OUT_DIR}/.tpbuild"
# A file modified this recently may be rewritten again with the same size and mtime (the filesystem's
# timestamp granularity): its stat does not yet vouch for its content. See statcache.
RACY_WINDOW_NS = 2_000_000_000


def find_root(start: Path) -> Path:
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / WORKSPACE_FILE).is_file():
            return d
    from .errors import UserError

    raise UserError(
        f"no {WORKSPACE_FILE} in {start} or any parent directory: "
        f"run tpbuild inside a workspace, pass -C DIR, or create {WORKSPACE_FILE} at the workspace root"
    )


# stat_sig(st): what tells a file (or directory) apart from its earlier self without reading it: a
# rewrite moves its mtime or size, a replacement its inode, a chmod its mode; adding or removing a
# directory entry moves the directory's mtime. The one signature every memo records and compares, as
# a tuple; an attrgetter, so that the no-op stamp's check takes a hundred thousand of them in C.
stat_sig = attrgetter("st_size", "st_mtime_ns", "st_ino", "st_mode")


_WRAP = 1 << 64


def packed(ints, code: str = "q") -> array:
    """Integers as one array of machine integers (`code`: "q" 64-bit signed, "I" 32-bit unsigned), for
    a memo that holds hundreds of thousands of them (the no-op stamp's stats: `packed_text`): one
    object, not one per integer, compared and sliced in C. A stat's inode number may be 2**63 or more (overlayfs
    with xino sets the top bits): stored as its two's complement, which `stat_at` undoes.

    Made through struct's one call: an array made of the integers themselves converts each through a
    call of its own (at 1,000 models the check of the no-op stamp's 40,000 stats took 18 M instructions
    so, 3% of an edit's build). Anything struct refuses (such a number, or no integer: a damaged memo's)
    goes the array's way, which raises what it raised before (TypeError, OverflowError)."""
    ints = ints if ints.__class__ is list else list(ints)
    try:
        return array(code, struct.pack(f"{len(ints)}{code}", *ints))
    except struct.error:
        return array(code, [v - _WRAP if v >= _WRAP >> 1 else v for v in ints])


def packed_sigs(sigs) -> array:
    """`stat_sig`s, four integers each, as one `packed` array, which `stat_at` reads back: how every
    memo that compares many stats at once holds them (the no-op stamp, the settle memo, discovery).
    Each packed by one struct call, the bytes joined: a fifth less than a list of all their integers
    made and then packed at once. Anything that struct refuses (an inode number of 2**63 or more, a
    stat not of four integers) is `packed` from that list, as it was."""
    sigs = sigs if sigs.__class__ is list else list(sigs)  # read again when struct refuses one
    try:
        return array("q", b"".join(starmap(_SIG.pack, sigs)))
    except struct.error:
        return packed(list(chain.from_iterable(sigs)))


_SIG = struct.Struct("4q")  # a `stat_sig`


def stat_at(stats, i: int) -> tuple:
    """The `stat_sig` at index `i` of flat stats, four integers a path (a list, or `packed`)."""
    s = tuple(stats[4 * i:4 * i + 4])
    return s if s[2] >= -1 else (s[0], s[1], s[2] + _WRAP, s[3])  # -1: no stat (noop.UNPROVEN)


def packed_text(stats: array) -> str:
    """`packed` integers as JSON text holds them: their bytes, little-endian, deflated (zlib, its
    fastest level) and in base64. Decoding 400,000 integers one JSON number at a time (the stamp of
    10,000 models) made an object of each, and took longer than the text's read and every other value
    in it; deflated, the stats are a quarter of their bytes (sizes, times, inode numbers and modes
    alike from one path to the next), which JSON scans as text and base64 decodes, a byte at a time,
    in less than inflating them takes."""
    import zlib

    if sys.byteorder == "big":
        stats = array(stats.typecode, stats)
        stats.byteswap()
    return b2a_base64(zlib.compress(stats, 1), newline=False).decode("ascii")


def unpacked(text: str, code: str = "q") -> array:
    """The `packed` integers `packed_text` wrote; ValueError when it is not such a text."""
    import zlib

    if not isinstance(text, str):
        raise ValueError("not packed integers")
    try:
        stats = array(code, zlib.decompress(a2b_base64(text)))
    except zlib.error as e:
        raise ValueError(f"not packed integers: {e}") from None
    if sys.byteorder == "big":
        stats.byteswap()
    return stats


def hexed_sigs(stats: list[tuple]) -> str:
    """Sigs as text: their `packed_sigs`, little-endian, in hex, so that the texts of many joined are
    the text of their sigs joined (the analysis memo's watched files, `AnalysisCache.check_all`, one
    compare of joined texts in C). Here, not in analysiscache.py, for the prefetch helper, which reads
    that memo without importing the analysis's modules."""
    packed = packed_sigs(stats)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes().hex()


_HEX_SIG = struct.Struct("<4q")  # a sig as `hexed_sigs` packs it


def unhexed_sigs(text: str) -> list[tuple]:
    """The sigs `hexed_sigs` wrote, each a tuple (made in C); ValueError when it is not such a text."""
    try:
        stats = list(_HEX_SIG.iter_unpack(bytes.fromhex(text)))
    except (struct.error, TypeError) as e:
        raise ValueError(f"not sigs: {e}") from None
    if stats and min(map(itemgetter(2), stats)) < -1:  # an inode number from 2**63 on (`stat_at`)
        stats = list(map(stat_at, stats, repeat(0)))
    return stats


def positions(packed_bytes: bytes, code: str, value: int):
    """The indices at which a `packed` array (given as its bytes, `array.tobytes`) holds `value`, found
    by a search of the bytes, in C: for a few values among 60,000 (the stamp's linked files at 10,000
    models), far less than comparing each as an integer."""
    needle = array(code, (value,)).tobytes()
    at = packed_bytes.find(needle)
    while at != -1:
        i, misaligned = divmod(at, len(needle))
        if not misaligned:
            yield i
        at = packed_bytes.find(needle, at + 1)


def shared_device(store: str, out: str) -> int | None:
    """The device the store and tpbuild-out are both on, None if they are not on one (or not there): only
    there does a placed file's inode name its blob (a hardlink), which the no-op stamp and the ordinary
    path's check of placed files take as proof of its content."""
    try:
        dev = os.stat(store).st_dev
        return dev if os.stat(out).st_dev == dev else None
    except OSError:
        return None


def sig(path: str, follow: bool = True) -> tuple | None:
    """`stat_sig` of a path, None if it is not there."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return stat_sig(st)


def sigs(paths: list[str]) -> list[tuple | None]:
    """`sig` of each path: stat'ed and signed in C, one at a time only when some path is not there."""
    try:
        return list(map(stat_sig, map(os.stat, paths)))
    except OSError:
        return list(map(sig, paths))


def kind(path: str) -> tuple | None:
    """Existence and type only, for paths whose content analysis does not look at."""
    try:
        return ("dir",) if os.path.isdir(path) else ("file",) if os.path.exists(path) else None
    except OSError:
        return None


def observe(path: str, recorded: tuple | None) -> tuple | None:
    """The path's state now, in the form `recorded` was taken in (a `kind` or a `sig`)."""
    return kind(path) if recorded is not None and len(recorded) == 1 else sig(path)
