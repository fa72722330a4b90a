"""The action cache: action key -> the output tree the action produced.

One small JSON file per key at `<cache>/ac/<aa>/<hex>`, written by temp file and rename: the entries
(of a composed tree, its own entries and its number of parts). The body carries a format version;
an entry of another version or that does not parse is a miss, so a format change needs no migration
and a torn or corrupted entry can only cost a rebuild.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import atomic, digest
from .action import Entry, OutputEntry, Tree

FORMAT = 1


class ActionCache:
    def __init__(self, root: Path):
        self.root = root / "ac"
        self.tmp = root / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._root_text = str(self.root)
        self._dirs: set[str] = set()

    def path(self, key: str) -> Path:
        return Path(self._path_text(key))

    def _path_text(self, key: str) -> str:
        # A plain string: one per action of a build, and pathlib costs 10x more per path.
        hx = digest.hex_part(key)
        return f"{self._root_text}/{hx[:2]}/{hx}"

    def get(self, key: str) -> tuple[tuple[OutputEntry, ...], int] | None:
        """The entries of the result stored under `key` and the number of parts it composed (a
        composed `Tree` is stored as its own entries: see `action.recorded`)."""
        try:
            with open(self._path_text(key), "rb") as f:
                data = json.loads(f.read())
            if data.get("v") != FORMAT:
                return None
            parts = data.get("parts", 0)
            if type(parts) is not int or parts < 0:
                return None
            return tuple(Entry.from_json(e) for e in data["entries"]), parts
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    def scan(self) -> Iterator[tuple[Path, tuple[OutputEntry, ...] | None]]:
        """Every entry file with the entries it names, None for one that does not parse (damaged, or torn)."""
        try:
            shards = sorted(os.scandir(self.root), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for shard in shards:
            if shard.is_dir(follow_symlinks=False):
                for e in sorted(os.scandir(shard.path), key=lambda e: e.name):
                    hit = self.get(f"{digest.ALGO}:{e.name}")
                    yield Path(e.path), hit[0] if hit is not None else None

    def put(self, key: str, entries: Sequence[OutputEntry]) -> None:
        body = encode(entries)
        dest = self._path_text(key)
        shard = dest[:dest.rindex("/")]
        if shard not in self._dirs:
            os.makedirs(shard, exist_ok=True)
            self._dirs.add(shard)
        atomic.write_bytes(dest, body, self.tmp, "ac")


def encode(entries: Sequence[OutputEntry]) -> bytes:
    """A composed `Tree` as its own entries and its number of parts: one edited model re-stores a
    repository's few own entries, not every model's."""
    if isinstance(entries, Tree) and entries.parts:
        body = {"v": FORMAT, "entries": [e.to_json() for e in entries.own], "parts": len(entries.parts)}
    else:
        body = {"v": FORMAT, "entries": [e.to_json() for e in entries]}
    return json.dumps(body, separators=(",", ":")).encode()
