"""The remote cache: action results shared between machines, behind the scheduler's lookup/store seam.

On the wire everything is named by SHA-256: an action entry by the SHA-256 of its key material
(`ac/<sha256>`), a blob by the SHA-256 of its bytes (`cas/<sha256>`). An entry lists each output as
`[path, kind, sha256, size]` (a symlink: its target); it is JSON, `{"v": 1, "entries": [...]}`, plus,
when `TPBUILD_CACHE_SIGNING_KEY` is set, `"hmac_sha256"` over the wire key and the entry — and then an
entry without a valid one is ignored, so builds that can only read trust only what a key holder wrote.

- Lookup (after a local miss): fetch the entry, then each blob the local cache lacks, hashing while it
  streams into a temp file; a blob whose SHA-256 or size is off is dropped, never stored locally, and
  the lookup is a miss. Verified blobs enter the local cache under their XXH3 name.
- Store (after an action ran with stable inputs; the scheduler keeps other results out): upload the
  blobs the remote lacks (HEAD first), in parallel, and the entry last, so no reader ever sees an entry
  whose blobs are missing.
- Faults: every request has a timeout and is retried with backoff; a failure is a warning and the
  action runs locally. After `FAILURES_TO_DISABLE` failures in a row the remote is switched off for the
  rest of the build with one warning. With `required`, each of these is an error instead.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import xxhash

from . import digest
from .action import Entry, EntryKind, OutputEntry, Symlink, wire_key_of
from .errors import BuildError, UserError, at
from .remotestore import Store, StoreError, check_url, has_credentials, open_store, scrub
from .shaindex import ShaIndex

FORMAT = 1
FAILURES_TO_DISABLE = 3
ATTEMPTS = 3
BACKOFF = 0.2  # seconds before the first retry; doubled, with jitter, for each next one
MAX_ENTRY = 64 << 20  # an action entry larger than this is not one tpbuild wrote
TRANSFERS = 8
SIG = "hmac_sha256"


@dataclass
class Settings:
    url: str
    upload: bool = True
    required: bool = False


def settings(ws, flag: str | None, no_upload: bool, required: bool) -> Settings | None:
    """The remote this build uses: `--remote-cache`, else `TPBUILD_REMOTE_CACHE`, else `[cache] remote`
    (an empty value switches it off). Bad URLs are exit 2, naming where they came from."""
    if flag is not None:
        url, where = flag, None
    elif "TPBUILD_REMOTE_CACHE" in os.environ:
        url, where = os.environ["TPBUILD_REMOTE_CACHE"], None
    else:
        url, where = ws.cache.remote or "", ws.source.line_of(("cache", "remote"))
    if not url:
        if required:
            raise UserError("--remote-required, but no remote cache is configured: pass --remote-cache URL, "
                            "set TPBUILD_REMOTE_CACHE or [cache] remote in tpbuild.toml")
        return None
    problem = check_url(url)
    if where is not None and not problem and has_credentials(url):
        problem = (f"{scrub(url)!r}: do not write credentials into tpbuild.toml; set TPBUILD_REMOTE_CACHE_USER "
                   "and TPBUILD_REMOTE_CACHE_PASSWORD (or TPBUILD_REMOTE_CACHE_TOKEN) in the environment")
    if problem:
        if where is not None:
            raise UserError(f"[cache] remote: {problem}", at(ws.source.path, where))
        source = "--remote-cache" if flag is not None else "TPBUILD_REMOTE_CACHE"
        raise UserError(f"{source}: {problem}")
    return Settings(url, upload=ws.cache.remote_upload and not no_upload, required=required)


def open_remote(s: Settings, cache_dir: Path) -> "RemoteCache":
    try:
        timeout = float(os.environ.get("TPBUILD_REMOTE_TIMEOUT") or 30)
    except ValueError:
        raise UserError("TPBUILD_REMOTE_TIMEOUT must be a number of seconds") from None
    try:
        store = open_store(s.url, timeout)
    except StoreError as e:
        raise UserError(str(e)) from None
    key = os.environ.get("TPBUILD_CACHE_SIGNING_KEY")
    return RemoteCache(store, cache_dir, upload=s.upload, required=s.required,
                       signing_key=key.encode() if key else None)


class _Failed(Exception):
    """A transfer failed and was already reported; the lookup or upload is abandoned."""


class _Unusable(Exception):
    """What the remote served cannot be used (missing or corrupt blob); the lookup is a miss."""


class RemoteCache:
    def __init__(self, backend: Store, cache_dir: Path, *, upload: bool, required: bool,
                 signing_key: bytes | None):
        self.backend = backend
        self.upload = upload
        self.required = required
        self.signing_key = signing_key
        self.index = ShaIndex(cache_dir)
        self.warn = lambda _msg: None
        self.disabled = False
        self.downloaded = 0  # bytes
        self.uploaded = 0
        self._failures = 0  # in a row
        self._lock = threading.Lock()
        self._blob_locks: dict[str, threading.Lock] = {}
        self._present: set[str] = set()  # blobs known to be on the remote during this build
        self._damaged: set[str] = set()  # blobs the remote served corrupt: re-uploaded whatever HEAD says
        self._pool: ThreadPoolExecutor | None = None

    def bind(self, warn) -> None:
        """Report through the build's warnings (they reach the console and the report)."""
        self.warn = warn

    def stats(self) -> dict:
        return {"url": self.backend.url, "upload": self.upload, "disabled": self.disabled,
                "downloaded_bytes": self.downloaded, "uploaded_bytes": self.uploaded}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- the scheduler's seam ------------------------------------------------------------------

    def lookup(self, material: bytes, cas) -> tuple[OutputEntry, ...] | None:
        if self.disabled:
            return None
        wkey = wire_key_of(material)
        try:
            buf = self._attempt(lambda: self._get_small(f"ac/{wkey}"))
            if buf is None:
                return None
            with self._lock:
                self.downloaded += len(buf)
            wire = self._decode(wkey, buf)
            return tuple(self._parallel(lambda e: self._fetch(e, cas), wire))
        except _Failed:
            return None
        except _Unusable as e:
            self._problem(f"{e}; the action runs locally")
            return None

    def store(self, material: bytes, entries: tuple[OutputEntry, ...], cas) -> None:
        if not self.upload or self.disabled:
            return
        wkey = wire_key_of(material)
        wire, blobs = [], {}
        for e in entries:
            if isinstance(e, Symlink):
                wire.append(e.to_json())
                continue
            sha = self.index.sha_of_blob(cas, e.digest, e.executable)
            if sha is None:
                self._problem(f"local blob {e.digest} of {e.path} is damaged; not uploading this result")
                return
            wire.append([e.path, e.kind.value, sha, e.size])
            blobs[sha] = cas.path(e.digest, e.executable)
        try:
            self._parallel(self._push, blobs.items())
            body = self._encode(wkey, wire)
            self._attempt(lambda: self.backend.put(f"ac/{wkey}", io.BytesIO(body), len(body)))
        except _Failed:
            return
        with self._lock:
            self.uploaded += len(body)

    # -- entries ------------------------------------------------------------------------------

    def _signature(self, wkey: str, body: bytes) -> str:
        return hmac.new(self.signing_key, wkey.encode() + b"\n" + body, hashlib.sha256).hexdigest()

    def _encode(self, wkey: str, wire: list) -> bytes:
        data = {"v": FORMAT, "entries": wire}
        if self.signing_key is not None:
            data[SIG] = self._signature(wkey, digest.canonical_json(data))
        return digest.canonical_json(data)

    def _decode(self, wkey: str, raw: bytes) -> list:
        try:
            data = json.loads(raw)
            sig = data.pop(SIG, None)
            if data.get("v") != FORMAT:
                raise ValueError
            wire = [(str(p), EntryKind(k), str(d), int(n)) for p, k, d, n in data["entries"]]
            if any((k is not EntryKind.SYMLINK and len(d) != 64) or not _safe_path(p) for p, k, d, _ in wire):
                raise ValueError
        except (ValueError, TypeError, KeyError, AttributeError):
            raise _Unusable(f"remote cache entry ac/{wkey} does not parse") from None
        if self.signing_key is not None:
            want = self._signature(wkey, digest.canonical_json(data))
            if not isinstance(sig, str) or not hmac.compare_digest(sig, want):
                raise _Unusable(f"remote cache entry ac/{wkey} is {'not signed' if sig is None else 'badly signed'} "
                                "with TPBUILD_CACHE_SIGNING_KEY; ignored")
        return wire

    def _get_small(self, key: str) -> bytes | None:
        buf = _Capped(MAX_ENTRY)
        return buf.getvalue() if self.backend.get(key, buf) else None

    # -- blobs --------------------------------------------------------------------------------

    def _blob_lock(self, sha: str) -> threading.Lock:
        with self._lock:
            return self._blob_locks.setdefault(sha, threading.Lock())

    def _fetch(self, w: tuple, cas) -> OutputEntry:
        path, kind, sha, size = w
        if kind is EntryKind.SYMLINK:
            return Symlink(path, sha)
        exe = kind is EntryKind.EXECUTABLE
        with self._blob_lock(sha):  # two entries naming one blob download it once
            known = self.index.xxh3_of(sha)
            if known is not None and cas.verify(known, exe):
                if os.stat(cas.path(known, exe)).st_size != size:
                    raise _Unusable(f"remote cache entry names {path} with the wrong size; ignored")
                return Entry(path, kind, known, size)
            tmp = cas.temp_path("remote")
            try:
                found, sink = self._attempt(lambda: self._download(f"cas/{sha}", tmp))
                if not found:
                    raise _Unusable(f"remote cache blob cas/{sha} ({path}) is missing behind an existing entry")
                if sink.sha.hexdigest() != sha or sink.size != size:
                    with self._lock:
                        self._damaged.add(sha)
                    raise _Unusable(f"remote cache blob cas/{sha} ({path}) is corrupt or truncated "
                                    f"({sink.size} of {size} bytes, SHA-256 {sink.sha.hexdigest()[:12]}…); "
                                    "discarded")
                d = f"{digest.ALGO}:{sink.xxh3.hexdigest()}"
                cas.put_file(tmp, executable=exe, move=True, known=d)
            finally:
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass
            self.index.record(d, sha)
            with self._lock:
                self.downloaded += size
                self._present.add(sha)
        return Entry(path, kind, d, size)

    def _download(self, key: str, tmp: Path):
        with open(tmp, "wb") as f:  # truncated on every attempt
            sink = _Hashing(f)
            return self.backend.get(key, sink), sink

    def _push(self, item: tuple[str, Path]) -> None:
        sha, path = item
        with self._lock:
            if sha in self._present:
                return
            damaged = sha in self._damaged
        if damaged or not self._attempt(lambda: self.backend.has(f"cas/{sha}")):
            size = path.stat().st_size

            def put() -> None:
                with open(path, "rb") as f:
                    self.backend.put(f"cas/{sha}", f, size)

            self._attempt(put)
            with self._lock:
                self.uploaded += size
        with self._lock:
            self._present.add(sha)

    # -- faults -------------------------------------------------------------------------------

    def _parallel(self, fn, items) -> list:
        items = list(items)
        if len(items) <= 1:
            return [fn(i) for i in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(TRANSFERS, thread_name_prefix="tpbuild-remote")
        futures = [self._pool.submit(fn, i) for i in items]
        results, first = [], None
        for f in futures:  # wait for all, so no transfer outlives the lookup that started it
            try:
                results.append(f.result())
            except (_Failed, _Unusable, BuildError) as e:
                first = first or e
        if first is not None:
            raise first
        return results

    def _attempt(self, fn):
        """`fn()`, retried with backoff while it fails transiently; _Failed once reported."""
        for n in range(ATTEMPTS):
            if self.disabled:
                raise _Failed
            try:
                result = fn()
            except StoreError as e:
                if e.transient and n + 1 < ATTEMPTS:
                    time.sleep(BACKOFF * (2 ** n) * (0.5 + random.random()))
                    continue
                self._failed(e)
                raise _Failed from None
            with self._lock:
                self._failures = 0
            return result

    def _failed(self, e: StoreError) -> None:
        with self._lock:
            if self.disabled:
                return
            self._failures += 1
            off = self._failures >= FAILURES_TO_DISABLE
            self.disabled = self.disabled or off
        if off:
            self._problem(f"remote cache {self.backend.url} switched off for the rest of this build after "
                          f"{FAILURES_TO_DISABLE} failures in a row; last: {e}")
        else:
            self._problem(f"remote cache: {e}; going on without it for this transfer")

    def _problem(self, msg: str) -> None:
        if self.required:
            raise BuildError(f"{msg} (--remote-required)")
        self.warn(msg)


def _safe_path(p: str) -> bool:
    """A relative path that stays inside the output tree (an entry is data from another machine)."""
    parts = p.split("/")
    return bool(p) and not p.startswith("/") and all(x not in ("", ".", "..") for x in parts)


class _Hashing:
    """A sink that writes to a file and hashes what passes (SHA-256 to verify, XXH3 to store locally)."""

    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.xxh3 = xxhash.xxh3_128()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.sha.update(data)
        self.xxh3.update(data)
        self.size += len(data)


class _Capped(io.BytesIO):
    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap

    def write(self, data) -> int:
        if self.tell() + len(data) > self.cap:
            raise StoreError(f"an action entry above {self.cap} bytes", transient=False)
        return super().write(data)
