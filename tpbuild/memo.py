"""The one on-disk format of tpbuild's memos: the stat memo, the analysis memo, the build state and
the no-op stamp.

Format: a first line `tpbuild-memo <kind> v<version>`, then one JSON document. JSON, not pickle:
memos live in the cache directory, which teams share (a team volume, a CI cache restore), and
whoever can write a pickle there runs code in every build that loads it. A JSON memo can at worst
make a build redo work. A memo of another kind or version, or one that does not parse, is a miss
(the build starts from nothing for that memo), never an error.

Saving goes through `atomic.write_bytes` (temp file in the process's own temp directory, rename). A
save that fails (a full disk, a read-only or foreign directory) leaves no temp file and returns a
warning for the build to show: losing a memo only costs the next build some re-checking.

Values that are not plain JSON (tuples, bytes, the engine's frozen dataclasses) are written tagged
(`{"$t": [...]}`, `{"$o": [type, [field values in order]]}`) and rebuilt on load only from the
dataclass types the caller names, so loading a memo never constructs anything else. Fields are
positional (half the objects to decode, which a no-op build of 1,000 models notices): a memo that
holds dataclasses must be invalidated whenever their definitions change, as the analysis memo is by
its fingerprint of the engine's code.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
from pathlib import Path

from . import atomic


def _header(kind: str, version: int) -> bytes:
    return f"tpbuild-memo {kind} v{version}\n".encode()


def load(path: Path, kind: str, version: int, types: tuple[type, ...] = ()):
    """The memo's value, or None when it is missing, of another kind or version, or damaged."""
    try:
        with open(path, "rb") as f:
            if f.readline() != _header(kind, version):
                return None
            body = f.read()
    except OSError:
        return None
    try:
        return json.loads(body, object_hook=_Decoder(types)) if types else json.loads(body)
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        return None


def save(path: Path, kind: str, version: int, value, tmp_parent: Path, what: str) -> str | None:
    """Write the memo; None when saved, else a warning naming what was not saved and why."""
    try:
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as e:
        return f"could not save {what} ({e}); the next build re-checks what it would have remembered"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(path, _header(kind, version) + body, tmp_parent, kind)
    except OSError as e:
        return (f"could not save {what} ({e.strerror or e}: {e.filename or path}); "
                "the next build re-checks what it would have remembered")
    return None


def encode(value, types: tuple[type, ...]):
    """`value` as plain JSON data, tagging tuples, bytes and instances of `types` (see the docstring)."""
    names = {t: t.__name__ for t in types}

    def enc(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [enc(x) for x in v]
        if isinstance(v, tuple):
            return {"$t": [enc(x) for x in v]}
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in v):
                return {k: enc(x) for k, x in v.items()}
            return {"$d": [[enc(k), enc(x)] for k, x in v.items()]}
        if isinstance(v, bytes):
            return {"$b": base64.b64encode(v).decode()}
        name = names.get(type(v))
        if name is None:
            raise TypeError(f"a {type(v).__name__} value cannot be memoized")
        return {"$o": [name, [enc(getattr(v, f)) for f in _init_fields(type(v))]]}

    return enc(value)


class _Decoder:
    def __init__(self, types: tuple[type, ...]):
        self.types = {t.__name__: t for t in types}

    def __call__(self, obj: dict):
        if len(obj) == 1:
            (tag, v), = obj.items()
            if tag == "$t":
                return tuple(v)
            if tag == "$d":
                return {_hashable(k): x for k, x in v}
            if tag == "$b":
                return base64.b64decode(v)
            if tag == "$o":
                t = self.types[v[0]]  # a name not given is a KeyError: a miss
                return t(**dict(zip(_init_fields(t), v[1])))  # by name: the action variants' fields are keyword-only
        return obj


@functools.lru_cache(maxsize=None)
def _init_fields(t: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(t) if f.init)


def _hashable(k):
    return tuple(_hashable(x) for x in k) if isinstance(k, list) else k
