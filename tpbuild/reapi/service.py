"""The REAPI service one build uses, from its flags, environment and `tpbuild.toml`.

Where each setting comes from, first found wins:
- executor: `--remote-executor URL`, `TPBUILD_REMOTE_EXECUTOR`, `[remote] executor` (an empty value
  switches it off);
- a remote cache only: `--remote-cache grpc://...` (or `grpcs://`), `TPBUILD_REMOTE_CACHE`,
  `[cache] remote`, as for the other remote caches;
- `--remote-instance-name`, `TPBUILD_REMOTE_INSTANCE_NAME`, `[remote] instance_name` (default '');
- `[remote] exec_properties`: platform properties every remote action gets unless it sets its own;
- `[remote] queue_timeout` (seconds, default 600; `TPBUILD_REMOTE_QUEUE_TIMEOUT`): how long an action
  may wait for a worker offering its platform before it fails.
With both an executor and a grpc cache, the executor's endpoint serves both (the cache URL must
then name the same endpoint, or be left out).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError, at
from ..remotestore import check_url
from ..shaindex import ShaIndex


@dataclass(frozen=True)
class Settings:
    url: str
    execute: bool          # remote execution; else the ActionCache/CAS as a remote cache only
    instance: str
    exec_properties: dict
    queue_timeout: float
    upload: bool
    required: bool


def is_reapi_url(url: str) -> bool:
    return url.startswith(("grpc://", "grpcs://"))


def settings(ws, flags, cache_url: str | None, upload: bool, required: bool) -> Settings | None:
    """None when neither remote execution nor a grpc remote cache is configured. Bad values are exit 2,
    naming the flag, variable or tpbuild.toml line they came from."""
    flag = getattr(flags, "remote_executor", None)
    section = ws.remote
    if flag is not None:
        url, where = flag, "--remote-executor"
    elif "TPBUILD_REMOTE_EXECUTOR" in os.environ:
        url, where = os.environ["TPBUILD_REMOTE_EXECUTOR"], "TPBUILD_REMOTE_EXECUTOR"
    else:
        url, where = section.executor or "", None
    execute = bool(url)
    if not execute:
        if not cache_url or not is_reapi_url(cache_url):
            return None
        url = cache_url
    problem = check_url(url) if is_reapi_url(url) else f"{url!r}: use grpc://HOST:PORT or grpcs://HOST:PORT"
    if problem:
        if where is None and execute:
            raise UserError(f"[remote] executor: {problem}", at(ws.source.path, ws.source.line_of(("remote", "executor"))))
        raise UserError(f"{where or 'the remote cache'}: {problem}")
    if execute and cache_url and is_reapi_url(cache_url) and cache_url.rstrip("/") != url.rstrip("/"):
        raise UserError(f"--remote-cache {cache_url} and --remote-executor {url} name different REAPI endpoints; "
                        "the executor's ActionCache is the remote cache: leave --remote-cache out")
    instance = getattr(flags, "remote_instance_name", None)
    if instance is None:
        instance = os.environ.get("TPBUILD_REMOTE_INSTANCE_NAME", section.instance_name)
    timeout = section.queue_timeout
    if "TPBUILD_REMOTE_QUEUE_TIMEOUT" in os.environ:
        try:
            timeout = float(os.environ["TPBUILD_REMOTE_QUEUE_TIMEOUT"])
        except ValueError:
            raise UserError("TPBUILD_REMOTE_QUEUE_TIMEOUT must be a number of seconds") from None
    return Settings(url, execute, instance, dict(section.exec_properties), timeout, upload, required)


class Service:
    """An open REAPI endpoint; `wrap` puts its runner around local execution for one build."""

    def __init__(self, s: Settings):
        from .blobs import Server
        from .wire import metadata_from_env, open_channel

        self.settings = s
        try:
            timeout = float(os.environ.get("TPBUILD_REMOTE_TIMEOUT") or 60)
        except ValueError:
            raise UserError("TPBUILD_REMOTE_TIMEOUT must be a number of seconds") from None
        self.server = Server(open_channel(s.url), s.instance, metadata_from_env(os.environ), timeout)
        self._guard = None

    def wrap(self, local, cache_dir: Path, warn):
        """The runner around `local` (a runner.LocalExecution: what stays local runs there, and its
        executor's blob store and logs directory are the ones results and logs go to)."""
        from .blobs import LocalBlobs
        from .execution import Remote
        from .runners import ReapiCache, RemoteExecution, Guard

        s = self.settings
        ex = local.executor
        remote = Remote(self.server, LocalBlobs(self.server, ex.cas, ShaIndex(cache_dir)), ex.logs_dir,
                        platform=s.exec_properties, queue_timeout=s.queue_timeout)
        if s.execute:
            self._guard = Guard("remote executor", s.url, s.required, warn)
            return RemoteExecution(local, remote, self._guard)
        self._guard = Guard("remote cache", s.url, s.required, warn)
        return ReapiCache(local, remote, self._guard, s.upload)

    def stats(self) -> dict:
        return {"url": self.settings.url, "executor": self.settings.execute,
                "instance_name": self.settings.instance,
                "disabled": bool(self._guard and self._guard.disabled),
                "downloaded_bytes": self.server.downloaded, "uploaded_bytes": self.server.uploaded}

    def close(self) -> None:
        self.server.channel.close()
