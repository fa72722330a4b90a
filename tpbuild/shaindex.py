"""The local map between a blob's XXH3 name (local cache) and its SHA-256 (remote cache).

Locally blobs are named by XXH3; on the wire, by SHA-256. Without this map every upload would re-read
a blob to hash it, and every remote hit would download blobs the local cache already holds — a
GB archive that fifty output trees share would cross the network fifty times. Both directions
are recorded only when tpbuild has hashed one blob's bytes both ways (`record`), never from what a
remote says, so a remote entry cannot steer a lookup to the wrong local blob.

Layout: `<cache>/sha256/<aa>/<sha256 hex>` holds the XXH3 digest, `<cache>/sha256/x/<aa>/<xxh3 hex>`
the SHA-256 hex; tiny files written by temp file and rename. Eviction removes both with the blob.
"""

from __future__ import annotations

from pathlib import Path

from . import atomic, digest


class ShaIndex:
    def __init__(self, cache_root: Path):
        self.root = cache_root / "sha256"
        self.tmp = cache_root / "tmp"

    def _by_sha(self, sha: str) -> Path:
        return self.root / sha[:2] / sha

    def _by_xxh3(self, d: str) -> Path:
        hx = digest.hex_part(d)
        return self.root / "x" / hx[:2] / hx

    def xxh3_of(self, sha: str) -> str | None:
        return _read(self._by_sha(sha))

    def sha_of(self, d: str) -> str | None:
        return _read(self._by_xxh3(d))

    def sha_of_blob(self, cas, d: str, executable: bool) -> str | None:
        """A local blob's SHA-256, from the index or hashed now; None if the blob no longer matches its name."""
        if not cas.verify(d, executable):
            return None
        sha = self.sha_of(d)
        if sha is None:
            got, sha = digest.of_file_both(cas.path(d, executable))
            if got != d:
                return None
            self.record(d, sha)
        return sha

    def record(self, d: str, sha: str) -> None:
        for path, value in ((self._by_sha(sha), d), (self._by_xxh3(d), sha)):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(path, value.encode(), self.tmp, "sha")

    def forget(self, d: str) -> None:
        """Drop the map of a blob that is leaving the cache."""
        x = self._by_xxh3(d)
        sha = _read(x)
        for p in ((self._by_sha(sha),) if sha else ()) + (x,):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip() or None
    except OSError:
        return None
