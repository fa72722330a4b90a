"""Transfers between the local blob store and a REAPI server's CAS and ActionCache.

Locally blobs are named by XXH3, on the wire by SHA-256 (`ShaIndex` maps one to the other, recorded
only when tpbuild hashed the bytes both ways). Uploads ask `FindMissingBlobs` first and send only what
the server lacks: small blobs together in `BatchUpdateBlobs` requests, large ones streamed through
ByteStream `Write`. Downloads stream through ByteStream `Read` into a temp file while hashing, and a
blob whose SHA-256 or size is off is discarded, never stored: what a server says is data, not trust.

Every RPC has a deadline and is retried with backoff while it fails transiently (`ATTEMPTS`), except
when no connection could be made at all (`give_up`).
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import xxhash

from .. import digest
from ..shaindex import ShaIndex
from .wire import (CHUNK, MAX_BATCH, ReapiError, bs_grpc, bs_pb2, code_pb2, grpc, re_grpc, re_pb2,
                   rpc_error)

ATTEMPTS = 4
BACKOFF = 0.2  # seconds before the first retry; doubled, with jitter


def give_up(err: ReapiError, attempt: int) -> bool:
    """Whether the failed call `attempt` (from 0) is not tried again. A server no connection could be
    made to (refused: nothing listens; no route; no such host) is not asked again at once, as a timeout
    or an overloaded server is: the channel already retries the connection on its own backoff (1 s,
    growing) and fails every call before then at once, so our retries within it (0.2 + 0.4 + 0.8 s)
    only waited, on every build against a stopped server. The caller falls back now (or fails, with
    --remote-required), and its next action asks again."""
    return not err.transient or err.unreachable or attempt + 1 == ATTEMPTS


class MissingBlob(Exception):
    """The server does not hold a blob a result names: the result is unusable (re-execute)."""


@dataclass(frozen=True)
class Upload:
    """A blob to make present on the server: bytes in memory, or a local file."""

    digest: re_pb2.Digest
    data: bytes | None = None
    path: Path | None = None

    def read(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()


class Server:
    """One REAPI endpoint and instance: CAS, ActionCache and ByteStream calls, retried."""

    def __init__(self, channel, instance: str, metadata: tuple = (), timeout: float = 60.0):
        self.channel = channel
        self.instance = instance
        self.metadata = metadata
        self.timeout = timeout
        self.cas = re_grpc.ContentAddressableStorageStub(channel)
        self.ac = re_grpc.ActionCacheStub(channel)
        self.bytestream = bs_grpc.ByteStreamStub(channel)
        self.uploaded = 0
        self.downloaded = 0
        self._lock = threading.Lock()

    def attempt(self, what: str, fn):
        """`fn()`, retried while it fails transiently; a ReapiError once it gives up."""
        for n in range(ATTEMPTS):
            try:
                return fn()
            except grpc.RpcError as e:
                err = rpc_error(what, e)
            if give_up(err, n):
                raise err
            time.sleep(BACKOFF * (2 ** n) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _count(self, up: int = 0, down: int = 0) -> None:
        with self._lock:
            self.uploaded += up
            self.downloaded += down

    # -- CAS -------------------------------------------------------------------------------------

    def find_missing(self, digests: list[re_pb2.Digest]) -> set[tuple[str, int]]:
        missing: set[tuple[str, int]] = set()
        unique = list({(d.hash, d.size_bytes): d for d in digests}.values())
        for i in range(0, len(unique), 10000):
            req = re_pb2.FindMissingBlobsRequest(instance_name=self.instance, blob_digests=unique[i:i + 10000])
            resp = self.attempt("FindMissingBlobs", lambda: self.cas.FindMissingBlobs(
                req, timeout=self.timeout, metadata=self.metadata))
            missing.update((d.hash, d.size_bytes) for d in resp.missing_blob_digests)
        return missing

    def upload_missing(self, uploads: list[Upload]) -> None:
        missing = self.find_missing([u.digest for u in uploads])
        todo = {(u.digest.hash, u.digest.size_bytes): u for u in uploads
                if (u.digest.hash, u.digest.size_bytes) in missing}
        batch: list[Upload] = []
        size = 0
        for u in todo.values():
            if u.digest.size_bytes > MAX_BATCH:
                self._write(u)
                continue
            if size + u.digest.size_bytes > MAX_BATCH:
                self._batch_update(batch)
                batch, size = [], 0
            batch.append(u)
            size += u.digest.size_bytes
        if batch:
            self._batch_update(batch)

    def _batch_update(self, batch: list[Upload]) -> None:
        req = re_pb2.BatchUpdateBlobsRequest(instance_name=self.instance, requests=[
            re_pb2.BatchUpdateBlobsRequest.Request(digest=u.digest, data=u.read()) for u in batch])
        resp = self.attempt("BatchUpdateBlobs", lambda: self.cas.BatchUpdateBlobs(
            req, timeout=self.timeout, metadata=self.metadata))
        for r in resp.responses:
            if r.status.code != code_pb2.OK:
                raise ReapiError(f"BatchUpdateBlobs: blob {r.digest.hash}/{r.digest.size_bytes} refused: "
                                 f"{r.status.message or code_pb2.Code.Name(r.status.code)}",
                                 transient=r.status.code in (code_pb2.UNAVAILABLE, code_pb2.RESOURCE_EXHAUSTED))
        self._count(up=sum(u.digest.size_bytes for u in batch))

    def _write(self, u: Upload) -> None:
        resource = self._resource(f"uploads/{uuid.uuid4()}/blobs/{u.digest.hash}/{u.digest.size_bytes}")

        def requests():
            offset = 0
            with (open(u.path, "rb") if u.path is not None else io.BytesIO(u.data)) as f:
                while True:
                    chunk = f.read(CHUNK)
                    last = offset + len(chunk) >= u.digest.size_bytes
                    yield bs_pb2.WriteRequest(resource_name=resource if offset == 0 else "", write_offset=offset,
                                              data=chunk, finish_write=last)
                    offset += len(chunk)
                    if last or not chunk:
                        return

        self.attempt("ByteStream.Write", lambda: self.bytestream.Write(
            requests(), timeout=self.timeout + u.digest.size_bytes / 1e6, metadata=self.metadata))
        self._count(up=u.digest.size_bytes)

    def read_bytes(self, d: re_pb2.Digest) -> bytes:
        """A small blob (a Directory, a Tree, stdout), verified; MissingBlob if the server lacks it."""
        if d.size_bytes == 0:
            return b""
        if d.size_bytes <= MAX_BATCH:
            req = re_pb2.BatchReadBlobsRequest(instance_name=self.instance, digests=[d])
            resp = self.attempt("BatchReadBlobs", lambda: self.cas.BatchReadBlobs(
                req, timeout=self.timeout, metadata=self.metadata))
            r = resp.responses[0]
            if r.status.code == code_pb2.NOT_FOUND:
                raise MissingBlob(f"{d.hash}/{d.size_bytes}")
            if r.status.code != code_pb2.OK:
                raise ReapiError(f"BatchReadBlobs {d.hash}: {r.status.message}")
            data = r.data
        else:
            chunks = []
            self._read(d, chunks.append)
            data = b"".join(chunks)
        if hashlib.sha256(data).hexdigest() != d.hash or len(data) != d.size_bytes:
            raise MissingBlob(f"{d.hash}/{d.size_bytes} (the server sent other bytes)")
        self._count(down=len(data))
        return data

    def _read(self, d: re_pb2.Digest, sink) -> None:
        req = bs_pb2.ReadRequest(resource_name=self._resource(f"blobs/{d.hash}/{d.size_bytes}"))

        # Not retried here: a half-written sink cannot be rewound; callers retry the whole blob.
        try:
            for resp in self.bytestream.Read(req, timeout=self.timeout + d.size_bytes / 1e6, metadata=self.metadata):
                sink(resp.data)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise MissingBlob(f"{d.hash}/{d.size_bytes}") from None
            raise

    def download(self, d: re_pb2.Digest, tmp: Path) -> str:
        """Stream a blob into `tmp`, verified by SHA-256 and size; its local XXH3 digest."""
        for n in range(ATTEMPTS):
            sha, xxh, size = hashlib.sha256(), xxhash.xxh3_128(), 0
            with open(tmp, "wb") as f:
                def sink(data: bytes) -> None:
                    nonlocal size
                    f.write(data)
                    sha.update(data)
                    xxh.update(data)
                    size += len(data)
                try:
                    if d.size_bytes:
                        self._read(d, sink)
                    break
                except grpc.RpcError as e:
                    err = rpc_error("ByteStream.Read", e)
                    if give_up(err, n):
                        raise err from None
                    time.sleep(BACKOFF * (2 ** n) * (0.5 + random.random()))
        if sha.hexdigest() != d.hash or size != d.size_bytes:
            raise MissingBlob(f"{d.hash}/{d.size_bytes} (the server sent {size} other bytes)")
        self._count(down=size)
        return f"{digest.ALGO}:{xxh.hexdigest()}"

    def _resource(self, rest: str) -> str:
        return f"{self.instance}/{rest}" if self.instance else rest

    # -- ActionCache -------------------------------------------------------------------------------

    def get_action_result(self, action_digest: re_pb2.Digest) -> re_pb2.ActionResult | None:
        req = re_pb2.GetActionResultRequest(instance_name=self.instance, action_digest=action_digest,
                                            inline_stdout=True, inline_stderr=True)
        try:
            return self.attempt("GetActionResult", lambda: self.ac.GetActionResult(
                req, timeout=self.timeout, metadata=self.metadata))
        except ReapiError as e:
            if e.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def update_action_result(self, action_digest: re_pb2.Digest, result: re_pb2.ActionResult) -> None:
        req = re_pb2.UpdateActionResultRequest(instance_name=self.instance, action_digest=action_digest,
                                               action_result=result)
        self.attempt("UpdateActionResult", lambda: self.ac.UpdateActionResult(
            req, timeout=self.timeout, metadata=self.metadata))


class LocalBlobs:
    """The local side: SHA-256 names for local blobs, and verified downloads into the local store."""

    def __init__(self, server: Server, cas, index: ShaIndex):
        self.server = server
        self.cas = cas
        self.index = index
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def wire_digest(self, d: str, executable: bool, size: int) -> re_pb2.Digest:
        """The SHA-256 digest of a local blob; MissingBlob if it no longer matches its name."""
        sha = self.index.sha_of_blob(self.cas, d, executable)
        if sha is None:
            raise MissingBlob(f"local blob {d} is gone or damaged")
        return re_pb2.Digest(hash=sha, size_bytes=size)

    def source_digest(self, path: str, d: str) -> re_pb2.Digest:
        """A workspace file by SHA-256; hashed once per content (the index remembers its XXH3 name)."""
        sha = self.index.sha_of(d)
        if sha is None:
            got, sha = digest.of_file_both(path)
            if got != d:
                raise MissingBlob(f"{path} changed during the build")
            self.index.record(d, sha)
        return re_pb2.Digest(hash=sha, size_bytes=Path(path).stat().st_size)

    def fetch(self, d: re_pb2.Digest, executable: bool) -> str:
        """Make the blob local (downloading only what the local store lacks); its XXH3 digest."""
        with self._blob_lock(d.hash):
            known = self.index.xxh3_of(d.hash)
            if known is not None and self.cas.verify(known, executable):
                return known
            tmp = self.cas.temp_path("reapi")
            try:
                local = self.server.download(d, tmp)
                self.cas.put_file(tmp, executable=executable, move=True, known=local)
            finally:
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass
            self.index.record(local, d.hash)
            return local

    def _blob_lock(self, sha: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(sha, threading.Lock())
