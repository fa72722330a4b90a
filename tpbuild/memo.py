"""The one on-disk format of tpbuild's memos: the stat memo, the analysis memo, the build state and
the no-op stamp.

Format: a first line `tpbuild-memo <kind> v<version>`, then one JSON document. JSON, not pickle:
memos live in the cache directory, which teams share (a team volume, a CI cache restore), and
whoever can write a pickle there runs code in every build that loads it. A JSON memo can at worst
make a build redo work. A memo of another kind or version, or one that does not parse, is a miss
(the build starts from nothing for that memo), never an error.

A memo of many independent records that each build changes a few of (the stat memo, the analysis
memo, the build state) is a `Journal`: saving appends the changed records, so a build writes in
proportion to what it changed; see the class. Other memos (the no-op stamp) are one document.

Saving a whole memo goes through `atomic.write_bytes` (temp file in the process's own temp directory,
rename). A save that fails (a full disk, a read-only or foreign directory) leaves no temp file and returns a
warning for the build to show: losing a memo only costs the next build some re-checking.

Values that are not plain JSON (tuples, bytes, and the engine's immutable classes, which name their
fields in `__match_args__`: `value.Frozen`, `label.Label`) are written tagged (`{"$t": [...]}`, `{"$o":
[type, [field values in order]]}`) and rebuilt on load only from the types the caller names, so
loading a memo never constructs anything else. Fields are positional (half the objects to decode,
which a no-op build of 1,000 models notices): a memo that holds such values must be invalidated
whenever their definitions change, as the analysis memo is by its fingerprint of the engine's code.
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
from pathlib import Path

# `atomic` (shutil, signal, threading) and `base64` are imported where a memo is written or holds
# typed values: the no-op stamp only reads a plain one, before anything else loads.


_PIECE = 1 << 20  # bytes a journal is read in at a time (`Journal`)
_SCANS = 8  # records a lazy journal finds by scanning before it splits its file whole (`Journal._lookup`)

# What decoding or converting a damaged journal record raises: the record is then a miss.
_UNDECODABLE = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)


_SCAN = json.JSONDecoder().scan_once  # the C scanner `json.loads` ends in (see `_loads`)


def _loads(text: str, scan=_SCAN):
    """A record's value from its JSON text as this module writes it (compact: nothing before or after
    the value), by the scanner alone: `json.loads` checks its argument, makes a decoder when given an
    object hook, and matches whitespace around the value, which cost as much as the parse of a small
    record (the build state's 40,000 at 10,000 models, each decoded on its own). Raises ValueError."""
    try:
        value, end = scan(text, 0)
    except StopIteration:
        raise ValueError("not a JSON value") from None
    if end != len(text):
        raise ValueError("not one JSON value")
    return value


def values_of(text: str, n: int) -> list | None:
    """The values of `n` plain records (of a journal without `types`) whose texts (`Journal.texts`) are
    the items of the JSON array `text` (`json_array`), in one parse, as `Journal.preload` reads them;
    None when they are not `n` JSON values so."""
    try:
        values = json.loads(text)
    except _UNDECODABLE:
        return None
    return values if values.__class__ is list and len(values) == n else None


def json_array(texts: list[str]) -> str:
    """The JSON array of values whose texts are `texts`, made at once: `"[" + ",".join(texts) + "]"`
    made the text of them all three times (the analysis memo's 14 MB of records at 10,000 models: two
    copies more, 7,000 page faults where the allocator hands freed memory back, `cli._keep_freed_memory`)."""
    if len(texts) < 2:
        return f"[{''.join(texts)}]"
    return ",".join(["[" + texts[0], *texts[1:-1], texts[-1] + "]"])


def header(kind: str, version: int) -> bytes:
    return f"tpbuild-memo {kind} v{version}\n".encode()


def load(path: Path, kind: str, version: int, types: tuple[type, ...] = ()):
    """The memo's value, or None when it is missing, of another kind or version, or damaged."""
    try:
        with open(path, "rb") as f:
            if f.readline() != header(kind, version):
                return None
            body = f.read()
    except OSError:
        return None
    try:
        return json.loads(body, object_hook=_Decoder(types)) if types else json.loads(body)
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        return None


def prefix(path: Path, kind: str, version: int, size: int) -> bytes | None:
    """The first `size` bytes of the memo's value (its JSON text), not decoded; None when it is missing or
    of another kind or version. For a value whose first keys say whether the rest is worth reading."""
    try:
        with open(path, "rb") as f:
            if f.readline() != header(kind, version):
                return None
            return f.read(size)
    except OSError:
        return None


def save(path: Path, kind: str, version: int, value, tmp_parent: Path, what: str, depth: int = 3) -> str | None:
    """Write the memo; None when saved, else a warning naming what was not saved and why. `depth`: the
    levels of `value` taken apart as it is written (`_chunks`); 0 for a memo of a few kilobytes, one
    `json.dumps` (taken apart, the explain records' shard an edit rewrote cost 400 calls of it, 3% of
    the edit's build at 1,000 models)."""
    from . import atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(path, itertools.chain((header(kind, version),), _chunks(value, depth)), tmp_parent, kind)
    except (TypeError, ValueError, RecursionError) as e:  # not JSON: nothing is left (write_bytes removes its temp)
        return f"could not save {what} ({e}); the next build re-checks what it would have remembered"
    except OSError as e:
        return (f"could not save {what} ({e.strerror or e}: {e.filename or path}); "
                "the next build re-checks what it would have remembered")
    return None


def encode(value, types: tuple[type, ...]):
    """`value` as plain JSON data, tagging tuples, bytes and instances of `types` (see the docstring)."""
    import base64

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
        return {"$o": [name, [enc(getattr(v, f)) for f in type(v).__match_args__]]}

    return enc(value)


def encode_text(value, types: tuple[type, ...]) -> str:
    """`value` as the JSON text of `encode` (for a value kept as text inside a record, see `decode`)."""
    return _dumps(encode(value, types))


def _dumps(value) -> str:
    """The one JSON text form of every memo: compact, UTF-8 as is, no NaN (not JSON)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _chunks(value, depth: int):
    """`_dumps(value)` as UTF-8, in pieces: the short lists and dicts (of string keys, at most 64 items)
    of the top `depth` levels are taken apart, and anything else is one piece. So no text of the whole
    memo is ever held (the no-op stamp of 10,000 models is 13 MB, its largest piece a few; its text,
    bytes and header-joined bytes were held at once at the peak of the build that wrote it), and a
    memo of many small values is still one `json.dumps` call, not one per value."""
    if depth and isinstance(value, list) and len(value) <= 64:
        yield b"["
        for i, item in enumerate(value):
            if i:
                yield b","
            yield from _chunks(item, depth - 1)
        yield b"]"
    elif depth and isinstance(value, dict) and len(value) <= 64 and all(isinstance(k, str) for k in value):
        yield b"{"
        for i, (k, item) in enumerate(value.items()):
            yield (b"," if i else b"") + _dumps(k).encode() + b":"
            yield from _chunks(item, depth - 1)
        yield b"}"
    else:
        yield from _verbatim(value) or (_dumps(value).encode(),)


# What a JSON string escapes, as `_dumps` writes it (UTF-8 as is): the control characters, the quote and
# the backslash, each mapped to a NUL (itself one) by this table, every other byte to itself. Any other
# character, and so any byte of its UTF-8, is written as it is.
_ESCAPED = bytes.maketrans(bytes(range(0x20)) + b'"\\', bytes(0x22))
_VERBATIM = 256  # a string of at least this many characters, a list of at least this many strings


def _verbatim(value) -> tuple[bytes, ...] | None:
    """`_dumps(value)` as UTF-8 (the same bytes, in pieces), for a long string or a long list of strings
    none of which holds a character JSON escapes, made without json's encoder, which looks at each
    character once to size its text and again to copy it (the no-op stamp of 10,000 models: 100,000
    paths and a megabyte of base64, a tenth of its writing); None for any other value."""
    if value.__class__ is str and len(value) >= _VERBATIM:
        parts = None
        joined = value
    elif value.__class__ is list and len(value) >= _VERBATIM:
        parts = value
        try:
            joined = "".join(value)
        except TypeError:  # not only strings
            return None
    else:
        return None
    try:
        text = joined.encode()
    except UnicodeEncodeError:  # a lone surrogate: as json.dumps has it
        return None
    if b"\0" in text.translate(_ESCAPED):
        return None
    if parts is None:
        return b'"', text, b'"'
    del joined, text  # not held with the text written (a few megabytes at 10,000 models)
    return b'["', '","'.join(parts).encode(), b'"]'


def decode(text: str | bytes, types: tuple[type, ...]):
    """The value `encode_text` wrote, rebuilt only as `types`; raises ValueError when it does not decode."""
    try:
        return json.loads(text, object_hook=_Decoder(types))
    except _UNDECODABLE as e:
        raise ValueError(f"not a memoized value: {e}") from None


class _Decoder:
    def __init__(self, types: tuple[type, ...]):
        self.types = {t.__name__: _constructor(t) for t in types}

    def __call__(self, obj: dict):
        if len(obj) == 1:
            (tag, v), = obj.items()
            if tag == "$t":
                return tuple(v)
            if tag == "$d":
                return {_hashable(k): x for k, x in v}
            if tag == "$b":
                import base64

                return base64.b64decode(v)
            if tag == "$o":
                return self.types[v[0]](v[1])  # a name not given is a KeyError: a miss
        return obj


@functools.lru_cache(maxsize=None)
def _constructor(t: type):
    """values -> an instance of `t` (a class that names its fields in `__match_args__`, in its
    constructor's order: `value.Value`, `label.Label`): by position (a quarter cheaper, for the many
    small values of a record), or by name for a constructor with keyword-only arguments (the action
    variants')."""
    if t.__init__.__code__.co_kwonlyargcount:
        names = t.__match_args__
        return lambda values: t(**dict(zip(names, values)))
    return lambda values: t(*values)


def _hashable(k):
    return tuple(_hashable(x) for x in k) if isinstance(k, list) else k


class Journal:
    """A memo of many independent records (key -> value) of which a build changes a few: saving
    appends the changed records to the file, as ninja appends to its log, so what a build writes is
    what it changed, not the whole memo; and a record is decoded only when it is read, so what a build
    decodes is what it looks at. The file is rewritten whole (compacted: the records not read are
    copied as they were) when it holds more than twice the bytes of its live records (and a megabyte),
    when its tail is torn, or when another process rewrote it for another meta meanwhile.

    Format: the header line, then `meta` (a JSON value the whole memo belongs to, such as a fingerprint
    or a cache id: another one is a miss), then one line per record, the key as a JSON string, a tab,
    and the value as JSON (tagged as `encode` does, rebuilt only as `types`), or nothing for a record
    removed; a later line wins. A killed append leaves at worst a torn last line: it is skipped, and
    the next save rewrites the file. A record that does not decode is absent. Records must not depend
    on each other, because a killed append may keep some of a build's records and not others: each
    memo checks its records against the files (stats, keys) before trusting them, so an older record
    costs only re-checking.
    """

    def __init__(self, path: Path, kind: str, version: int, meta, tmp_parent: Path, what: str,
                 types: tuple[type, ...] = (), convert=None, convert_all=None, eager: bool = False,
                 keep_text: bool = False, lazy: bool = False):
        """`types`: the classes records may hold (see `encode`). `convert`: a pair of functions
        (key, JSON value) -> value and (key, value) -> JSON value, for records held in another form
        than JSON's (tuples, the engine's value types); only the converted value is kept. `convert_all`:
        (keys, JSON values) -> their values, as the first of `convert` makes each, raising as it does if any
        one does not convert: `preload`'s, one call for all its records. `eager`:
        decode every record at once (for small plain records that a build mostly reads, such as the
        stat memo's, one parse of them all costs less than one per record). `keep_text`: keep a record's
        text once it is decoded, so compacting writes it as read instead of encoding it again (for a memo
        whose records a build mostly reads and a compaction mostly copies, as the build state's).
        `lazy`: for a build that reads a few records of many (a delta build's, `incremental.py`): the
        file is read whole and a record is found in it when asked for (a scan at the speed of `rfind`, no
        split of the file into records: at 10,000 models, reading and splitting the analysis memo,
        20 MB, cost a delta build 0.04 s for the 2 records it reads); the file is split whole only if
        the build asks for many records or for every key (`_index`)."""
        self.path = path
        self.kind = kind
        self.version = version
        self.meta = meta
        self.tmp_parent = tmp_parent
        self.what = what
        self.types = types
        self._scan = json.JSONDecoder(object_hook=_Decoder(types)).scan_once if types else _SCAN
        self._from_json, self._to_json = convert or (None, None)
        self._from_all = convert_all
        # key -> its value's JSON as in the file, or once decoded (the value is then in `_values`) the
        # JSON's length: a build that reads every record does not also hold every record's text. Of a
        # lazy journal not split yet, the records found so far, put or removed (`_lookup`).
        self._raw: dict[str, str | int] = {}
        self._values: dict[str, object] = {}  # decoded, or put by this build
        self._keep_text = keep_text
        self._changed: set[str] = set()
        self._size = 0  # bytes of records in the file, live or not
        self._appendable = False  # the file holds this memo and ends with a whole line
        self._body = b""  # a lazy journal's file, until it is split (`_index`)
        self._start = self._end = 0  # where in it its records start (at the meta line's newline), whole lines end
        self._scans = 0  # the records a lazy journal found by scanning its bytes
        self._indexed = True
        self._lock = None  # a lazy journal's, until it is split (the scheduler's threads use the stat memo)
        try:
            with open(path, "rb") as f:
                if f.readline() != header(kind, version):
                    return
                meta_line = f.readline()
                try:
                    if json.loads(meta_line) != meta:
                        return
                except ValueError:
                    return
                if not meta_line.endswith(b"\n"):
                    return self._index(iter(()), meta_line)  # torn right after it: rewritten by the next save
                if lazy:
                    import threading

                    # Read, not mapped: a mapped file that another process truncates in place (the cache
                    # directory may be shared) kills the build with SIGBUS; reading costs 7 ms more of
                    # the analysis memo's 20 MB at 10,000 models.
                    self._start = f.tell() - 1  # lines are found by their leading newline: the meta line's is the first's
                    f.seek(0)
                    self._body = body = f.read()
                    self._end = body.rfind(b"\n") + 1  # after the last whole line
                    self._lock = threading.RLock()
                    self._indexed, self._size = False, self._end - self._start - 1
                    self._appendable = self._end == len(body)
                    return
                self._index(iter(functools.partial(f.read, _PIECE), b""))
        except (OSError, ValueError):
            return
        if eager and not types and convert is None and self._raw:
            raw = self._raw
            try:
                values = json.loads(json_array(list(raw.values())))
            except ValueError:
                return  # a damaged record: each is decoded on its own when read
            self._values = dict(zip(raw, values))
            self._raw = dict(zip(raw, map(len, raw.values())))

    def _index(self, pieces, torn: bytes = b"") -> None:
        """Split the file's records (`pieces` of its bytes after the meta line) into `_raw`, as they
        stand in the file below what this build found, put or removed since (a lazy journal's); a file
        that is not a journal this code wrote (or damaged beyond a torn tail) holds none, and is
        rewritten by the next save. `torn`: a torn last line (one the pieces do not hold).

        Read a megabyte at a time, each piece split in C: at 10,000 models the build state is tens of
        megabytes, and the whole file's bytes, its text and its lines were once held together while it
        was loaded; a line at a time, a Python loop of 60,000 turns cost a delta build 0.1 s. A line is
        the key's JSON, a tab and the value's JSON (empty for a record removed), and JSON holds a tab
        only escaped, so each piece's text is one split into key, value, key, value... A damaged line
        (of no tab, or of two) shifts the fields after it: a piece of an even number of them is found
        so, and otherwise a value stands where a key should, which the keys' check finds, a value
        never being a JSON string (`put`), where every key is one. (Not by counting the lines: a count
        of 15 MB, the build state at 10,000 models, costs a third of their split.)"""
        found, self._raw, self._indexed, self._body = self._raw, {}, True, b""
        self._appendable = False
        keys: list[str] = []  # as JSON, of each whole line
        values: list[str] = []
        size = 0
        rest = b""  # the start of a line the last piece ended in
        try:
            for piece in pieces:
                piece = rest + piece if rest else piece
                end = piece.rfind(b"\n") + 1
                rest = piece[end:]
                fields = str(memoryview(piece)[:end], "utf-8").replace("\n", "\t").split("\t")  # no copy of the bytes
                size += end
                del piece
                if not len(fields) & 1:  # a line of no tab or two: the rest would be misaligned
                    return self._overlay(found)
                keys += fields[0:-1:2]
                values += fields[1::2]
            joined = ",".join(keys)
            # keys whose JSON holds no escape and no quote but the two around it are those texts: no parse
            # (a quote inside one found by memchr, not by counting the quotes of the keys' JSON a character
            # at a time: at 2,000 models the stat memo's keys took 1.6 M instructions so, 0.5 M now)
            texts = joined[1:-1].split('","')
            if "\\" not in joined and len(texts) == len(keys) and joined[0] == joined[-1] == '"' \
                    and '"' not in "".join(texts):
                keys = texts
            else:
                keys = json.loads("[" + joined + "]")
                if not all(isinstance(k, str) for k in keys):
                    return self._overlay(found)
        except (UnicodeDecodeError, ValueError):
            return self._overlay(found)
        del joined, texts
        raw = self._raw = dict(zip(keys, values))  # a later line wins
        if "" in raw.values():  # some removed (looked for in C: most journals have none)
            for key in [k for k, v in raw.items() if not v]:
                del raw[key]
        self._size = size
        self._appendable = not (rest or torn)
        self._overlay(found)

    def _split(self) -> None:
        """Index a lazy journal's bytes whole (`_index`), the torn line after its last whole one too."""
        body, end = self._body, self._end
        self._index((body[i:min(i + _PIECE, end)] for i in range(self._start + 1, end, _PIECE)), body[end:])

    def _overlay(self, found: dict) -> None:
        """Lay what a lazy journal found, put or removed before it was split over the file's records."""
        raw = self._raw
        raw.update(found)
        for key in self._changed - found.keys():  # removed
            raw.pop(key, None)

    def _lookup(self, key: str) -> str | int | None:
        """The record's entry in `_raw` (None: absent), of a lazy journal found by a scan of its bytes
        for the last line of the key (a raw newline only ends a line, so one followed by the key's JSON
        and a tab starts its line; this code writes a key's JSON one way), or, after a few scans (a
        build that reads many records), by splitting it whole."""
        if self._indexed:
            return self._raw.get(key)
        with self._lock:
            if self._indexed or key in self._raw or key in self._changed:
                return self._raw.get(key)
            if self._scans >= _SCANS:
                self._split()
                return self._raw.get(key)
            self._scans += 1
            body = self._body
            start = body.rfind(b"\n" + json.dumps(key, ensure_ascii=False).encode() + b"\t", self._start, self._end)
            if start < 0:
                return None
            start = body.find(b"\t", start) + 1
            line = body[start:body.find(b"\n", start)]
            try:
                raw = line.decode()
            except UnicodeDecodeError:
                return None
            if not raw or "\t" in raw:  # removed, or damaged
                return None
            self._raw[key] = raw
            return raw

    @staticmethod
    def meta_of(path: Path, kind: str, version: int):
        """The meta a journal file holds, read without its records (None when it holds none)."""
        try:
            with open(path, "rb") as f:
                if f.readline() != header(kind, version):
                    return None
                return json.loads(f.readline())
        except (OSError, ValueError):
            return None

    def __contains__(self, key: str) -> bool:
        return self._lookup(key) is not None

    def holds_all(self, keys: list[str]) -> bool:
        """Whether every key has a record (`__contains__` of each), found in C once the file is split."""
        if not self._indexed:
            return all(map(self.__contains__, keys))
        return all(map(self._raw.__contains__, keys))  # a record's entry is never None nor absent

    def keys(self):
        if not self._indexed:
            with self._lock:
                if not self._indexed:
                    self._split()
        return self._raw.keys()

    def get(self, key: str, default=None):
        """The record's value, decoded on first read; `default` when absent or not decodable."""
        hit = self._values.get(key, _ABSENT)
        if hit is not _ABSENT:
            return hit
        raw = self._lookup(key)
        if not isinstance(raw, str):  # absent, or decoded meanwhile (by another thread)
            return self._values.get(key, default)
        try:
            value = _loads(raw, self._scan)
        except _UNDECODABLE:
            self.remove(key)
            return default
        return self._decoded(key, raw, value, default)

    def get_all(self, keys: list[str]) -> list:
        """`get` of each key (None for one absent): the records decoded found in C, the others one by one
        (the stat memo's, decoded at once, answer 30,000 questions of the no-op stamp and as many of an
        ordinary build's check of its sources and blobs at 10,000 models)."""
        values = list(map(self._values.get, keys, itertools.repeat(_ABSENT)))
        if any(map(operator.is_, values, itertools.repeat(_ABSENT))):
            values = [self.get(k) if v is _ABSENT else v for k, v in zip(keys, values)]
        return values

    def preload(self, keys) -> None:
        """Decode, in one parse, the records of `keys` not decoded yet (for a build about to read most
        of them: one parse of them all costs a fraction of one per record). A record that does not
        decode is left to `get`, which finds it absent."""
        keys = list(keys)
        if not self._indexed and len(keys) > _SCANS:
            self.keys()  # split whole: one pass, not a scan per record
        if self._indexed:  # the common case (the build state's 10,000 records in a delta build): no call per key
            todo = list(itertools.compress(keys, map(str.__instancecheck__, map(self._raw.get, keys))))
        else:
            todo = [k for k in keys if isinstance(self._lookup(k), str)]
        raw = self._raw  # after the lookups: one may split the file, into a new table (`_index`)
        texts = list(map(raw.__getitem__, todo))
        try:
            values = json.loads(json_array(texts), object_hook=_Decoder(self.types) if self.types else None)
        except _UNDECODABLE:
            return  # a damaged record among them: each is decoded on its own when read
        converted = values if self._from_json is None else self._all_converted(todo, values)
        if converted is None:  # converted one by one: a record that does not convert is absent
            for key, text, value in zip(todo, texts, values):
                self._decoded(key, text, value, None)
            return
        # Kept as decoded (the stat memo's 10,000 sources at 10,000 models) or converted at once: in C
        self._values.update(zip(todo, converted))
        if not self._keep_text:
            raw.update(zip(todo, map(len, texts)))

    def _all_converted(self, keys: list[str], values: list) -> list | None:
        """The records' values converted by `convert_all`; None without it, or when one does not convert."""
        if self._from_all is None:
            return None
        try:
            return self._from_all(keys, values)
        except _UNDECODABLE:
            return None

    def texts(self, keys: list[str]) -> list[str | None]:
        """The records' texts as held, not decoded (None: absent, or decoded and its text not kept), for
        a caller that compares a record's text with the text of the value it expects (`text_of`) rather
        than decoding it: at 10,000 models, decoding the build state's 20,000 output records cost a
        no-op build more than comparing them (`outputs.in_place_all`)."""
        raw = list(map(self._raw.get, keys) if self._indexed else map(self._lookup, keys))
        if {*map(type, raw)} <= {str}:  # every one a text (the common case): no loop
            return raw
        return [r if r.__class__ is str else None for r in raw]

    def text_of(self, key: str, value) -> str:
        """The text `put` writes for `value` (and a file holds for a record of that value)."""
        return self._text(key, value)

    def matched(self, keys: list[str], values: list) -> None:
        """Take `values` as the records of `keys`, decoded: the caller found each record's text (`texts`)
        to be its value's (`text_of`), so its value needs no parse; nothing is to be saved."""
        self._values.update(zip(keys, values))
        if not self._keep_text:
            raw = self._raw
            try:  # each a text, as `texts` gave it (20,000 of the build state's records at 10,000 models): in C
                raw.update(zip(keys, map(len, map(raw.__getitem__, keys))))
            except TypeError:  # a length already
                raw.update(zip(keys, map(_length, map(raw.__getitem__, keys))))

    def _decoded(self, key: str, raw: str, value, default):
        """Keep a record's decoded value (converted, see `convert`)."""
        if self._from_json is not None:
            try:
                value = self._from_json(key, value)
            except _UNDECODABLE:
                self.remove(key)
                return default
        self._values[key] = value
        if not self._keep_text:
            self._raw[key] = len(raw)
        return value

    @property
    def changed(self) -> bool:
        """Whether `save` has anything to write."""
        return bool(self._changed) or not self._appendable

    def put(self, key: str, value) -> None:
        """Raises TypeError for a value that cannot be memoized (nothing is recorded then), and for a
        string alone, which a damaged line could shift into a key's place unnoticed (`_index`)."""
        text = self._text(key, value)
        if text[:1] == '"':
            raise TypeError("a journal's record is not a string alone")
        if not self._indexed:
            with self._lock:  # not while another thread splits the file (`_lookup`)
                return self._put(key, value, text)
        self._put(key, value, text)

    def _put(self, key: str, value, text: str) -> None:
        self._raw[key] = text
        self._values[key] = value
        self._changed.add(key)

    def remove(self, key: str) -> None:
        if not self._indexed:
            with self._lock:  # not while another thread splits the file (`_lookup`)
                return self._remove(key)
        self._remove(key)

    def _remove(self, key: str) -> None:
        self._values.pop(key, None)
        if self._lookup(key) is not None:
            del self._raw[key]
            self._changed.add(key)

    def save(self) -> str | None:
        """None when saved (or nothing changed), else a warning naming what was not saved and why. A
        file that does not hold this memo (missing, another version or meta, a torn tail) is rewritten.

        Records are encoded and written a thousand at a time, never as one text of them all: at
        10,000 models the build state's records are tens of megabytes, and their text, its bytes and
        a copy of those were once held together at the end of a build, its peak of memory."""
        if not self._changed and self._appendable:
            return None
        from . import atomic

        try:
            appended = False
            if self._appendable and not self._indexed:
                # A lazy journal (a delta build's) does not know its live records' size: it appends,
                # and the next build that splits the journal whole judges whether to compact it.
                appended = self._append(sorted(self._changed))
            elif self._appendable:
                changed = sorted(self._changed)
                # In characters, as `_live` counts: the rule that decides when to compact.
                size = sum(len(self._line(key)) for key in changed)
                appended = self._size + size <= 2 * self._live() + (1 << 20) and self._append(changed)
            if not appended:
                self.keys()  # every record, to write them all
                written = [0]
                head = header(self.kind, self.version) + json.dumps(self.meta).encode() + b"\n"
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_bytes(self.path, itertools.chain((head,), self._lines(list(self._raw), written)),
                                   self.tmp_parent, self.kind)
                self._size = written[0]
                self._appendable = True
        except OSError as e:
            self._appendable = False
            return (f"could not save {self.what} ({e.strerror or e}: {e.filename or self.path}); "
                    "the next build re-checks what it would have remembered")
        # Written: a record this build put is held as its value alone from now on (re-encoded if the
        # file is ever rewritten), so a 10,000-model build does not hold every record twice.
        for key in self._changed:
            raw = self._raw.get(key)
            if isinstance(raw, str) and key in self._values:
                self._raw[key] = len(raw)
        self._changed.clear()
        return None

    def _live(self) -> int:
        """Characters of the live records' values (of an indexed journal), what decides compaction: summed
        when a save asks, not kept up to date by every split, put and removal (a no-op build saves nothing)."""
        return sum(v if v.__class__ is int else len(v) for v in self._raw.values())

    def _lines(self, keys: list[str], written: list[int]):
        """The records' lines as UTF-8, a thousand at a time; `written[0]` counts their bytes."""
        for i in range(0, len(keys), 1000):
            chunk = "".join(self._line(key) for key in keys[i:i + 1000]).encode()
            written[0] += len(chunk)
            yield chunk

    def _append(self, keys: list[str]) -> bool:
        """Append the records of `keys` to the file if it still holds this memo (another process may
        have rewritten it, for another meta, since it was read); False when it does not."""
        from . import atomic

        with open(self.path, "a+b") as f:
            f.seek(0)
            if f.readline() != header(self.kind, self.version) or f.readline() != json.dumps(self.meta).encode() + b"\n":
                return False
            written = [0]
            half = len(keys) // 2
            f.writelines(self._lines(keys[:half], written))  # appended: the file is open in append mode
            last = next(self._lines(keys[half:half + 1], written))
            f.write(last[:len(last) // 2])
            f.flush()
            atomic.crash_point(f"publish-{self.kind}")  # a killed append: a torn last line
            f.write(last[len(last) // 2:])
            f.writelines(self._lines(keys[half + 1:], written))
        self._size += written[0]
        return True

    def _line(self, key: str) -> str:
        """The record's line: its text as read, or (decoded since) written again from its value."""
        raw = self._raw.get(key, "")
        if isinstance(raw, int):
            raw = self._text(key, self._values[key])
        return f"{json.dumps(key, ensure_ascii=False)}\t{raw}\n"

    def _text(self, key: str, value) -> str:
        if self._to_json is not None:
            value = self._to_json(key, value)
        return _dumps(encode(value, self.types) if self.types else value)


_ABSENT = object()


def _length(raw: str | int) -> int:
    """The length of a record's value as `Journal._raw` holds it (its text, or the text's length)."""
    return raw if isinstance(raw, int) else len(raw)
