"""REAPI behind the execution seam (`tpbuild.runner`): two runners that wrap local execution.

- `RemoteExecution` runs `remotable` run actions on the executor and hands everything else (in-process
  actions, rules' `local_only` ones) to the runner below. An ActionCache hit is a remote-cache result;
  a fresh execution is `executed` with `executed_by` naming the remote worker.
- `ReapiCache` (`--remote-cache grpc://...`) looks run actions up in the REAPI ActionCache, runs them
  below on a miss and uploads the outputs and an ActionResult, as Bazel's `--remote_cache` does. It
  names actions exactly as remote execution does, so either reads what the other wrote.

Both treat the service, not the action, failing the same way as the HTTP/S3 cache does: a warning and
the action runs locally; after `FAILURES_TO_DISABLE` failures in a row the service is switched off for
the rest of the build; with `--remote-required`, any of them fails the build instead. A failure of
the action itself (it exited non-zero remotely) is the action's failure, never retried locally.
"""

from __future__ import annotations

import threading

from ..action import RunAction
from ..errors import BuildError
from ..runner import ExecutedBy, Origin, Request, Result, Runner, Where, Wrapper
from .blobs import MissingBlob
from .execution import Remote
from .wire import ReapiError

FAILURES_TO_DISABLE = 3


class Guard:
    """Counts service failures in a row; decides between a warning, switching off, and an error."""

    def __init__(self, what: str, url: str, required: bool, warn):
        self.what = what
        self.url = url
        self.required = required
        self.warn = warn
        self.disabled = False
        self._failures = 0
        self._lock = threading.Lock()

    def ok(self) -> None:
        with self._lock:
            self._failures = 0

    def failed(self, req: Request, e: Exception) -> None:
        msg = f"{self.what} {self.url}: {e}"
        if self.required:
            raise BuildError(f"{req.action.owner}: {req.action.mnemonic}: {msg} (--remote-required)")
        with self._lock:
            self._failures += 1
            off = self._failures >= FAILURES_TO_DISABLE and not self.disabled
            self.disabled = self.disabled or off
        if off:
            self.warn(f"{msg}; switched off for the rest of this build after {FAILURES_TO_DISABLE} failures "
                      "in a row, actions run locally")
        elif not self.disabled:
            self.warn(f"{msg}; {req.action.mnemonic} of {req.action.owner} runs locally")


class RemoteExecution(Wrapper):
    def __init__(self, inner: Runner, remote: Remote, guard: Guard):
        super().__init__(inner)
        self.remote = remote
        self.guard = guard

    def blocking(self, action) -> bool:
        return _remotable(action) or self.inner.blocking(action)

    def run(self, req: Request) -> Result:
        if not _remotable(req.action) or self.guard.disabled:
            return self.inner.run(req)
        req.started()
        try:
            ex = self.remote.execute(req.action, list(req.inputs), req.material)
        except (ReapiError, MissingBlob) as e:
            self.guard.failed(req, e)
            return self.inner.run(req)
        self.guard.ok()
        if ex.cached:
            return Result(ex.entries, Origin.REMOTE)
        return Result(ex.entries, Origin.EXECUTED, ExecutedBy(Where.REMOTE, ex.worker), unstable=not req.stable())


class ReapiCache(Wrapper):
    def __init__(self, inner: Runner, remote: Remote, guard: Guard, upload: bool):
        super().__init__(inner)
        self.remote = remote
        self.guard = guard
        self.upload = upload

    def blocking(self, action) -> bool:
        return isinstance(action, RunAction) or self.inner.blocking(action)

    def run(self, req: Request) -> Result:
        if not isinstance(req.action, RunAction) or self.guard.disabled:
            return self.inner.run(req)
        try:
            w, uploads = self.remote.wire(req.action, list(req.inputs), req.material)
            hit = self.remote.lookup(req.action, w)
            self.guard.ok()
        except (ReapiError, MissingBlob) as e:
            self.guard.failed(req, e)
            return self.inner.run(req)
        if hit is not None:
            return Result(hit.entries, Origin.REMOTE)
        result = self.inner.run(req)
        if self.upload and result.origin is Origin.EXECUTED and result.storable and not self.guard.disabled:
            try:
                self.remote.store(req.action, w, uploads, result.entries, self.remote.local_log(req.action))
                self.guard.ok()
            except (ReapiError, MissingBlob) as e:
                self.guard.failed(req, e)
        return result


def _remotable(action) -> bool:
    return isinstance(action, RunAction) and action.remotable
