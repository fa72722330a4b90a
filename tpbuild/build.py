"""One build, end to end: analyse, schedule, materialize, remember.

This module wires the layers together for a command (the CLI's `build`, and later `test`) and owns
the per-workspace lock: two tpbuild processes in one workspace take turns, because they would write
the same `tpbuild-out/` paths. Builds of different workspaces sharing one cache run concurrently; the
cache itself is safe for that.

A build starts by sweeping what dead builds left in the temp directories (`atomic.sweep`: only
directories whose owner's lock is free, so a concurrent build's work is untouched). A state or memo
that cannot be saved (a full disk) is a warning: the next build re-checks what it would have known.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from enum import StrEnum
from operator import attrgetter, itemgetter
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence

from . import atomic, critical, delta, explain, outputs, placedmemo, placement, prefetch
from .action import Entry, OutputEntry, Tree
from .actioncache import ActionCache
from .analysis import Analysis
from .cas import Cas
from .errors import UserError
from .executor import Executor
from .runner import LocalExecution, RemoteCacheClient, Runner, stack
from .label import Label
from .scheduler import BuildContext, Hooks, Outcome, Scheduler, Settled, Status
from .statcache import StatCache
from .layout import RACY_WINDOW_NS, STATE_DIR, stat_sig
from .trace import NULL, Trace
from .workspace import OUT_DIR, Workspace, memo_dir, temp_dirs


class Options:
    """How to build: the command line's choices (plain classes, not dataclasses, for the records of this
    module: a dataclass's generated methods were compiled on every start, nothing compares these)."""

    def __init__(self, cache_dir: Path, jobs: int = os.cpu_count() or 1, keep_going: bool = False,
                 remote: RemoteCacheClient | None = None, remote_executor: RemoteExecutor | None = None,
                 max_size: int | None = None, prune: bool = False, trace: Trace = NULL,
                 proven: outputs.Proof | None = None, unchanged: Callable[[], bool] | None = None):
        self.cache_dir = cache_dir
        self.jobs = jobs
        self.keep_going = keep_going
        self.remote = remote  # a remote.RemoteCache, or a REAPI one
        # A REAPI service (tpbuild.reapi.service.Service): remote execution, or its ActionCache as a remote
        # cache; its runner wraps local execution (handing it what stays local). See runner.stack.
        self.remote_executor = remote_executor
        self.max_size = max_size  # bytes; the local cache is trimmed to it after a build that added to it
        self.prune = prune  # the build covers every target (`//...`): remove outputs of targets that are gone
        self.trace = trace  # --profile: the phases, every action and the caches' work, as trace spans
        # A delta build's proof of the placed trees it knows intact, from the stamp's check
        # (`incremental.py`): those it does not know are checked.
        self.proven = proven
        # A delta build's test, under the workspace lock, that no other build ran since the stamp's check
        # (`noop.witness`); false: delta.Unsettled before anything is done, and the ordinary path builds.
        self.unchanged = unchanged
        # The ordinary path's helper process, started before analysis (`prefetch.ahead`), if any.
        self.prefetched: prefetch.Prefetch | None = None


class RemoteExecutor:
    """A remote executor (`reapi.service`): the interface, described (as `runner.Runner`)."""

    def wrap(self, local: LocalExecution, cache_dir: Path, warn: Callable[[str], None]) -> Runner: ...

    def stats(self) -> dict: ...

    def close(self) -> None: ...


class TargetStatus(StrEnum):
    BUILT = "built"
    FAILED = "failed"
    SKIPPED = "skipped"


class TargetResult:
    __slots__ = ("status", "outputs")

    def __init__(self, status: TargetStatus, outputs: list[str] | None = None):
        self.status = status
        self.outputs = outputs if outputs is not None else []


class BuildResult:
    def __init__(self, analysis: Analysis, outcomes: dict[str, Outcome], targets: dict[Label, TargetResult],
                 seconds: float, warnings: list[str], cache: dict, placed: Mapping, execution: dict,
                 statcache: StatCache | None, files: dict, blobs: tuple | None = None,
                 verified: Mapping | None = None, sources: list[str] | None = None, placed_memo=None):
        self.analysis = analysis
        self.outcomes = outcomes
        self.targets = targets
        self.seconds = seconds
        self.warnings = warnings
        self.cache = cache  # "remote": its stats, "evicted": what eviction removed
        self.placed = placed  # outputs.Placed: what tpbuild-out holds, file by file
        # What the build had to look at: actions "settled" from the build state before the run (`delta`),
        # actions "keyed" by the scheduler, outputs "placed" (written into tpbuild-out), and of those,
        # "placed_parts": the parts of composed outputs written (a repository's changed models).
        self.execution = execution
        # The stat memo as the build saved it: the stats its digests belong to (the no-op stamp reads them).
        self.statcache = statcache
        # How the build looked at the workspace's files (observed.Observed.counters): package discovery,
        # and the stats the no-op stamp's check handed over against those taken again.
        self.files = files
        # When every result was settled with the settle memo's blobs (`delta.Premise`): those blobs, each
        # (digest, executable) once in order, and their `cas.Cas.names`, which the no-op stamp records
        # rather than gathering them again from 20,000 results (10,000 models); and the stats the memo
        # records them found whole at and their text (`Premise.stats`, `Premise.text`), or None. None otherwise.
        self.blobs = blobs
        # The blobs the build found whole and the stat each was found at (`cas.Cas.verified`), which the
        # no-op stamp records them at without looking them up in the stat memo (`StatCache.proven`).
        self.verified = verified if verified is not None else {}
        # The sources the actions read, each once in the order they read them, as settling found them
        # (`delta.Premise.paths`), which the no-op stamp records; None: not known (a delta build).
        self.sources = sources
        # The ordinary path's proof of its placed trees from the memo of the last stamp's (`placedmemo.PlacedMemo`),
        # which the no-op stamp takes its placed groups from when it held, else records them in; None: not
        # that path (a delta build), or the store and tpbuild-out on different devices.
        self.placed_memo = placed_memo

    @property
    def success(self) -> bool:
        statuses = list(map(attrgetter("status"), self.targets.values()))  # in C: asked 4 times a build
        return statuses.count(TargetStatus.BUILT) == len(statuses)

    def errors(self) -> list:
        return [o for o in self.outcomes.values() if o.status is Status.FAILED]


@contextmanager
def workspace_lock(ws: Workspace, on_wait):
    state_dir = ws.root / STATE_DIR
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait("another tpbuild is running in this workspace; waiting for it to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield f.fileno()  # a helper process given this descriptor holds the lock with the build


def run(ws: Workspace, analysis: Analysis, opts: Options, hooks: Hooks,
        boundary: set[str] | None = None) -> BuildResult:
    """`boundary`: for a delta build (`incremental.py`), of part of the graph, the actions that part
    reads from, settled as recorded (`delta.settle`); raises delta.Unsettled when one has no record,
    before anything is saved."""
    t0 = time.monotonic()
    warnings: list[str] = []
    user_warn = hooks.warn

    def warn(msg: str) -> None:
        warnings.append(msg)
        if user_warn:
            user_warn(msg)

    hooks.warn = warn
    for w in analysis.warnings:
        warn(w)
    if opts.remote is not None:
        opts.remote.bind(warn)
    placed_at = _placed_at(analysis)
    _check_overlaps(analysis.order, placed_at[1])
    cache_memo = analysis.graph.cache
    for w in getattr(cache_memo, "warnings", ()):
        warn(w)
    trace = opts.trace
    with workspace_lock(ws, warn) as lock_fd:
        if opts.unchanged is not None and not opts.unchanged():
            raise delta.Unsettled("another build ran since the stamp's check")
        state_dir = ws.root / STATE_DIR
        memo = memo_dir(opts.cache_dir, ws.root)
        with trace.span("load state", "phase"):
            for tmp in temp_dirs(opts.cache_dir, ws.root):
                atomic.sweep(tmp)
            state = outputs.BuildState.load(state_dir / "state", outputs.cache_id(opts.cache_dir))
            # the ordinary path's blobs and its check of tpbuild-out: stat'ed meanwhile, by a helper
            prefetched = prefetch.at_lock(ws.root, opts.prefetched, ws.observed, boundary is None and opts.proven is None
                                          and len(state.outputs) >= prefetch.WORTH)
            statcache = StatCache(memo / "statcache", observed=ws.observed, eager=boundary is None)
            cas = Cas(opts.cache_dir, statcache)
            ac = ActionCache(opts.cache_dir)
            premise = delta.Premise(state_dir / "settled", str(cas.root)) if boundary is None else None
        rex = opts.remote_executor
        runner = stack(Executor(ws.root, cas, state_dir / "logs"), ac=ac, cas=cas, last=state.actions,
                       remote_cache=opts.remote,
                       remote_executor=(lambda local: rex.wrap(local, opts.cache_dir, warn)) if rex else None,
                       trace=trace)
        ctx = BuildContext(root=ws.root, statcache=statcache, runner=runner, salt=ws.cache.salt, hooks=hooks,
                           trace=trace)
        with trace.span("settle unchanged", "phase"):
            settled = delta.settle(analysis.declared, state, statcache, cas, ws.root, ctx.salt, boundary or frozenset(),
                                   premise)
        # The graph's walk, the ready queue's order and so the durations matter only if something is
        # left for the scheduler: a no-op neither reads nor writes the durations memo (the records of
        # actions that are gone are dropped by the next build that runs one, `Durations.save`).
        if len(settled) < len(analysis.declared):
            durations = critical.Durations(memo / "durations", memo / "tmp", eager=boundary is None)
            walk = critical.topological(analysis.declared)
            worked, worked_walk = _worked(analysis.declared, walk, boundary)
            priority = critical.priorities(worked, durations, worked_walk)
        else:
            durations, walk, priority = None, None, {}
        sched = Scheduler(ctx, analysis.actions, jobs=opts.jobs, keep_going=opts.keep_going, priority=priority,
                          settled=settled, declared=analysis.declared, walk=walk)
        records = explain.Records(state_dir / "why", state_dir / "tmp")
        keep = set(analysis.declared) if opts.prune else None  # a build of every target drops the others' records
        lane = _lane(ws, analysis, opts, state, hooks, lock_fd)
        try:
            with trace.span("actions", "phase"):
                outcomes = sched.run()
            # Before the state remembers this build: the causes are found against the last one.
            explain.annotate(outcomes, state.actions, records, explain.Recorder(ctx.salt),
                             quarantined=(d for d, _ in cas.quarantined),
                             remote=opts.remote is not None or rex is not None, settled=settled)
        except BaseException:
            if lane is not None:
                lane.close()  # what it placed is not recorded: the next build places it again
            raise
        finally:
            with trace.span("save state", "phase"):
                for aid, o in sched.outcomes.items():
                    if aid not in settled and o.status.succeeded and not o.unstable:  # settled: recorded as is
                        state.remember(aid, o.key, o.entries)
                _report_quarantined(cas, state, warn)
                _saved(records.save(keep), warn)
                _saved(statcache.save(), warn)
                _saved(state.save(), warn)
                if premise is not None:
                    _saved(premise.save(), warn)
                if durations is not None:
                    _saved(durations.save(((a, o.seconds) for a, o in sched.outcomes.items()
                                           if o.status is Status.EXECUTED), keep), warn)
        if opts.prune:
            live = set(filter(None, placed_at[1]))
            if outputs.prune(state, ws.root, live) and prefetched is not None:
                prefetched.close()  # it wrote into tpbuild-out: the check stats its directories now
            for aid in set(state.actions).difference(analysis.declared):  # in C, unlike a Mapping's keys() - ...
                del state.actions[aid]
        ws.observed.forget()  # the memos and the actions are done with the stamp's stats (Observed.forget)
        # Every result settled: the blobs `settle` checked are theirs.
        named = (premise.blobs, premise.names, premise.stats, premise.text) if premise is not None and \
            premise.now is not None and len(settled) == len(outcomes) else None
        with trace.span("place outputs", "phase"):
            proven = opts.proven or _placed_memo(ws.root, state_dir, cas, state, prefetched, named)
            targets, placed, placed_parts = _materialize(ws, analysis, placed_at, outcomes, state, cas, warn, proven,
                                                         lane)
            if lane is not None:
                lane.close()  # every target failed: nothing asked for what it placed
        atomic.crash_point("placed")
        _saved(state.save(), warn)  # a no-op build changes nothing and writes nothing
    cache: dict = {}
    if opts.remote is not None:
        cache["remote"] = opts.remote.stats()
    if opts.remote_executor is not None:
        cache["reapi"] = opts.remote_executor.stats()
    if opts.max_size is not None and any(o.status in (Status.EXECUTED, Status.REMOTE) for o in outcomes.values()):
        cache["evicted"] = _evict(opts, outcomes)
    execution = {"path": "ordinary" if boundary is None else "delta",
                 "settled": len(settled), "keyed": len(outcomes) - len(settled), "placed": placed,
                 "placed_parts": placed_parts}
    if lane is not None:
        execution["placed_by_lane"] = lane.placed
    kept = proven if proven.__class__ is placedmemo.PlacedMemo else None
    execution["placed_memo"] = kept.held if kept is not None else 0
    return BuildResult(analysis, outcomes, targets, time.monotonic() - t0, warnings, cache, outputs.Placed(state),
                       execution, statcache, ws.observed.counters(), named, cas.verified,
                       premise.paths if premise is not None else None, kept)


def _worked(declared, walk, boundary: set[str] | None):
    """The actions a build may run and their walk: for a delta build, without its boundary (settled as
    recorded, and upstream of every action it works, so no priority of those depends on them)."""
    if not boundary:
        return declared, walk
    order, dependents = walk
    return {a: d for a, d in declared.items() if a not in boundary}, ([a for a in order if a not in boundary],
                                                                      dependents)


def _saved(error: str | None, warn) -> None:
    if error is not None:
        warn(error)


def _report_quarantined(cas: Cas, state: outputs.BuildState, warn) -> None:
    """Name each damaged blob the build moved aside, with the outputs that were links of it."""
    for d, where in cas.quarantined:
        names = sorted(f"{rel}/{path}" for rel, rec in state.outputs.items()
                       for path, (_kind, bd, _sig) in rec[1].items() if bd == d)
        held = f" (placed as {', '.join(names[:3])}{' ...' if len(names) > 3 else ''})" if names else ""
        warn(f"cache blob {d}{held} no longer matched its content (edited in place through a hardlinked "
             f"output, or a disk fault); moved to {where} and rebuilt")


def _evict(opts: Options, outcomes: dict[str, Outcome]) -> dict:
    from . import eviction

    keys = {o.key for o in outcomes.values() if o.key}
    blobs = {b for o in outcomes.values() for b in o.blobs()}
    return vars(eviction.evict(opts.cache_dir, opts.max_size, keys, blobs))


def _lane(ws: Workspace, analysis: Analysis, opts: Options, state: outputs.BuildState, hooks: Hooks,
          lock_fd: int) -> placement.Lane | None:
    """With `-j` above 1 and no output recorded (a first build, or tpbuild-out deleted: every tree is
    assembled whole), a placement lane that gets each target's tree once its actions have succeeded
    (`placement`). Never with outputs recorded: no tree to check or update file by file, no `prune`."""
    if opts.jobs < 2 or state.outputs:
        return None
    pending: dict[str, list] = {}  # action id -> [its target, the target's actions still to finish]
    trees = [label for label in analysis.order if analysis.infos[label].output is not None]
    if len(trees) < placement.WORTH:
        return None
    for label in trees:
        count = [label, len(analysis.declared_of(label))]
        for d in analysis.declared_of(label):
            pending[d.id] = count
    lane = placement.Lane(ws.root, opts.cache_dir, lock_fd)
    user_finished = hooks.finished
    lock = threading.Lock()
    outcomes: dict[str, Outcome] = {}

    def finished(o: Outcome) -> None:
        if user_finished:
            user_finished(o)
        if isinstance(o, Settled):
            return  # its target's tree is left to the ordinary path
        count = pending.get(o.action.id)
        if count is None:
            return
        with lock:
            outcomes[o.action.id] = o
            count[1] = count[1] - 1 if o.status.succeeded and count[1] > 0 else -1  # failed: not placed here
            ready = count[1] == 0
        if ready:
            label = count[0]
            info = analysis.infos[label]
            entries = _output_entries(info, outcomes[info.output.action])
            if not isinstance(entries, Tree):  # a composed tree is placed part by part, by the build
                lane.place(f"{OUT_DIR}/{label.path}", entries)

    hooks.finished = finished
    return lane


class _Linked:
    """The proof of placed trees (`outputs.Proof`) the no-op stamp takes for its linked files
    (`noop._Linked`), for the ordinary path's check of what tpbuild-out holds: a file that was placed as
    a hardlink of a blob is at its blob's stat now (the same inode, as this build verified the blob) when
    its directory is at its recorded stat (adding, removing or renaming an entry moves a directory's
    mtime), so it needs no lstat of its own: at 10,000 models, 60,000 of the 100,000 lstats of a no-op
    build. Every directory of a tree is still lstat'ed, and vouched for only when older than the racy
    window (an entry renamed within the timestamp granularity of the directory's last change would not
    move it), as is a file's blob; a file that is no such link (a copy across devices, a symlink, a blob
    this build did not verify) is not, and `outputs` lstats its tree file by file. Only where the store and
    tpbuild-out are on one device: an inode number names one file there. `_placed_memo` gives None when they
    are not.

    Trees are vouched for together (`vouch`), a column at a time: their directories' lstats taken in one
    pass, their files' blob stats likewise (a no-op at 10,000 models checks 20,000 trees, 40,000
    directories and 60,000 files), not a call and two loops per tree."""

    def __init__(self, root: Path, cas: Cas, prefetched: prefetch.Prefetch | None = None):
        self.base = f"{root}/"
        # the directories' lstats, from a helper process (`prefetch`) until the check is done
        self.prefetched = prefetched
        self.horizon = time.time_ns() - RACY_WINDOW_NS
        self.verified = cas.verified.get  # (digest, executable) -> the stat this build verified the blob at

    def intact(self, rel: str, rec: tuple) -> bool:
        """`outputs.Proof.intact`: its files and directories at the stats vouched for."""
        files = list(rec[1].values())
        now = self.vouch([f[0] for f in files], [f[1] for f in files], [f"{rel}/{d}" for d in rec[2]])
        return now is not None and now[0] == [f[2] for f in files] and now[1] == list(rec[2].values())

    def vouch(self, kinds: list[str], targets: list[str], dirs: list[str]) -> tuple[list, list] | None:
        """`outputs.Proof.vouch`."""
        base, horizon = self.base, self.horizon
        try:
            dir_stats = (self.prefetched.lstat_sigs if self.prefetched is not None else prefetch.lstat_sigs)(base, dirs)
        except OSError:
            return None
        file_stats = list(map(self.verified, zip(targets, map("x".__eq__, kinds))))
        if "l" in kinds:  # a link's target names no blob
            file_stats = [None if k == "l" else s for k, s in zip(kinds, file_stats)]
        for stats in (file_stats, dir_stats):
            if max(map(itemgetter(1), filter(None, stats)), default=0) >= horizon:
                stats[:] = [s if s is None or s[1] < horizon else None for s in stats]
        return file_stats, dir_stats

    def holds(self, rel: str, digest: str) -> bool:
        """`outputs.Proof.holds`: never known without the tree's record."""
        return False


def _placed_memo(root: Path, state_dir: Path, cas: Cas, state: outputs.BuildState,
                 prefetched: prefetch.Prefetch | None, named: tuple | None) -> placedmemo.PlacedMemo | None:
    """The ordinary path's proof of placed trees: the memo of those the last stamp recorded (`placedmemo`),
    each other tree by `_Linked`; None where the store and tpbuild-out are on different devices."""
    device = placedmemo.device(str(cas.root), str(root / OUT_DIR))
    if device[1] is None:
        return None
    return placedmemo.PlacedMemo(state_dir / placedmemo.FILE, _Linked(root, cas, prefetched), state, prefetched,
                                 f"{root}/", named, device)


def _output_entries(info, o: Outcome) -> Sequence[OutputEntry]:
    """What a target places: its output action's entries, or the one file its output names."""
    if info.output.path:
        e = o.entry(info.output.path)
        return (e,) if e is not None else ()
    return o.entries


def _materialize(ws: Workspace, analysis: Analysis, placed_at: tuple[list, list[str | None]],
                 outcomes: dict[str, Outcome], state: outputs.BuildState, cas: Cas, warn, proven=None,
                 lane: placement.Lane | None = None) -> tuple[dict[Label, TargetResult], int, int]:
    """Each target's result, how many outputs were written, and how many parts of composed ones.
    `placed_at`: `_placed_at`. `proven`: `Options.proven`. With a placement lane, the trees it was not
    given come first, placed here while it finishes what it was given."""
    placed = placed_parts = 0
    materialize = outputs.materialize if lane is None else lane.materialize
    order = analysis.order
    infos, rels = placed_at
    if lane is not None:
        at = sorted(range(len(order)), key=lambda i: rels[i] in lane.sent)
        order, infos, rels = [order[i] for i in at], [infos[i] for i in at], [rels[i] for i in at]
    # The outputs settled unchanged, checked together (`outputs.in_place_all`): those in place are not
    # even built (their entries), let alone placed.
    settled = []
    get = outcomes.get
    for rel, info in zip(rels, infos):
        if rel is not None and not info.output.path:
            o = get(info.output.action)
            if o.__class__ is Settled:
                settled.append((rel, o.entries))
    intact = outputs.in_place_all(state, ws.root, settled, proven)
    if proven.__class__ is placedmemo.PlacedMemo and proven.prefetched is not None:
        proven.prefetched.close()  # placing writes into the directories it may ask about again: stat'ed now
    # A target's actions are looked at only when some action failed or was skipped (a no-op build at
    # 10,000 models does not ask 10,000 targets of theirs).
    statuses = list(map(attrgetter("status"), outcomes.values()))  # compared in C, not an enum member's hash each
    troubled = Status.FAILED in statuses or Status.SKIPPED in statuses
    results: list[TargetResult] = []
    built, result = TargetStatus.BUILT, TargetResult
    for label, info, rel in zip(order, infos, rels):
        if troubled:
            statuses = {outcomes[d.id].status for d in analysis.declared_of(label)}
            if Status.FAILED in statuses:
                results.append(TargetResult(TargetStatus.FAILED))
                continue
            if Status.SKIPPED in statuses:
                results.append(TargetResult(TargetStatus.SKIPPED))
                continue
        if rel is None:
            results.append(result(built))
            continue
        if rel not in intact:
            try:
                wrote, parts = materialize(state, ws.root, rel, _output_entries(info, outcomes[info.output.action]),
                                           cas, proven)
                placed += wrote or bool(parts)
                placed_parts += parts
            except OSError as e:
                # A blob verified moments ago is gone: another build sharing the cache evicted it.
                warn(f"{label}: could not place its output in {rel} ({e.strerror}: {e.filename}); a blob it "
                     "names left the cache meanwhile (evicted by another build?): run the build again")
                results.append(TargetResult(TargetStatus.FAILED))
                continue
        results.append(result(built, [rel]))
    by_label = dict(zip(order, results))
    return (by_label if lane is None else {label: by_label[label] for label in analysis.order}), placed, placed_parts


def _placed_at(analysis: Analysis) -> tuple[list, list[str | None]]:
    """Each target's info in build order, and where its tree is placed (`tpbuild-out/<its path>`, None
    for a target that places none): found once a build, for the overlap check, prune and placing, the
    infos in the order analysis made them (no Label.__hash__ call of each of 10,000 targets)."""
    order, infos = analysis.order, analysis.infos
    infos = list(infos.values()) if list(infos) == order else list(map(infos.__getitem__, order))
    return infos, [f"{OUT_DIR}/{label.path}" if info.output is not None else None for label, info in zip(order, infos)]


def _check_overlaps(order: list[Label], rels: list[str | None]) -> None:
    paths = sorted(((f"{rel}/", label) for label, rel in zip(order, rels) if rel is not None), key=itemgetter(0))
    for (p1, l1), (p2, l2) in zip(paths, paths[1:]):
        if p2.startswith(p1):
            raise UserError(f"the outputs of {l1} and {l2} would nest ({p1} holds {p2}): rename one of the targets")


def clean(ws: Workspace, cache_dir: Path, wipe_cache: bool) -> None:
    from .workspace import clean_cache, is_cache, refuse_foreign

    if wipe_cache:
        refuse_foreign(cache_dir)  # before anything is removed: bad input destroys nothing
    with workspace_lock(ws, lambda _m: None):
        out = ws.root / OUT_DIR
        for child in out.iterdir() if out.exists() else ():
            if child.name != ".tpbuild":
                atomic.remove(child)
        state_dir = ws.root / STATE_DIR
        memo = [memo_dir(cache_dir, ws.root)] if is_cache(cache_dir) else []  # never in a foreign directory
        for p in (state_dir / "state", state_dir / "why", state_dir / "noop", state_dir / "noop-patch",
                  state_dir / "noop-graph", state_dir / "packages",
                  state_dir / "logs", state_dir / "tmp", *memo):
            if os.path.lexists(p):
                atomic.remove(p)
        if wipe_cache:
            clean_cache(cache_dir)


def verify_cache(cache_dir: Path, repair: bool) -> list[str]:
    """Re-hash every blob and re-read every action cache entry; one line per problem found. With
    `repair`, bad blobs are quarantined and damaged entries (unreadable, or naming a blob that is bad
    or missing) removed, so the next build rebuilds what they held."""
    from . import cas as casmod, digest

    store = Cas(cache_dir)
    problems = []
    bad: set[tuple[str, bool]] = set()
    for d, exe, path in casmod.scan(cache_dir):
        try:
            ok = digest.of_file(path) == d
        except OSError as e:
            ok, why = False, e.strerror
        else:
            why = "content does not match its name"
        if not ok:
            bad.add((d, exe))
            where = store.quarantine(d, exe) if repair else None
            problems.append(f"bad blob {path}: {why}" + (f"; moved to {where}" if where else ""))
    for path, entries in ActionCache(cache_dir).scan():
        if entries is None:
            why = "does not parse"
        else:
            broken = [e.path for e in entries if isinstance(e, Entry) and ((e.digest, e.executable) in bad
                      or not os.path.exists(store.path(e.digest, e.executable)))]
            if not broken:
                continue
            why = f"names a bad or missing blob for {', '.join(broken[:3])}"
        if repair:
            atomic.unlink(path)
        problems.append(f"damaged action cache entry {path}: {why}" + ("; removed" if repair else ""))
    return problems
