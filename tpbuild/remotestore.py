"""Where a remote cache keeps its bytes: one small interface and its three backends.

A backend stores opaque objects under keys `ac/<sha256>` (action entries) and `cas/<sha256>` (blobs),
the layout of Bazel's HTTP cache, and knows nothing of entries, digests or retries (the remote cache
owns those). Bodies stream through in 1 MiB chunks, so a multi-GB output never sits in memory.

- `file:///path`: a shared filesystem (NFS). Every object is written to a temp file beside the store
  and renamed into place, so a reader sees a whole object or none, and many writers can race (the same
  key is the same bytes, or for entries, an equally valid result).
- `http://`, `https://`: GET/HEAD/PUT, as nginx with WebDAV PUT, bazel-remote or any server storing PUT
  bodies serves it. Credentials come from the environment: `TPBUILD_REMOTE_CACHE_TOKEN` (a bearer
  token) or `TPBUILD_REMOTE_CACHE_USER` / `TPBUILD_REMOTE_CACHE_PASSWORD` (basic auth); a `user:pass@`
  in the URL (from the flag or `TPBUILD_REMOTE_CACHE`, never tpbuild.toml) works too.
- `s3://bucket/prefix`: S3 and compatible stores through boto3 and its standard credential chain; the
  endpoint from `TPBUILD_S3_ENDPOINT`, else boto3's own `AWS_ENDPOINT_URL`.

Every failure is a `StoreError` whose text never holds credentials (`scrub`). boto3 and urllib3 are
imported only when a store of their kind is opened: a build without a remote pays for neither.
"""

from __future__ import annotations

import base64
import os
import shutil
import urllib.parse
from pathlib import Path
from typing import BinaryIO, Protocol

from . import atomic

CHUNK = 1 << 20
SCHEMES = ("file", "http", "https", "s3")


class StoreError(Exception):
    """A failed transfer. `transient` ones (network, timeouts, 5xx) are worth retrying."""

    def __init__(self, message: str, transient: bool = True):
        super().__init__(message)
        self.transient = transient


class Sink(Protocol):
    def write(self, data: bytes) -> object: ...


class Store(Protocol):
    url: str  # scrubbed, for messages

    def has(self, key: str) -> bool: ...

    def get(self, key: str, sink: Sink) -> bool:
        """Stream the object into `sink`; False if there is none."""

    def put(self, key: str, body: BinaryIO, size: int) -> None: ...


def scrub(url: str) -> str:
    """The URL without user or password, as it may appear in logs and reports."""
    p = urllib.parse.urlsplit(url)
    if p.username is None and p.password is None:
        return url
    host = p.hostname or ""
    netloc = f"{host}:{p.port}" if p.port else host
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))


def has_credentials(url: str) -> bool:
    p = urllib.parse.urlsplit(url)
    return p.username is not None or p.password is not None


def check_url(url: str) -> str:
    """'' if tpbuild can open `url`, else what is wrong with it."""
    p = urllib.parse.urlsplit(url)
    if p.scheme in ("grpc", "grpcs"):  # a REAPI endpoint (tpbuild/reapi), as a cache or an executor
        try:
            port = p.port
        except ValueError:
            port = None
        if not p.hostname or port is None or p.path not in ("", "/"):
            return f"REAPI URL {scrub(url)!r}: use grpc://HOST:PORT or grpcs://HOST:PORT (a host and a port, no path)"
        return ""
    if p.scheme not in SCHEMES:
        return (f"unsupported remote cache URL {scrub(url)!r}: use file:///path, http(s)://host/prefix, "
                "s3://bucket/prefix or grpc(s)://host:port (REAPI)")
    if p.scheme == "file" and (p.netloc or not p.path.startswith("/")):
        return f"remote cache URL {scrub(url)!r}: a file URL needs an absolute path, file:///path"
    if p.scheme in ("http", "https", "s3") and not p.hostname:
        return f"remote cache URL {scrub(url)!r} names no {'bucket' if p.scheme == 's3' else 'host'}"
    return ""


def open_store(url: str, timeout: float) -> Store:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "file":
        return FileStore(url)
    if scheme == "s3":
        return S3Store(url, timeout)
    return HttpStore(url, timeout)


def copy_stream(read, sink: Sink) -> None:
    while chunk := read(CHUNK):
        sink.write(chunk)


class FileStore:
    def __init__(self, url: str):
        self.url = url
        self.root = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))

    def has(self, key: str) -> bool:
        return (self.root / key).is_file()

    def get(self, key: str, sink: Sink) -> bool:
        try:
            with open(self.root / key, "rb") as f:
                copy_stream(f.read, sink)
            return True
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StoreError(f"{self.url}/{key}: {e.strerror}") from None

    def put(self, key: str, body: BinaryIO, size: int) -> None:
        dest = self.root / key
        tmp = atomic.temp_path(self.root / "tmp", dest.name)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                shutil.copyfileobj(body, f, CHUNK)
            os.replace(tmp, dest)
        except OSError as e:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise StoreError(f"{self.url}/{key}: {e.strerror}") from None


class HttpStore:
    """GET/HEAD/PUT through urllib3, with keep-alive pools shared by the transfer threads. Proxies come
    from the environment as every HTTP client reads them (`HTTPS_PROXY`/`HTTP_PROXY`, `NO_PROXY`)."""

    def __init__(self, url: str, timeout: float):
        import urllib.request

        import urllib3

        self._urllib3 = urllib3
        p = urllib.parse.urlsplit(url)
        self.url = scrub(url)
        self.base = urllib.parse.urlunsplit((p.scheme, _host_port(p), p.path.rstrip("/"), "", ""))
        self.headers = {"User-Agent": "tpbuild"}
        token = os.environ.get("TPBUILD_REMOTE_CACHE_TOKEN")
        user = p.username or os.environ.get("TPBUILD_REMOTE_CACHE_USER")
        password = p.password or os.environ.get("TPBUILD_REMOTE_CACHE_PASSWORD", "")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif user:
            pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        kw = dict(timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False, maxsize=16, block=False)
        proxy = urllib.request.getproxies().get(p.scheme)
        if proxy and not urllib.request.proxy_bypass(p.hostname or ""):
            self.pool = urllib3.ProxyManager(proxy, **kw)
        else:
            self.pool = urllib3.PoolManager(**kw)

    def _request(self, method: str, key: str, body=None, headers: dict | None = None):
        """The response of one request (its body not yet read), its status checked."""
        try:
            r = self.pool.request(method, f"{self.base}/{key}", body=body, headers={**self.headers, **(headers or {})},
                                  preload_content=False, redirect=False)
        except self._urllib3.exceptions.HTTPError as e:
            raise StoreError(f"{method} {self.url}/{key}: {_reason(e)}") from None
        if r.status >= 300 and r.status != 404:
            r.drain_conn()
            raise StoreError(f"{method} {self.url}/{key}: HTTP {r.status} {r.reason}",
                             transient=r.status >= 500 or r.status in (408, 429))
        return r

    def has(self, key: str) -> bool:
        r = self._request("HEAD", key)
        r.drain_conn()
        return r.status != 404

    def get(self, key: str, sink: Sink) -> bool:
        r = self._request("GET", key)
        if r.status == 404:
            r.drain_conn()
            return False
        try:
            copy_stream(lambda n: r.read(n), sink)  # a body shorter than its Content-Length raises
        except (OSError, self._urllib3.exceptions.HTTPError) as e:
            r.release_conn()
            raise StoreError(f"GET {self.url}/{key}: {_reason(e)}") from None
        r.release_conn()
        return True

    def put(self, key: str, body: BinaryIO, size: int) -> None:
        r = self._request("PUT", key, body=body, headers={"Content-Length": str(size)})
        r.drain_conn()
        if r.status == 404:
            raise StoreError(f"PUT {self.url}/{key}: HTTP 404 (does the server accept PUT?)", transient=False)


def _host_port(p: urllib.parse.SplitResult) -> str:
    """The URL's host and port without its credentials (they travel in a header)."""
    host = f"[{p.hostname}]" if p.hostname and ":" in p.hostname else p.hostname or ""
    return f"{host}:{p.port}" if p.port else host


def _reason(e: Exception) -> str:
    """urllib3 wraps the cause (refused, timed out, reset) in MaxRetryError/ProtocolError; say the cause."""
    inner = getattr(e, "reason", None) or (e.args[1] if len(e.args) > 1 else None) or e
    return str(inner) or type(inner).__name__


class S3Store:
    def __init__(self, url: str, timeout: float):
        try:
            import boto3
            import boto3.exceptions
            import botocore.config
            import botocore.exceptions
        except ImportError:
            raise StoreError("s3:// remote caches need boto3: pip install 'tpbuild[remote]'",
                             transient=False) from None
        p = urllib.parse.urlsplit(url)
        self.url = scrub(url)
        self.bucket = p.hostname
        self.prefix = p.path.strip("/")
        self._errors = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
        self._client_error = botocore.exceptions.ClientError
        self._upload_failed = boto3.exceptions.S3UploadFailedError
        cfg = botocore.config.Config(connect_timeout=timeout, read_timeout=timeout,
                                     retries={"max_attempts": 1}, max_pool_connections=16)
        self.s3 = boto3.client("s3", endpoint_url=os.environ.get("TPBUILD_S3_ENDPOINT") or None, config=cfg)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, op: str, key: str, e: Exception) -> StoreError:
        status = 0
        if isinstance(e, self._client_error):
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return StoreError(f"{op} {self.url}/{key}: {e}", transient=status == 0 or status >= 500 or status == 429)

    @staticmethod
    def _missing(e: Exception) -> bool:
        code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    def has(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except self._errors as e:
            if self._missing(e):
                return False
            raise self._fail("HEAD", key, e) from None

    def get(self, key: str, sink: Sink) -> bool:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            copy_stream(body.read, sink)
            return True
        except self._errors as e:
            if self._missing(e):
                return False
            raise self._fail("GET", key, e) from None
        except OSError as e:
            raise StoreError(f"GET {self.url}/{key}: {e}") from None

    def put(self, key: str, body: BinaryIO, size: int) -> None:
        from boto3.s3.transfer import TransferConfig

        try:  # multipart above 64 MiB, so a GB tarball streams in bounded memory
            self.s3.upload_fileobj(body, self.bucket, self._key(key),
                                   Config=TransferConfig(multipart_threshold=64 << 20, use_threads=False))
        except self._errors as e:
            raise self._fail("PUT", key, e) from None
        except self._upload_failed as e:  # the transfer manager wraps the client's error
            raise StoreError(f"PUT {self.url}/{key}: {e}") from None
