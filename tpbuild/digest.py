"""Content digests.

Locally, XXH3-128 detects change: it is an order of magnitude faster than SHA-256, which matters when
every source file and output blob is hashed. Digest strings name their algorithm (`xxh3_128:<hex>`) so a
move to another algorithm is a format bump, not a rewrite. SHA-256 is used where content crosses
machines (the remote cache), where collision resistance matters.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring
from pathlib import Path

import xxhash

ALGO = "xxh3_128"
_CHUNK = 1 << 20


def of_bytes(data: bytes) -> str:
    return f"{ALGO}:{xxhash.xxh3_128_hexdigest(data)}"


def of_file(path: str | Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return f"{ALGO}:{h.hexdigest()}"


def of_file_both(path: str | Path) -> tuple[str, str]:
    """XXH3 and SHA-256 in one read, for blobs that may be uploaded."""
    import hashlib  # here, as only the remote cache needs SHA-256: loading it (OpenSSL) took 2 ms of every build

    h = xxhash.xxh3_128()
    s = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            s.update(chunk)
    return f"{ALGO}:{h.hexdigest()}", s.hexdigest()


def canonical_json(value: object) -> bytes:
    """The one encoding of structured data that enters keys: sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonical_rows(rows) -> bytes:
    """`canonical_json` of a list of lists of strings, byte for byte, as every action key's input digests
    are ((destination, digest) pairs; `affected` names an upstream input with its path too): json.dumps
    with options makes an encoder per call, three times the cost of this (20,000 keys in a no-op build
    of 10,000 models). A value that is not a string raises TypeError, never encodes otherwise. Rows
    of two, as a key's are, are formatted whole, a third of the cost of joining each row's items."""
    try:
        return ("[" + ",".join([f"[{encode_basestring(a)},{encode_basestring(b)}]" for a, b in rows]) + "]").encode()
    except ValueError:  # a row not of two
        return ("[" + ",".join(["[" + ",".join(map(encode_basestring, row)) + "]" for row in rows]) + "]").encode()


def of_value(value: object) -> str:
    return of_bytes(canonical_json(value))


def hex_part(digest: str) -> str:
    return digest.partition(":")[2]
