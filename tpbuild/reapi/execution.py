"""Running a run action on a REAPI executor, and reading/writing its result in the REAPI ActionCache.

`Remote.execute`: build the input root and the Command/Action (`merkle`, `command`), upload what the
CAS lacks, ask the ActionCache (a hit costs one call and the downloads), else `Execute` and follow the
operation stream (`WaitExecution` when the stream breaks), then fetch the outputs into the local
blob store, each verified by SHA-256. The action's log (stdout then stderr) and tool log land where
the local executor would have written them, so failures read the same.

Faults, and what becomes of them:
- the server unreachable or failing (UNAVAILABLE and the like, after retries): `ReapiError`, which the
  runner turns into local execution (or a build failure under `--remote-required`);
- a worker lost mid-action: the server requeues the job (BuildGrid retries it on another bot); an
  operation that ends in UNAVAILABLE/INTERNAL/ABORTED is executed again here, `ATTEMPTS` in all;
- inputs the CAS lost between upload and execution (FAILED_PRECONDITION): uploaded again, retried;
- a result (cached or fresh) whose outputs the CAS no longer holds: executed again, skipping the
  cache lookup;
- no worker offers the platform: the operation stays queued; after `queue_timeout` seconds it is
  cancelled and the action fails, naming the platform (a BuildError, not a hang).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..action import RunAction
from ..errors import BuildError
from ..executor import Resolved, log_path
from . import command, merkle
from .blobs import LocalBlobs, MissingBlob, Server, Upload
from .wire import ReapiError, code_pb2, grpc, ops_grpc, ops_pb2, re_grpc, re_pb2, rpc_error

ATTEMPTS = 4
WAITING = {re_pb2.ExecutionStage.UNKNOWN, re_pb2.ExecutionStage.CACHE_CHECK, re_pb2.ExecutionStage.QUEUED}
RETRYABLE = {code_pb2.UNAVAILABLE, code_pb2.INTERNAL, code_pb2.ABORTED, code_pb2.UNKNOWN}


@dataclass(frozen=True)
class Executed:
    entries: tuple
    worker: str        # the worker's name, when the server reports it
    cached: bool       # answered by the REAPI ActionCache: nothing ran


class Remote:
    """One REAPI endpoint, as the remote executor and as the REAPI remote cache."""

    def __init__(self, server: Server, local: LocalBlobs, logs_dir: Path, *, platform: dict[str, str],
                 queue_timeout: float):
        self.server = server
        self.local = local
        self.logs_dir = logs_dir
        self.platform = platform
        self.queue_timeout = queue_timeout
        self.execution = re_grpc.ExecutionStub(server.channel)
        self.operations = ops_grpc.OperationsStub(server.channel)

    def wire(self, action: RunAction, inputs: list[Resolved], material: bytes) -> tuple[command.Wire, list[Upload]]:
        root, uploads = merkle.input_root(inputs, self.local)
        w = command.build(action, root, material, command.platform_of(action, self.platform))
        uploads.append(Upload(w.action.command_digest, data=w.command_bytes))
        uploads.append(Upload(w.action_digest, data=w.action_bytes))
        return w, uploads

    # -- the remote cache ------------------------------------------------------------------------

    def lookup(self, action: RunAction, w: command.Wire) -> Executed | None:
        """A successful result in the ActionCache whose outputs the CAS still holds, fetched; or None."""
        result = self.server.get_action_result(w.action_digest)
        if result is None or result.exit_code != 0:
            return None
        try:
            return Executed(self._outputs(action, result), result.execution_metadata.worker, True)
        except MissingBlob:
            return None

    def store(self, action: RunAction, w: command.Wire, uploads: list[Upload], entries: tuple, log: bytes) -> None:
        """A result executed here, as a remote executor would have reported it; blobs first, entry last."""
        result, blobs = merkle.result_of(entries, list(action.outs), self.local, command.OUT_PREFIX, log)
        self.server.upload_missing(uploads + blobs)
        self.server.update_action_result(w.action_digest, result)

    # -- remote execution --------------------------------------------------------------------------

    def execute(self, action: RunAction, inputs: list[Resolved], material: bytes) -> Executed:
        w, uploads = self.wire(action, inputs, material)
        hit = self.lookup(action, w)
        if hit is not None:
            return hit
        self.server.upload_missing(uploads)
        skip_cache = False
        last = ""
        for _ in range(ATTEMPTS):
            response = self._run(action, w, skip_cache)
            status = response.status
            if status.code == code_pb2.FAILED_PRECONDITION:  # inputs gone from the CAS: upload again
                last = status.message
                self.server.upload_missing(uploads)
                continue
            if status.code in RETRYABLE:
                last = status.message or code_pb2.Code.Name(status.code)
                continue
            result = response.result
            worker = result.execution_metadata.worker
            self._write_log(action, result)
            if status.code == code_pb2.DEADLINE_EXCEEDED:
                raise self._failure(action, w, "timed out", worker)
            if status.code != code_pb2.OK:
                raise self._failure(action, w, f"failed remotely: {code_pb2.Code.Name(status.code)}: "
                                               f"{status.message}", worker)
            if result.exit_code != 0:
                raise self._failure(action, w, f"exited with code {result.exit_code}", worker)
            try:
                return Executed(self._outputs(action, result), worker, response.cached_result)
            except MissingBlob as e:  # the CAS evicted an output: run it again, not from the cache
                last = f"an output left the CAS ({e})"
                skip_cache = True
        raise ReapiError(f"{action.owner}: {action.mnemonic} did not complete remotely after {ATTEMPTS} "
                         f"attempts; last: {last}")

    def _run(self, action: RunAction, w: command.Wire, skip_cache: bool) -> re_pb2.ExecuteResponse:
        """Execute and follow the operation to its end; a queue that never moves ends in a BuildError."""
        req = re_pb2.ExecuteRequest(instance_name=self.server.instance, action_digest=w.action_digest,
                                    skip_cache_lookup=skip_cache)
        name = ""
        starved = threading.Event()
        # Since when the operation waits for a worker (None while one runs it): a job requeued after
        # its worker died starts waiting anew.
        state = {"waiting_since": time.monotonic(), "call": None}
        lock = threading.Lock()

        def watchdog() -> None:
            while not done.wait(0.2):
                with lock:
                    since = state["waiting_since"]
                    if since is not None and time.monotonic() - since > self.queue_timeout:
                        starved.set()
                        if state["call"] is not None:
                            state["call"].cancel()
                        return

        done = threading.Event()
        threading.Thread(target=watchdog, daemon=True, name="tpbuild-reapi-queue").start()
        try:
            for n in range(ATTEMPTS * 3):
                if starved.is_set():
                    break
                call = (self.execution.Execute(req, metadata=self.server.metadata) if not name else
                        self.execution.WaitExecution(re_pb2.WaitExecutionRequest(name=name),
                                                     metadata=self.server.metadata))
                with lock:
                    state["call"] = call
                try:
                    for op in call:
                        name = op.name
                        meta = re_pb2.ExecuteOperationMetadata()
                        if op.metadata.Unpack(meta):
                            with lock:
                                if meta.stage not in WAITING:
                                    state["waiting_since"] = None
                                elif state["waiting_since"] is None:
                                    state["waiting_since"] = time.monotonic()
                        if op.done:
                            return self._response(op)
                    raise ReapiError("the operation stream ended before the operation did")
                except grpc.RpcError as e:
                    if starved.is_set():
                        break
                    err = rpc_error("Execute" if not name else "WaitExecution", e)
                    if err.code == grpc.StatusCode.NOT_FOUND:
                        name = ""  # the server forgot the operation (restarted): start again
                    elif not err.transient or n + 1 == ATTEMPTS * 3:
                        raise err from None
                except ReapiError:
                    if n + 1 == ATTEMPTS * 3:
                        raise
                time.sleep(min(2.0, 0.1 * 2 ** n))
        finally:
            done.set()
        if name:
            try:
                self.operations.CancelOperation(ops_pb2.CancelOperationRequest(name=name), timeout=10,
                                                metadata=self.server.metadata)
            except grpc.RpcError:
                pass
        plat = command.platform_of(action, self.platform)
        raise BuildError(
            f"{action.owner}: {action.mnemonic}: no remote worker took it within {self.queue_timeout:g}s; "
            f"does any worker offer the platform {plat or '{}'}? (set [remote] queue_timeout to wait longer)")

    @staticmethod
    def _response(op: ops_pb2.Operation) -> re_pb2.ExecuteResponse:
        if op.HasField("error"):
            return re_pb2.ExecuteResponse(status=op.error)
        resp = re_pb2.ExecuteResponse()
        if not op.response.Unpack(resp):
            raise ReapiError(f"operation {op.name} ended without an ExecuteResponse")
        return resp

    # -- results -----------------------------------------------------------------------------------

    def _outputs(self, action: RunAction, result: re_pb2.ActionResult) -> tuple:
        entries = merkle.entries_of(result, self.local, command.OUT_PREFIX, action.outs)
        for out in action.outs:
            if not any(e.path == out or e.path.startswith(out + "/") for e in entries):
                raise BuildError(f"{action.owner}: {action.mnemonic} did not create its declared output {out!r} "
                                 f"(remotely, on {result.execution_metadata.worker or 'an unnamed worker'})")
        return entries

    def local_log(self, action: RunAction) -> bytes:
        """The log of an action that ran here, to store as its result's stdout."""
        try:
            return log_path(self.logs_dir, action).read_bytes()
        except OSError:
            return b""

    def _tool_log(self, action: RunAction) -> Path:
        return log_path(self.logs_dir, action).with_suffix(".tool.log")

    def _write_log(self, action: RunAction, result: re_pb2.ActionResult) -> None:
        """stdout then stderr, where the local executor writes an action's log."""
        parts = []
        for raw, d in ((result.stdout_raw, result.stdout_digest), (result.stderr_raw, result.stderr_digest)):
            try:
                parts.append(raw or (self.server.read_bytes(d) if d.size_bytes else b""))
            except MissingBlob:
                parts.append(b"(the log is no longer in the remote CAS)\n")
        log = log_path(self.logs_dir, action)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_bytes(b"".join(parts))
        for f in result.output_files:
            if f.path == command.TOOL_LOG_FILE:
                try:
                    self._tool_log(action).write_bytes(self.server.read_bytes(f.digest))
                except MissingBlob:
                    pass

    def _failure(self, action: RunAction, w: command.Wire, what: str, worker: str) -> BuildError:
        log = log_path(self.logs_dir, action)
        tool_log = self._tool_log(action)
        try:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        except OSError:
            tail = ""
        return BuildError(
            f"{action.owner}: {action.mnemonic} {what} (remotely, on {worker or 'an unnamed worker'})",
            detail=f"command: {' '.join(w.command.arguments)}\nlog: {log}\n"
                   + (f"tool log: {tool_log}\n" if tool_log.exists() else "") + tail)
