"""Byte-reproducible bytecode: canonical marshal reference flags in `.pyc` files.

Checked-hash pycs (PEP 552) carry no timestamp, yet two compiles of one source can still differ:
`marshal` sets FLAG_REF on every object whose reference count is above one when it is written, and
part of that count comes from the compiling process (an interned name such as `sys` that something
else in the process happens to hold). The flag is only needed on objects that a later `TYPE_REF`
points back to; on the others it is noise that changes with the process's environment.

`canonicalize` rewrites a marshal stream so that FLAG_REF stays exactly on the objects some
`TYPE_REF` uses, renumbering the references to match. The result loads to the same objects, and it
depends only on the code, which is what the Reproducible Builds tools (Fedora's add-determinism)
do for the same problem. It parses bytes only, so tpbuild's own Python can canonicalize the pycs of
an env made for another Python; the code-object layout is chosen by the env's Python version.
"""

from __future__ import annotations

import struct
from pathlib import Path

FLAG_REF = 0x80
_HEADER = 16  # magic, flags, and a source hash or mtime+size (PEP 552)

# Objects with no children: how many bytes follow the type byte, or how to find that out.
_FIXED = {ord(c): n for c, n in (("0", 0), ("N", 0), ("F", 0), ("T", 0), ("S", 0), (".", 0),
                                  ("i", 4), ("I", 8), ("g", 8), ("y", 16))}
_SIZED4 = frozenset(map(ord, "stuaA"))  # int32 length, then that many bytes
_SIZED1 = frozenset(map(ord, "zZ"))     # one length byte
_SEQ4 = frozenset(map(ord, "([<>"))     # int32 count, then that many objects


class Unsupported(ValueError):
    """A stream this module does not know how to read; the file is left as it is."""


class _Node:
    __slots__ = ("start", "ref", "ref_at")

    def __init__(self, start: int):
        self.start = start          # offset of the type byte
        self.ref = False            # carries FLAG_REF
        self.ref_at = -1            # for TYPE_REF: offset of its int32 index


def _code_layout(python: str) -> tuple[int, int, int, int]:
    """(int32 fields, objects, int32 fields, objects) of a code object, as marshal writes them."""
    major, minor = (int(x) for x in python.split(".")[:2])
    if (major, minor) < (3, 8):
        raise Unsupported(f"Python {python} bytecode")
    if minor <= 10:  # argcount..flags; code..name; firstlineno; lnotab/linetable
        return 6, 8, 1, 1
    return 5, 8, 1, 2  # argcount..flags; code..qualname; firstlineno; linetable, exceptiontable


class _Reader:
    def __init__(self, data: bytes, layout: tuple[int, int, int, int]):
        self.data = data
        self.pos = 0
        self.layout = layout
        self.flagged: list[_Node] = []   # in the order marshal numbers them
        self.refs: list[_Node] = []

    def _int(self) -> int:
        v = struct.unpack_from("<i", self.data, self.pos)[0]
        self.pos += 4
        return v

    def _byte(self) -> int:
        v = self.data[self.pos]
        self.pos += 1
        return v

    def _skip(self, n: int) -> None:
        self.pos += n

    def read(self) -> None:
        if self.pos >= len(self.data):
            raise Unsupported("truncated marshal data")
        node = _Node(self.pos)
        code = self._byte()
        t = code & ~FLAG_REF
        if code & FLAG_REF:
            node.ref = True
            self.flagged.append(node)  # numbered before its children, as marshal's r_ref_reserve does
        if t in _FIXED:
            self.pos += _FIXED[t]
        elif t in _SIZED4:
            self._skip(self._int())
        elif t in _SIZED1 or t == ord("f"):
            self._skip(self._byte())
        elif t == ord("l"):
            self._skip(2 * abs(self._int()))
        elif t == ord("x"):
            self._skip(self._byte())
            self._skip(self._byte())
        elif t == ord(")"):
            for _ in range(self._byte()):
                self.read()
        elif t in _SEQ4:
            for _ in range(self._int()):
                self.read()
        elif t == ord("{"):
            while self.data[self.pos] != ord("0"):
                self.read()
                self.read()
            self.pos += 1
        elif t == ord("c"):
            ints1, objs1, ints2, objs2 = self.layout
            self.pos += 4 * ints1
            for _ in range(objs1):
                self.read()
            self.pos += 4 * ints2
            for _ in range(objs2):
                self.read()
        elif t == ord("r"):
            node.ref_at = self.pos
            idx = self._int()
            if not 0 <= idx < len(self.flagged):
                raise Unsupported(f"reference {idx} to an object not yet read")
            self.refs.append(node)
        else:
            raise Unsupported(f"marshal type {chr(t)!r}")
        if self.pos > len(self.data):
            raise Unsupported("truncated marshal data")


def canonicalize(data: bytes, python: str) -> bytes:
    """A marshal stream with FLAG_REF only where a TYPE_REF needs it (raises `Unsupported`)."""
    r = _Reader(data, _code_layout(python))
    r.read()
    if r.pos != len(data):
        raise Unsupported("trailing bytes after the marshal data")
    used = {struct.unpack_from("<i", data, n.ref_at)[0] for n in r.refs}
    renumber = {}
    out = bytearray(data)
    for old, node in enumerate(r.flagged):
        if old in used:
            renumber[old] = len(renumber)
        else:
            out[node.start] &= ~FLAG_REF
    for n in r.refs:
        struct.pack_into("<i", out, n.ref_at, renumber[struct.unpack_from("<i", data, n.ref_at)[0]])
    return bytes(out)


def canonicalize_tree(tree: Path, python: str) -> int:
    """Rewrite every pyc below `tree` in canonical form; returns how many changed. A pyc this module
    cannot read is left as it is: it may then differ between builds, but it still loads."""
    changed = 0
    for p in sorted(tree.rglob("*.pyc")):
        if p.is_symlink() or not p.is_file():
            continue
        data = p.read_bytes()
        try:
            body = canonicalize(data[_HEADER:], python)
        except (Unsupported, struct.error, IndexError):
            continue
        if body != data[_HEADER:]:
            p.write_bytes(data[:_HEADER] + body)
            changed += 1
    return changed
