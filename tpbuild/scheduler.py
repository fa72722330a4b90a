"""Topological, parallel scheduling with a constructive-trace rebuilder.

An action becomes ready when every action it reads from has finished. Its key is then computed from
the *content* digests of its inputs (early cutoff: an upstream result that comes out byte-identical
leaves downstream keys unchanged), and the result is looked up before anything runs:

1. the workspace's last-build record (`BuildState`: action id -> key, entries), which saves reading
   the action cache on a no-op build;
2. the local action cache;
3. `remote` (an optional remote cache, same interface as the local lookups), on a worker thread;
and only on a miss is the action executed. Every blob a result names is verified before the result is
trusted; a damaged one makes the lookup a miss and the action runs again.

An input whose stat moves while its action runs (a file saved mid-build) makes the result valid for
this build only: it is neither recorded nor uploaded under a key computed from the older content.
"""

from __future__ import annotations

import os
import stat as statmod
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from . import action as actionmod
from .action import Action, Artifact, Entry, Source
from .actioncache import ActionCache
from .cas import Cas
from .errors import BuildError, TpbuildError
from .executor import Executor, Resolved
from .statcache import StatCache, signature


@dataclass
class Outcome:
    action: Action
    status: str = "skipped"  # executed | cached | remote | failed | skipped
    key: str = ""
    entries: tuple[Entry, ...] = ()
    seconds: float = 0.0
    error: TpbuildError | None = None
    unstable: bool = False  # an input moved while it ran: not recorded


@dataclass
class Hooks:
    """Observers the CLI plugs in; the scheduler does not print."""

    started: object = None   # callable(Action)
    finished: object = None  # callable(Outcome)
    warn: object = None      # callable(str)


@dataclass
class BuildContext:
    root: Path
    cas: Cas
    ac: ActionCache
    statcache: StatCache
    executor: Executor
    state: dict          # BuildState.actions: action id -> (key, entries)
    salt: str = ""
    remote: object = None  # an object with lookup(key_material, cas) and store(key_material, entries, cas)
    hooks: Hooks = field(default_factory=Hooks)


class Scheduler:
    def __init__(self, ctx: BuildContext, actions: dict[str, Action], *, jobs: int, keep_going: bool):
        self.ctx = ctx
        self.actions = actions
        self.jobs = max(1, jobs)
        self.keep_going = keep_going
        self.outcomes: dict[str, Outcome] = {a: Outcome(actions[a]) for a in actions}
        self._lock = threading.Lock()

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
            if self.outcomes[aid].status == "failed":
                self._skip_dependents(aid, dependents)
                stop = stop or not self.keep_going
                return
            for d in dependents[aid]:
                waiting[d] -= 1
                if waiting[d] == 0 and self.outcomes[d].status != "failed":
                    ready.append(d)

        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="tpbuild") as pool:
            while ready or running:
                # Cache hits are settled here: handing thousands of them to threads costs more than they do.
                while ready and not stop and len(running) < self.jobs * 2:
                    aid = ready.popleft()
                    prepared = self._prepare(aid)
                    if prepared is None:
                        finished(aid)
                    elif self._inline(aid):
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

    def _inline(self, aid: str) -> bool:
        """`write` and `tree` actions are a few syscalls driven by Python: run on this thread they cost
        less than the hand-off to a worker, and a second thread would only contend for the GIL (a
        clean build of 1,000 models took 15% more CPU time with -j 2 than with -j 1). Workers run the
        `run` actions, which wait on a subprocess. A remote cache lookup waits on the network, so with
        one configured every miss goes to a worker."""
        return self.ctx.remote is None and self.actions[aid].kind in ("write", "tree")

    def _skip_dependents(self, aid: str, dependents: dict[str, list[str]]) -> None:
        stack = list(dependents[aid])
        while stack:
            d = stack.pop()
            o = self.outcomes[d]
            if o.status == "skipped" and o.error is None:
                o.error = BuildError(f"not run: {aid} failed")
                stack.extend(dependents[d])

    # -- one action ------------------------------------------------------------------------------

    def _prepare(self, aid: str):
        """Resolve inputs, compute the key, look the result up. None when settled (a hit or a failure),
        else what `_execute` needs."""
        a = self.actions[aid]
        out = self.outcomes[aid]
        t0 = time.monotonic()
        try:
            inputs = [self._resolve(dest, inp) for dest, inp in a.inputs]
            material = a.key_material([(r.dest, r.digest) for r in inputs], self.ctx.salt)
            out.key = actionmod.key_of(material)
            entries = self._lookup(aid, out.key)
            if entries is not None:
                out.status, out.entries = "cached", entries
            else:
                return inputs, material, t0
        except TpbuildError as e:
            out.status, out.error = "failed", e
        except OSError as e:
            out.status, out.error = "failed", BuildError(f"{a.owner}: {a.mnemonic}: {e}")
        self._done(out, t0)
        return None

    def _execute(self, aid: str, inputs: list[Resolved], material: bytes, t0: float) -> None:
        a = self.actions[aid]
        out = self.outcomes[aid]
        try:
            # Remote lookups run here, on a worker, not with the local hits: they wait on the network.
            if self.ctx.remote is not None and (hit := self.ctx.remote.lookup(material, self.ctx.cas)) is not None:
                out.status, out.entries = "remote", hit
                self.ctx.ac.put(out.key, hit)
                self._done(out, t0)
                return
            if self.ctx.hooks.started:
                self.ctx.hooks.started(a)
            out.entries = self.ctx.executor.execute(a, inputs)
            out.status = "executed"
            if self._inputs_moved(inputs):
                out.unstable = True
                if self.ctx.hooks.warn:
                    self.ctx.hooks.warn(f"{a.owner}: an input changed while {a.mnemonic} ran; "
                                        "its result is used for this build only and not cached")
            else:
                self.ctx.ac.put(out.key, out.entries)
                if self.ctx.remote is not None:
                    self.ctx.remote.store(material, out.entries, self.ctx.cas)
        except TpbuildError as e:
            out.status, out.error = "failed", e
        except OSError as e:
            out.status, out.error = "failed", BuildError(f"{a.owner}: {a.mnemonic}: {e}")
        self._done(out, t0)

    def _done(self, out: Outcome, t0: float) -> None:
        out.seconds = time.monotonic() - t0
        if self.ctx.hooks.finished:
            self.ctx.hooks.finished(out)

    def _resolve(self, dest: str, inp: Source | Artifact) -> Resolved:
        if isinstance(inp, Source):
            full = os.path.join(self.ctx.root, inp.path)
            try:
                d, sig = self.ctx.statcache.digest(inp.path, full)
                exe = bool(os.stat(full).st_mode & statmod.S_IXUSR)
            except FileNotFoundError:
                raise BuildError(f"source {inp.path} disappeared during the build; run the build again") from None
            return Resolved(dest, inp, f"{'x' if exe else 'f'}{d}", full_path=full, executable=exe,
                            entries=(Entry(inp.path, "x" if exe else "f", d, sig[0]),))
        up = self.outcomes[inp.action]
        if not inp.path:
            return Resolved(dest, inp, actionmod.tree_digest(up.entries), entries=up.entries)
        for e in up.entries:
            if e.path == inp.path:
                return Resolved(dest, inp, f"{e.kind}{e.digest}", entries=(e,))
        raise BuildError(f"{inp.action} has no output {inp.path!r}")

    def _lookup(self, aid: str, key: str) -> tuple[Entry, ...] | None:
        hit = self.ctx.state.get(aid)
        entries = hit[1] if hit is not None and hit[0] == key else self.ctx.ac.get(key)
        if entries is None:
            return None
        cas = self.ctx.cas
        for e in entries:
            if e.kind != "l" and not cas.verify(e.digest, e.kind == "x"):
                return None
        return entries

    def _inputs_moved(self, inputs: list[Resolved]) -> bool:
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
