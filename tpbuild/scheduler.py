"""Topological, parallel scheduling with a constructive-trace rebuilder.

An action becomes ready when every action it reads from has finished. Its key is then computed from
the *content* digests of its inputs (early cutoff: an upstream result that comes out byte-identical
leaves downstream keys unchanged), and the request goes to the build's `runner.Runner`, which decides
how it is answered: from a cache, by executing it here, or elsewhere. The scheduler knows nothing of
caches or executors; it asks the runner's fast `lookup` on its own thread and hands the rest to
`run`, on a worker thread when the runner may block.

An input whose stat moves while its action runs (a file saved mid-build) makes the result valid for
this build only (`Request.stable`): it is neither recorded nor uploaded under a key computed from the
older content.
"""

from __future__ import annotations

import os
import stat as statmod
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Callable

from . import action as actionmod
from .action import Action, Artifact, Entry, OutputEntry, Source, input_digest
from .errors import BuildError, TpbuildError
from .executor import Resolved
from .runner import ExecutedBy, Request, Result, Runner
from .statcache import StatCache, signature


class Status(StrEnum):
    """An action's status in a build (and in the report): how its result came, or why there is none."""

    EXECUTED = "executed"
    CACHED = "cached"
    REMOTE = "remote"   # from a remote cache
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def succeeded(self) -> bool:
        return self in (Status.EXECUTED, Status.CACHED, Status.REMOTE)


@dataclass
class Outcome:
    action: Action
    status: Status = Status.SKIPPED
    key: str = ""
    entries: tuple[OutputEntry, ...] = ()
    seconds: float = 0.0
    error: TpbuildError | None = None
    unstable: bool = False  # an input moved while it ran: not recorded
    executed_by: ExecutedBy | None = None  # who ran it, when it was executed

    def settle(self, result: Result) -> None:
        self.status = Status(result.origin.value)
        self.entries = result.entries
        self.executed_by = result.executed_by
        self.unstable = result.unstable


@dataclass
class Hooks:
    """Observers the CLI plugs in; the scheduler does not print."""

    started: Callable[[Action], None] | None = None
    finished: Callable[[Outcome], None] | None = None
    warn: Callable[[str], None] | None = None


@dataclass
class BuildContext:
    root: Path
    statcache: StatCache
    runner: Runner
    salt: str = ""
    hooks: Hooks = field(default_factory=Hooks)
    clock: Callable[[], float] = time.monotonic  # for the outcomes' seconds


class Scheduler:
    def __init__(self, ctx: BuildContext, actions: dict[str, Action], *, jobs: int, keep_going: bool):
        self.ctx = ctx
        self.actions = actions
        self.jobs = max(1, jobs)
        self.keep_going = keep_going
        self.outcomes: dict[str, Outcome] = {a: Outcome(actions[a]) for a in actions}

    def run(self) -> dict[str, Outcome]:
        waiting: dict[str, int] = {}
        dependents: dict[str, list[str]] = {a: [] for a in self.actions}
        ready: deque[str] = deque()
        for aid, a in self.actions.items():
            ups = a.upstream()
            waiting[aid] = len(ups)
            for u in ups:
                dependents[u].append(aid)
            if not ups:
                ready.append(aid)
        running: dict[Future, str] = {}
        stop = False

        def finished(aid: str) -> None:
            nonlocal stop
            if self.outcomes[aid].status is Status.FAILED:
                self._skip_dependents(aid, dependents)
                stop = stop or not self.keep_going
                return
            for d in dependents[aid]:
                waiting[d] -= 1
                if waiting[d] == 0 and self.outcomes[d].status is not Status.FAILED:
                    ready.append(d)

        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="tpbuild") as pool:
            while ready or running:
                # Cache hits are settled here: handing thousands of them to threads costs more than they do.
                while ready and not stop and len(running) < self.jobs * 2:
                    aid = ready.popleft()
                    prepared = self._prepare(aid)
                    if prepared is None:
                        finished(aid)
                    elif not self.ctx.runner.blocking(self.actions[aid]):
                        # In-process actions are a few syscalls driven by Python: run on this thread
                        # they cost less than the hand-off to a worker, and a second thread would only
                        # contend for the GIL (a clean build of 1,000 models took 15% more CPU time
                        # with -j 2 than with -j 1). Workers take what waits on a process or the network.
                        self._execute(aid, *prepared)
                        finished(aid)
                    else:
                        running[pool.submit(self._execute, aid, *prepared)] = aid
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    finished(running.pop(fut))
        return self.outcomes

    def _skip_dependents(self, aid: str, dependents: dict[str, list[str]]) -> None:
        stack = list(dependents[aid])
        while stack:
            d = stack.pop()
            o = self.outcomes[d]
            if o.status is Status.SKIPPED and o.error is None:
                o.error = BuildError(f"not run: {aid} failed")
                stack.extend(dependents[d])

    # -- one action ------------------------------------------------------------------------------

    def _prepare(self, aid: str) -> tuple[Request, float] | None:
        """Resolve inputs, compute the key, ask the runner's fast lookup. None when settled (a hit or
        a failure), else what `_execute` needs."""
        a = self.actions[aid]
        out = self.outcomes[aid]
        t0 = self.ctx.clock()
        try:
            inputs = tuple(self._resolve(dest, inp) for dest, inp in a.inputs)
            material = a.key_material([(r.dest, r.digest) for r in inputs], self.ctx.salt)
            out.key = actionmod.key_of(material)
            req = Request(a, inputs, out.key, material, started=lambda: self._started(a),
                          stable=lambda: not self._inputs_moved(inputs))
            hit = self.ctx.runner.lookup(req)
            if hit is None:
                return req, t0
            out.settle(hit)
        except TpbuildError as e:
            out.status, out.error = Status.FAILED, e
        except OSError as e:
            out.status, out.error = Status.FAILED, BuildError(f"{a.owner}: {a.mnemonic}: {e}")
        self._done(out, t0)
        return None

    def _execute(self, aid: str, req: Request, t0: float) -> None:
        a = self.actions[aid]
        out = self.outcomes[aid]
        try:
            out.settle(self.ctx.runner.run(req))
            if out.unstable and self.ctx.hooks.warn:
                self.ctx.hooks.warn(f"{a.owner}: an input changed while {a.mnemonic} ran; "
                                    "its result is used for this build only and not cached")
        except TpbuildError as e:
            out.status, out.error = Status.FAILED, e
        except OSError as e:
            out.status, out.error = Status.FAILED, BuildError(f"{a.owner}: {a.mnemonic}: {e}")
        self._done(out, t0)

    def _started(self, a: Action) -> None:
        if self.ctx.hooks.started:
            self.ctx.hooks.started(a)

    def _done(self, out: Outcome, t0: float) -> None:
        out.seconds = self.ctx.clock() - t0
        if self.ctx.hooks.finished:
            self.ctx.hooks.finished(out)

    def _resolve(self, dest: str, inp: Source | Artifact) -> Resolved:
        if isinstance(inp, Source):
            full = os.path.join(self.ctx.root, inp.path)
            try:
                d, sig = self.ctx.statcache.digest(inp.path, full)
                exe = bool(sig[3] & statmod.S_IXUSR)  # the mode of the stat the digest belongs to
            except FileNotFoundError:
                raise BuildError(f"source {inp.path} disappeared during the build; run the build again") from None
            entry = Entry.file(inp.path, d, sig[0], exe)
            return Resolved(dest, inp, input_digest((entry,), whole_tree=False), full_path=full, executable=exe,
                            entries=(entry,))
        up = self.outcomes[inp.action]
        if not inp.path:
            return Resolved(dest, inp, input_digest(up.entries, whole_tree=True), entries=up.entries)
        for e in up.entries:
            if e.path == inp.path:
                return Resolved(dest, inp, input_digest((e,), whole_tree=False), entries=(e,))
        raise BuildError(f"{inp.action} has no output {inp.path!r}")

    def _inputs_moved(self, inputs: tuple[Resolved, ...]) -> bool:
        for r in inputs:
            if isinstance(r.input, Source):
                try:
                    st = os.stat(r.full_path)
                except FileNotFoundError:
                    return True
                hit = self.ctx.statcache.peek(r.input.path)
                if hit is None or signature(st) != hit:
                    return True
        return False
