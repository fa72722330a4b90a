"""Topological, parallel scheduling with a constructive-trace rebuilder.

An action becomes ready when every action it reads from has finished. Its key is then computed from
the *content* digests of its inputs (early cutoff: an upstream result that comes out byte-identical
leaves downstream keys unchanged), and the request goes to the build's `runner.Runner`, which decides
how it is answered: from a cache, by executing it here, or elsewhere. The scheduler knows nothing of
caches or executors; it asks the runner's fast `lookup` on its own thread and hands the rest to
`run`, on a worker thread when the runner may block.

Ready actions start in the order of their critical path (the longest chain of past durations from
them to the end of the graph, `critical.py`), as ninja's ready queue does: what waits on a process
goes to a free worker first, and in-process actions run on the scheduler's thread in the meantime.

An input whose stat moves while its action runs (a file saved mid-build) makes the result valid for
this build only (`Request.stable`): it is neither recorded nor uploaded under a key computed from the
older content.
"""

from __future__ import annotations

import os
import stat as statmod
import time
from enum import StrEnum
from pathlib import Path
from collections.abc import Callable, Collection, Mapping, Sequence

from . import action as actionmod, critical
from .action import Action, Artifact, Entry, OutputEntry, Source, Tree, blobs_of, entry_of, input_digest
from .errors import BuildError, TpbuildError
from .executor import Resolved
from .runner import ExecutedBy, Request, Result, Runner
from .statcache import StatCache, signature
from .trace import NULL, Trace


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


class Outcome:
    """An action's result in this build. Its fields start as the class's defaults, set on the instance
    as the build learns them (a plain class, not a dataclass: its generated methods were compiled on
    every start, and nothing compares or prints outcomes)."""

    status = Status.SKIPPED
    key = ""
    entries: Sequence[OutputEntry] = ()  # a tuple, or a `Tree` (read as far as its readers read it)
    seconds = 0.0
    error: TpbuildError | None = None
    unstable = False  # an input moved while it ran: not recorded
    executed_by: ExecutedBy | None = None  # who ran it, when it was executed
    input_digests: list[tuple[str, str]] | tuple = ()  # (dest, digest) of each input, as its key has them
    why = ""  # why it ran (or its key moved), set after the build by `explain`

    def __init__(self, action: Action | None, status: Status = Status.SKIPPED, key: str = ""):
        self.action = action
        self.status = status
        self.key = key

    def blobs(self) -> list[tuple[str, bool]]:
        """(digest, executable) of every blob its result names (`action.blobs_of`)."""
        return list(blobs_of(self.entries))

    def tree(self) -> str:
        """How its whole result enters a reader's key (`action.input_digest` of a whole tree)."""
        return input_digest(self.entries, whole_tree=True)

    def entry(self, path: str) -> OutputEntry | None:
        """The entry of its result at `path`, None if it has none."""
        return entry_of(self.entries, path)

    def settle(self, result: Result) -> None:
        self.status = Status(result.origin.value)
        self.entries = result.entries
        self.executed_by = result.executed_by
        self.unstable = result.unstable


class Settled(Outcome):
    """An action settled before the run from the build state (`delta`): its last result under its
    unchanged key, a `Tree` whose entries are built from the record only when something reads them,
    and the action decoded from its declaration (`analysiscache.Declared`) only when something asks
    for it. The other fields are the class's defaults (no input digests: nothing explains a settled
    action): a no-op build at 10,000 models makes 20,000 of these."""

    status = Status.CACHED

    def __init__(self, declared, key: str, result: Tree):
        self.declared = declared
        self.key = key
        self.entries = result

    @property
    def action(self) -> Action:
        return self.declared.action

    @action.setter
    def action(self, value: None) -> None:
        """Outcome's constructor: the action is the declaration's."""


class Hooks:
    """Observers the CLI plugs in; the scheduler does not print."""

    def __init__(self, started: Callable[[Action], None] | None = None,
                 finished: Callable[[Outcome], None] | None = None, warn: Callable[[str], None] | None = None,
                 settled: Callable[[Collection[Outcome]], None] | None = None):
        """`settled`: the outcomes settled before the run (`Settled`), all at once, instead of one call of
        `finished` each (a no-op build at 10,000 models has 20,000); without it, `finished` gets them."""
        self.started = started
        self.finished = finished
        self.warn = warn
        self.settled = settled


class BuildContext:
    def __init__(self, root: Path, statcache: StatCache, runner: Runner, salt: str = "", hooks: Hooks | None = None,
                 clock: Callable[[], float] = time.monotonic, trace: Trace = NULL):
        self.root = root
        self.statcache = statcache
        self.runner = runner
        self.salt = salt
        self.hooks = hooks if hooks is not None else Hooks()
        self.clock = clock  # for the outcomes' seconds
        self.trace = trace  # every action's span, on the lane of the thread that settled it


class _Workers:
    """The build's thread pool, made when the first blocking action is handed to it: a build whose
    actions all run on the scheduler's thread (an edit of a model's sources) needs none, nor
    `concurrent.futures` and the `logging` it imports (4 ms of a 0.19 s edit at 1,000 models).
    Leaving the `with` waits for the workers, as ThreadPoolExecutor's own does."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self._pool = None

    def submit(self, fn, *args):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="tpbuild")
        return self._pool.submit(fn, *args)

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class Scheduler:
    def __init__(self, ctx: BuildContext, actions: dict[str, Action], *, jobs: int, keep_going: bool,
                 priority: Mapping[str, float] | None = None, settled: Mapping[str, Outcome] | None = None,
                 declared: Mapping | None = None, walk: tuple[list[str], dict[str, list[str]]] | None = None):
        """`settled`: outcomes known before the run (`delta.settle`): done, never prepared. `declared`:
        the actions as declared (`analysiscache.Declared`), whose edges the run walks without decoding
        the settled ones. `walk`: their `critical.topological` walk, when the caller made it."""
        self.ctx = ctx
        self.actions = actions
        self.declared = declared if declared is not None else actions
        self.jobs = max(1, jobs)
        self.keep_going = keep_going
        self.priority = priority or {}  # action id -> its critical path by past durations (critical.py)
        self.settled = settled = settled or {}
        self.walk = walk
        ids = self.declared
        if list(settled) == list(ids):  # every one settled, in the declared order (a no-op's): a copy, in C
            self.outcomes: dict[str, Outcome] = dict(settled)
        elif settled.keys() == ids.keys():  # every one settled, in another order: in C too, a look-up each
            self.outcomes = dict(zip(ids, map(settled.__getitem__, ids)))
        else:
            self.outcomes = {a: settled.get(a) or Outcome(actions[a]) for a in actions}

    def run(self) -> dict[str, Outcome]:
        if self.settled.keys() == self.outcomes.keys():  # nothing to run (a no-op): no graph to walk
            self._report_settled()
            return self.outcomes
        import heapq  # here, as the queues below: a no-op build has none (2.6 M instructions to import)
        from queue import SimpleQueue

        if self.walk is not None:
            dependents = self.walk[1]
            waiting = critical.waiting(dependents)
        else:
            waiting, dependents = critical.edges(self.declared)
        for aid in self.settled:
            for d in dependents[aid]:
                waiting[d] -= 1
        self._report_settled()
        # Two ready queues, each a heap by critical path (`critical.priorities`), then by the order
        # actions were declared: what waits on a process or the network (`blocking`) goes to a worker
        # as soon as one is free, so processes overlap fully; the rest runs on this thread meanwhile.
        ready: dict[bool, list[tuple[float, int, str]]] = {True: [], False: []}
        seq = {aid: i for i, aid in enumerate(self.actions)}

        def push(aid: str) -> None:
            heapq.heappush(ready[self.ctx.runner.blocking(self.actions[aid])],
                           (-self.priority.get(aid, 0.0), seq[aid], aid))

        for aid, n in waiting.items():
            if n == 0 and aid not in self.settled:
                push(aid)
        # Workers report here; a worker is handed an action only when it is free (never a backlog),
        # so the highest priority decides at the last moment and an action's span is its own.
        reported: SimpleQueue[str] = SimpleQueue()
        running = 0
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
                    push(d)

        def work(aid: str, req: Request, t0: float) -> None:
            try:
                self._execute(aid, req, t0)
            finally:
                reported.put(aid)

        with _Workers(self.jobs) as pool:
            while True:
                while not reported.empty():
                    running -= 1
                    finished(reported.get())
                if not stop and ready[True] and running < self.jobs:
                    aid = heapq.heappop(ready[True])[2]
                    prepared = self._prepare(aid)  # cache hits are settled here, never handed to a thread
                    if prepared is None:
                        finished(aid)
                    else:
                        running += 1
                        pool.submit(work, aid, *prepared)
                elif not stop and ready[False]:
                    # In-process actions are a few syscalls driven by Python: run on this thread
                    # they cost less than the hand-off to a worker, and a second thread would only
                    # contend for the GIL (a clean build of 1,000 models took 15% more CPU time
                    # with -j 2 than with -j 1).
                    aid = heapq.heappop(ready[False])[2]
                    prepared = self._prepare(aid)
                    if prepared is not None:
                        self._execute(aid, *prepared)
                    finished(aid)
                elif running:
                    running -= 1
                    finished(reported.get())
                else:
                    break
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
            out.input_digests = [(r.dest, r.digest) for r in inputs]
            material = a.key_material(out.input_digests, self.ctx.salt)
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

    def _report_settled(self) -> None:
        """Report the outcomes settled before the run as done: to `Hooks.settled` at once, or each as
        finished (`_done`) when the hooks take them only so or the trace shows each one's span."""
        hooks = self.ctx.hooks
        if hooks.settled is not None and not self.ctx.trace.enabled:
            hooks.settled(self.settled.values())
            return
        clock = self.ctx.clock
        for o in self.settled.values():
            self._done(o, clock())

    def _started(self, a: Action) -> None:
        if self.ctx.hooks.started:
            self.ctx.hooks.started(a)

    def _done(self, out: Outcome, t0: float) -> None:
        end = self.ctx.clock()
        out.seconds = end - t0
        if self.ctx.trace.enabled:
            if isinstance(out, Settled):  # named from its declaration, not decoded (20,000 in a no-op at 10,000 models)
                aid, mnemonic = out.declared.id, out.declared.mnemonic
                owner = aid.partition("%")[0]  # an action's id is its target's label, "%" and more (`plugin`)
            else:
                a = out.action
                aid, mnemonic, owner = a.id, a.mnemonic, str(a.owner)
            self.ctx.trace.complete(f"{mnemonic} {owner}", "action", t0, end,
                                    {"id": aid, "target": owner, "mnemonic": mnemonic,
                                     "status": out.status.value, "seconds": round(out.seconds, 4), "key": out.key})
        if self.ctx.hooks.finished:
            self.ctx.hooks.finished(out)

    def _resolve(self, dest: str, inp: Source | Artifact) -> Resolved:
        if isinstance(inp, Source):
            try:
                entry, full = source_entry(self.ctx.statcache, self.ctx.root, inp.path)
            except FileNotFoundError:
                raise BuildError(f"source {inp.path} disappeared during the build; run the build again") from None
            return Resolved(dest, inp, input_digest((entry,), whole_tree=False), full_path=full,
                            executable=entry.executable, entries=(entry,))
        up = self.outcomes[inp.action]
        if not inp.path:
            tree = up.entries  # a `Tree` knows its digest: no call through `Outcome.tree` (a repository has 10,000)
            return Resolved(dest, inp, tree.digest if isinstance(tree, Tree) else up.tree(), entries=tree)
        e = up.entry(inp.path)
        if e is None:
            raise BuildError(f"{inp.action} has no output {inp.path!r}")
        return Resolved(dest, inp, input_digest((e,), whole_tree=False), entries=(e,))

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


def source_entry(statcache: StatCache, root: Path, path: str) -> tuple[Entry, str]:
    """A source input as its action's key takes it (content digest through the stat memo, size, and
    the mode of the stat the digest belongs to), and its full path. Raises OSError when it is gone."""
    full = os.path.join(root, path)
    d, sig = statcache.digest(path, full)
    return Entry.file(path, d, sig[0], bool(sig[3] & statmod.S_IXUSR)), full
