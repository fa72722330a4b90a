"""Where `tpbuild publish` puts a model repository: a local (or mounted) directory, or an S3 prefix.

Both backends offer the same few operations on paths relative to the destination root (`add_sub/1/
model.py`): list what is there with a size and a change tag, put one file, delete one, and read and
write tpbuild's manifest. The manifest, the plan and the order belong to `publish.py`; a backend only
moves bytes, but it moves them so that a Triton server polling the destination never sees a part:

- A directory: every file is written to a temp file at the destination root (a file there is not a
  model to Triton, which only looks at subdirectories) and renamed into place. A directory that does
  not exist yet appears by rename too, already holding its first file, because a version directory
  seen without its model file hangs a polling server (see triton-facts: "Model repositories on S3").
  Its change tag is the file's mtime in nanoseconds: any rewrite behind tpbuild's back moves it.
  One publish at a time per directory (a lock file at the root).
- S3 (and compatible stores: MinIO, Ceph): one PUT per file (multipart above 64 MiB, through boto3's
  transfer manager), so an object is whole or absent. Its change tag is the object's ETag. Endpoint,
  region and credentials come from boto3's standard chain (`AWS_*` environment, `~/.aws`, instance
  roles) and `--endpoint-url`; S3 has no symlinks, so a repository holding one is refused.

The names tpbuild keeps at the root (`.tpbuild-publish.json`, `.tpbuild-publish.lock`, temp files and
staged directories starting with `.tpbuild-`) are never listed as repository files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

from tpbuild.plugin import BuildError, UserError

MANIFEST = ".tpbuild-publish.json"
LOCK = ".tpbuild-publish.lock"
OWN_PREFIX = ".tpbuild-"  # the manifest, the lock, temp files and staged directories
MULTIPART_THRESHOLD = 64 << 20
CHUNK = 1 << 20

Progress = Callable[[int], None]  # bytes just transferred


@dataclass(frozen=True)
class Stored:
    """A file as the destination holds it. `tag` changes whenever the content is rewritten: an S3 ETag, or
    a directory file's mtime_ns. `link` is a symlink's target (directories only)."""

    size: int
    tag: str
    link: str | None = None


class Destination(Protocol):
    url: str
    symlinks: bool  # can it hold symlinks?

    def inside(self, directory: Path) -> bool:
        """Is DEST within `directory` (a local path)?"""

    def lock(self, write: bool) -> contextlib.AbstractContextManager:
        """Held for a whole publish (`write`) or --verify/--dry-run, which create nothing."""

    def list(self) -> dict[str, Stored]:
        """Every file below the root except tpbuild's own, by path relative to the root."""

    def read_manifest(self) -> bytes | None: ...

    def write_manifest(self, data: bytes) -> None: ...

    def put(self, path: str, source: Path, executable: bool, progress: Progress) -> Stored: ...

    def put_link(self, path: str, target: str) -> Stored: ...

    def delete(self, path: str) -> None: ...

    def delete_dir(self, path: str, files: list[str]) -> None:
        """Remove directory `path`, which holds exactly `files` (in deleting order): at once, where the
        backend can."""


def open_destination(dest: str, endpoint_url: str | None) -> Destination:
    """`s3://bucket/prefix`, or a directory path (`file://` accepted); another scheme is bad input."""
    p = urllib.parse.urlsplit(dest)
    if p.scheme == "s3":
        if not p.netloc:
            raise UserError(f"DEST {dest!r} names no bucket: use s3://BUCKET/PREFIX")
        return S3Destination(p.netloc, p.path.strip("/"), endpoint_url)
    if endpoint_url:
        raise UserError("--endpoint-url applies to s3:// destinations only")
    if p.scheme == "file":
        return DirectoryDestination(Path(urllib.parse.unquote(p.path)))
    if "://" in dest:
        raise UserError(f"DEST {dest!r}: tpbuild publishes to s3://bucket/prefix or a directory; for "
                        "gs:// or as://, mount the bucket or use its S3-compatible endpoint with --endpoint-url")
    return DirectoryDestination(Path(dest))


class DirectoryDestination:
    symlinks = True

    def __init__(self, root: Path):
        self.root = root.absolute()
        self.url = str(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"DEST {self.root} exists and is not a directory")

    def inside(self, directory: Path) -> bool:
        return self.root.resolve().is_relative_to(directory.resolve())

    @contextlib.contextmanager
    def lock(self, write: bool) -> Iterator[None]:
        if not write and not (self.root / LOCK).exists():  # a dry run or --verify creates nothing
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BuildError(f"another tpbuild publish is writing to {self.root}; run again when it "
                                 "has finished") from None
            if write:
                self._remove_leftovers()
            yield

    def _remove_leftovers(self) -> None:
        """Temp files and staged directories of a publish that was killed (only ours: under the lock, no
        other publish is running)."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in filenames + dirnames:
                if name.startswith(OWN_PREFIX) and name not in (MANIFEST, LOCK):
                    full = os.path.join(dirpath, name)
                    if os.path.isdir(full) and not os.path.islink(full):
                        shutil.rmtree(full)
                    else:
                        os.unlink(full)
            dirnames[:] = [d for d in dirnames if not d.startswith(OWN_PREFIX)]

    def list(self) -> dict[str, Stored]:
        found: dict[str, Stored] = {}
        if not self.root.is_dir():
            return found
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(OWN_PREFIX)]
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in [*filenames, *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))]:
                if name.startswith(OWN_PREFIX):
                    continue
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                found[rel] = _stat(os.path.join(dirpath, name))
        return found

    def read_manifest(self) -> bytes | None:
        try:
            return (self.root / MANIFEST).read_bytes()
        except FileNotFoundError:
            return None

    def write_manifest(self, data: bytes) -> None:
        tmp = self._temp()
        tmp.write_bytes(data)
        _sync(tmp)
        os.replace(tmp, self.root / MANIFEST)

    def _temp(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / f"{OWN_PREFIX}tmp.{os.getpid()}.{os.urandom(6).hex()}"

    def put(self, path: str, source: Path, executable: bool, progress: Progress) -> Stored:
        tmp = self._temp()
        with open(source, "rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                progress(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o755 if executable else 0o644)
        return self._place(tmp, path)

    def put_link(self, path: str, target: str) -> Stored:
        tmp = self._temp()
        os.symlink(target, tmp)
        return self._place(tmp, path)

    def _place(self, tmp: Path, path: str) -> Stored:
        dest = self.root / path
        if os.path.isdir(dest) and not os.path.islink(dest):
            raise BuildError(f"{dest} is a directory in DEST where the repository has a file; remove it")
        parent = dest.parent
        if parent.is_dir():
            os.replace(tmp, dest)
        else:
            # The new directory appears by one rename, already holding this file (a model's first file:
            # its model file, as publish orders them), never empty.
            parent.parent.mkdir(parents=True, exist_ok=True)
            stage = parent.parent / f"{OWN_PREFIX}new-{parent.name}.{os.urandom(6).hex()}"
            stage.mkdir()
            os.replace(tmp, stage / dest.name)
            os.rename(stage, parent)
        return _stat(dest)

    def delete(self, path: str) -> None:
        dest = self.root / path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)
        parent = dest.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


    def delete_dir(self, path: str, files: list[str]) -> None:
        # Renamed to a name Triton does not take for a version (not numeric) in one step, so the version
        # disappears with its model file still in it; then removed at leisure.
        d = self.root / path
        gone = d.parent / f"{OWN_PREFIX}old-{d.name}.{os.urandom(6).hex()}"
        os.rename(d, gone)
        shutil.rmtree(gone)
        parent = d.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def _stat(path: str | Path) -> Stored:
    st = os.lstat(path)
    link = os.readlink(path) if os.path.islink(path) else None
    return Stored(st.st_size, str(st.st_mtime_ns), link)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Destination:
    symlinks = False

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None):
        try:
            import boto3
            import boto3.exceptions
            import botocore.exceptions
        except ImportError:
            raise UserError("s3:// destinations need boto3: pip install 'tpbuild[remote]'") from None
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        self._errors = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError,
                        boto3.exceptions.S3UploadFailedError)
        self._no_credentials = botocore.exceptions.NoCredentialsError
        try:
            self.s3 = boto3.client("s3", endpoint_url=endpoint_url or None)
        except ValueError as e:  # a malformed endpoint URL
            raise UserError(f"--endpoint-url {endpoint_url!r}: {e}") from None

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _fail(self, op: str, path: str, e: Exception) -> BuildError:
        if isinstance(e, self._no_credentials):
            return BuildError(f"{self.url}: no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where an instance role applies")
        return BuildError(f"{op} {self.url}/{path}: {e}")

    def inside(self, directory: Path) -> bool:
        return False

    @contextlib.contextmanager
    def lock(self, write: bool) -> Iterator[None]:
        # S3 has no lock: two publishes to one prefix at once are the user's to avoid (CI concurrency).
        yield

    def list(self) -> dict[str, Stored]:
        found: dict[str, Stored] = {}
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", ()):
                    rel = obj["Key"][len(base):]
                    if rel and not rel.startswith(OWN_PREFIX) and not rel.endswith("/"):
                        found[rel] = Stored(obj["Size"], obj["ETag"].strip('"'))
        except self._errors as e:
            raise self._fail("LIST", "", e) from None
        return found

    def read_manifest(self) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self._key(MANIFEST))["Body"].read()
        except self._errors as e:
            if str(getattr(e, "response", {}).get("Error", {}).get("Code", "")) in ("404", "NoSuchKey"):
                return None
            raise self._fail("GET", MANIFEST, e) from None

    def write_manifest(self, data: bytes) -> None:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self._key(MANIFEST), Body=data,
                               ContentType="application/json")
        except self._errors as e:
            raise self._fail("PUT", MANIFEST, e) from None

    def put(self, path: str, source: Path, executable: bool, progress: Progress) -> Stored:
        from boto3.s3.transfer import TransferConfig

        key = self._key(path)
        try:
            self.s3.upload_file(str(source), self.bucket, key, Callback=progress,
                                ExtraArgs={"Metadata": {"mode": "755" if executable else "644"}},
                                Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                                      multipart_chunksize=MULTIPART_THRESHOLD))
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except self._errors as e:
            raise self._fail("PUT", path, e) from None
        return Stored(head["ContentLength"], head["ETag"].strip('"'))

    def put_link(self, path: str, target: str) -> Stored:
        raise UserError(f"{path} is a symlink, which S3 cannot hold")  # publish refuses them up front

    def delete(self, path: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self._key(path))
        except self._errors as e:
            raise self._fail("DELETE", path, e) from None

    def delete_dir(self, path: str, files: list[str]) -> None:
        for f in files:  # the model file last: a prefix is never a version without it
            self.delete(f)
