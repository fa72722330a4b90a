"""The execution seam: how one action, its inputs resolved and its key computed, gets a result.

The scheduler decides *what* runs and in which order; everything about *how* sits behind `Runner`,
and the layers wrap each other (Pants' command runners, Bazel's spawn strategies):

    LocalCache( RemoteCache( [remote execution]( LocalExecution ) ) )

- `LocalExecution` runs the action here (`executor.Executor`).
- A remote executor (REAPI, see remote-execution) wraps `LocalExecution` and runs `action.remotable`
  actions elsewhere, handing the rest (and, by its policy, failures) to it.
- `RemoteCache` looks the key up in a shared cache before asking its inner runner, and uploads what
  its inner runner executed.
- `LocalCache` answers from the workspace's last-build record and the local action cache, and records
  every result it did not answer itself.

A local cache hit is decided in one place, `verified`: a result is trusted only when every blob it
names is in the local store and matches its name; otherwise the lookup is a miss and the action runs
again. A remote cache client returns entries only after verifying each blob it fetched by its digest
(`remote.RemoteCache`), so a remote hit needs no second hashing here.

`lookup` is the fast path, called on the scheduler's own thread: local only, no network, no process.
`run` may wait (a subprocess, the network) and is called on a worker thread when `blocking` says so.
"""

from __future__ import annotations

from enum import StrEnum
from collections.abc import Callable, Mapping, Sequence

from .action import Action, OutputEntry, RunAction, Tree, blobs_of, recorded
from .actioncache import ActionCache
from .cas import Cas
from .executor import Executor, Resolved
from .outputs import Last
from .trace import NULL, Trace


class Origin(StrEnum):
    """Where a result came from; the action statuses of the report are these plus failed/skipped."""

    EXECUTED = "executed"
    CACHED = "cached"    # the local action cache or the last-build record
    REMOTE = "remote"    # a remote cache


class Where(StrEnum):
    LOCAL = "local"
    REMOTE = "remote"


class ExecutedBy:
    """Who executed an action: this machine, or a remote executor and (when it says) its worker. Equal by
    value. (This module's records are plain classes, not dataclasses: a dataclass's generated methods
    were compiled on every start, a millisecond for the three.)"""

    __slots__ = ("where", "worker")

    def __init__(self, where: Where, worker: str = ""):
        self.where = where
        self.worker = worker

    def __eq__(self, other) -> bool:
        return other.__class__ is ExecutedBy and (self.where, self.worker) == (other.where, other.worker)

    def __hash__(self) -> int:
        return hash((self.where, self.worker))

    def __repr__(self) -> str:
        return f"ExecutedBy(where={self.where!r}, worker={self.worker!r})"


LOCAL = ExecutedBy(Where.LOCAL)


class Request:
    """One action ready to run: its inputs resolved, its key computed."""

    __slots__ = ("action", "inputs", "key", "material", "started", "stable")

    def __init__(self, action: Action, inputs: tuple[Resolved, ...], key: str, material: bytes,
                 started: Callable[[], None] = lambda: None, stable: Callable[[], bool] = lambda: True):
        self.action = action
        self.inputs = inputs
        self.key = key  # the local key (`action.key_of(material)`)
        self.material = material  # what the key hashes; remote caches name it by its SHA-256 (`action.wire_key_of`)
        # Called by whoever executes, just before the action starts (the console's progress line).
        self.started = started
        # True while every source input still has the stat it was hashed with. An executed result
        # whose sources moved meanwhile belongs to no key: it is used for this build, never stored.
        self.stable = stable


class Result:
    __slots__ = ("entries", "origin", "executed_by", "unstable")

    def __init__(self, entries: tuple[OutputEntry, ...], origin: Origin, executed_by: ExecutedBy | None = None,
                 unstable: bool = False):
        self.entries = entries
        self.origin = origin
        self.executed_by = executed_by  # set when origin is EXECUTED
        self.unstable = unstable  # an input moved while it ran: not to be stored

    @property
    def storable(self) -> bool:
        return not self.unstable


class Runner:
    """What the scheduler runs actions through (the interface, described: `LocalExecution` and the
    wrappers below have these methods; nothing subclasses it, and `typing.Protocol` cost every build the
    import of `typing`)."""

    def lookup(self, req: Request) -> Result | None:
        """A result known without waiting (no network, no process), or None."""

    def run(self, req: Request) -> Result:
        """The result, executing the action if needed; called once `lookup` has answered None.
        Raises TpbuildError (or OSError) on failure."""

    def blocking(self, action: Action) -> bool:
        """Whether `run` may wait on a process or the network (then the scheduler calls it on a worker)."""


class RemoteCacheClient:
    """A shared cache (`remote.RemoteCache`, a REAPI ActionCache+CAS): key material -> entries.
    A lookup returns entries whose blobs are already in `cas`; failures are warnings inside it. (The
    interface, described, as `Runner`.)"""

    def lookup(self, material: bytes, cas: Cas) -> tuple[OutputEntry, ...] | None: ...

    def store(self, material: bytes, entries: tuple[OutputEntry, ...], cas: Cas) -> None: ...


class Wrapper:
    """A runner adding one concern around `inner`; what it does not override goes straight through."""

    def __init__(self, inner: Runner):
        self.inner = inner

    def lookup(self, req: Request) -> Result | None:
        return self.inner.lookup(req)

    def run(self, req: Request) -> Result:
        return self.inner.run(req)

    def blocking(self, action: Action) -> bool:
        return self.inner.blocking(action)


def verified(entries: Sequence[OutputEntry] | None, cas: Cas) -> Sequence[OutputEntry] | None:
    """`entries` if every blob they name is present and intact, else None: the one test of a cache hit.
    (A composed tree names its own: its parts' are their upstreams', checked as theirs in this build.)"""
    if entries is None:
        return None
    for d, exe in blobs_of(entries):
        if not cas.verify(d, exe):
            return None
    return entries


class LocalExecution:
    """Runs the action on this machine. `write` and `tree` run in-process and never block."""

    def __init__(self, executor: Executor):
        self.executor = executor

    @property
    def cas(self) -> Cas:
        """The build's blob store: where a remote executor reads inputs from and puts outputs into."""
        return self.executor.cas

    def lookup(self, req: Request) -> Result | None:
        return None

    def run(self, req: Request) -> Result:
        req.started()
        entries = self.executor.execute(req.action, list(req.inputs))
        return Result(entries, Origin.EXECUTED, LOCAL, unstable=not req.stable())

    def blocking(self, action: Action) -> bool:
        return isinstance(action, RunAction)


class LocalCache(Wrapper):
    """The last-build record (action id -> its last key and entries, which spares reading the action cache on a
    no-op build) and the local action cache. Records every result it did not itself answer."""

    def __init__(self, inner: Runner, ac: ActionCache, cas: Cas, last: Mapping[str, Last],
                 trace: Trace = NULL):
        super().__init__(inner)
        self.ac = ac
        self.cas = cas
        self.last = last
        self.trace = trace

    def lookup(self, req: Request) -> Result | None:
        with self.trace.span("cache lookup", "cache"):
            hit = self.last.get(req.action.id)

            def parts():
                return req.action.parts_of((r.dest, r.digest, r.entries) for r in req.inputs)

            if hit is not None and hit.key == req.key:
                entries = hit.result(parts)
            else:
                stored = self.ac.get(req.key)
                entries = recorded(Tree(stored[0]), stored[1], parts) if stored is not None else None
            entries = verified(entries, self.cas)
        return Result(entries, Origin.CACHED) if entries is not None else self.inner.lookup(req)

    def run(self, req: Request) -> Result:
        result = self.inner.run(req)
        if result.origin is not Origin.CACHED and result.storable:
            with self.trace.span("cache store", "cache"):
                self.ac.put(req.key, result.entries)
        return result


class RemoteCache(Wrapper):
    """A shared cache between this machine and the runner below: looked up before it, fed after it."""

    def __init__(self, inner: Runner, client: RemoteCacheClient, cas: Cas, trace: Trace = NULL):
        super().__init__(inner)
        self.client = client
        self.cas = cas
        self.trace = trace

    def run(self, req: Request) -> Result:
        with self.trace.span("remote cache lookup", "remote"):
            entries = self.client.lookup(req.material, self.cas)
        if entries is not None:
            return Result(entries, Origin.REMOTE)
        result = self.inner.run(req)
        if result.origin is Origin.EXECUTED and result.storable:
            with self.trace.span("remote cache upload", "remote"):
                self.client.store(req.material, result.entries, self.cas)
        return result

    def blocking(self, action: Action) -> bool:
        return True  # a lookup waits on the network


def stack(executor: Executor, *, ac: ActionCache, cas: Cas, last: Mapping[str, Last],
          remote_cache: RemoteCacheClient | None = None,
          remote_executor: Callable[[LocalExecution], Runner] | None = None, trace: Trace = NULL) -> Runner:
    """The runner a build uses, from its options: `remote_executor` wraps local execution (it gets
    the `LocalExecution` to fall back to, and through it the build's blob store and logs directory),
    the remote cache wraps that, the local cache wraps everything. `trace` gets the caches' spans."""
    local = LocalExecution(executor)
    runner: Runner = remote_executor(local) if remote_executor is not None else local
    if remote_cache is not None:
        runner = RemoteCache(runner, remote_cache, cas, trace)
    return LocalCache(runner, ac, cas, last, trace)
