"""One build, end to end: analyse, schedule, materialize, remember.

This module wires the layers together for a command (the CLI's `build`, and later `test`) and owns
the per-workspace lock: two tpbuild processes in one workspace take turns, because they would write
the same `tpbuild-out/` paths. Builds of different workspaces sharing one cache run concurrently; the
cache itself is safe for that.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import outputs
from .actioncache import ActionCache
from .analysis import Analysis
from .cas import Cas
from .errors import BuildError, UserError
from .executor import Executor
from .label import Label
from .scheduler import BuildContext, Hooks, Outcome, Scheduler
from .statcache import StatCache
from .layout import STATE_DIR
from .workspace import OUT_DIR, Workspace, memo_dir


@dataclass
class Options:
    cache_dir: Path
    jobs: int = os.cpu_count() or 1
    keep_going: bool = False
    remote: object = None  # a remote.RemoteCache
    max_size: int | None = None  # bytes; the local cache is trimmed to it after a build that added to it


@dataclass
class TargetResult:
    status: str  # built | failed | skipped
    outputs: list[str] = field(default_factory=list)


@dataclass
class BuildResult:
    analysis: Analysis
    outcomes: dict[str, Outcome]
    targets: dict[Label, TargetResult]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    cache: dict = field(default_factory=dict)  # "remote": its stats, "evicted": what eviction removed
    placed: dict = field(default_factory=dict)  # BuildState.outputs: what tpbuild-out holds, file by file

    @property
    def success(self) -> bool:
        return all(t.status == "built" for t in self.targets.values())

    def errors(self) -> list:
        return [o for o in self.outcomes.values() if o.status == "failed"]


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
        yield


def run(ws: Workspace, analysis: Analysis, opts: Options, hooks: Hooks) -> BuildResult:
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
    _check_overlaps(analysis)
    with workspace_lock(ws, warn):
        state_dir = ws.root / STATE_DIR
        statcache = StatCache(memo_dir(opts.cache_dir, ws.root) / "statcache")
        cas = Cas(opts.cache_dir, statcache)
        ac = ActionCache(opts.cache_dir)
        state = outputs.BuildState.load(state_dir / "state", outputs.cache_id(opts.cache_dir))
        ctx = BuildContext(
            root=ws.root, cas=cas, ac=ac, statcache=statcache,
            executor=Executor(ws.root, cas, state_dir / "logs"), state=state.actions,
            salt=ws.cache.salt, remote=opts.remote, hooks=hooks,
        )
        sched = Scheduler(ctx, analysis.actions, jobs=opts.jobs, keep_going=opts.keep_going)
        try:
            outcomes = sched.run()
        finally:
            for aid, o in sched.outcomes.items():
                if o.status in ("executed", "cached", "remote") and not o.unstable:
                    state.remember(aid, o.key, o.entries)
            statcache.save()
            state.save()
        targets = _materialize(ws, analysis, outcomes, state, cas, warn)
        state.save()  # a no-op build changes nothing and writes nothing
    cache: dict = {}
    if opts.remote is not None:
        cache["remote"] = opts.remote.stats()
    if opts.max_size is not None and any(o.status in ("executed", "remote") for o in outcomes.values()):
        cache["evicted"] = _evict(opts, outcomes)
    return BuildResult(analysis, outcomes, targets, time.monotonic() - t0, warnings, cache, state.outputs)


def _evict(opts: Options, outcomes: dict[str, Outcome]) -> dict:
    from . import eviction

    keys = {o.key for o in outcomes.values() if o.key}
    blobs = {(e.digest, e.kind == "x") for o in outcomes.values() for e in o.entries if e.kind != "l"}
    return vars(eviction.evict(opts.cache_dir, opts.max_size, keys, blobs))


def _materialize(ws: Workspace, analysis: Analysis, outcomes: dict[str, Outcome],
                 state: outputs.BuildState, cas: Cas, warn) -> dict[Label, TargetResult]:
    results: dict[Label, TargetResult] = {}
    for label in analysis.order:
        acts = analysis.actions_of(label)
        statuses = {outcomes[a.id].status for a in acts}
        if "failed" in statuses:
            results[label] = TargetResult("failed")
            continue
        if "skipped" in statuses:
            results[label] = TargetResult("skipped")
            continue
        info = analysis.infos[label]
        res = TargetResult("built")
        if info.output is not None:
            entries = outcomes[info.output.action].entries
            if info.output.path:
                entries = tuple(e for e in entries if e.path == info.output.path)
            rel = f"{OUT_DIR}/{label.path}"
            try:
                outputs.materialize(state, ws.root, rel, entries, cas)
            except OSError as e:
                # A blob verified moments ago is gone: another build sharing the cache evicted it.
                warn(f"{label}: could not place its output in {rel} ({e.strerror}: {e.filename}); a blob it "
                     "names left the cache meanwhile (evicted by another build?): run the build again")
                results[label] = TargetResult("failed")
                continue
            res.outputs.append(rel)
        results[label] = res
    return results


def _check_overlaps(analysis: Analysis) -> None:
    paths = sorted((f"{lbl.path}/", lbl) for lbl in analysis.order if analysis.infos[lbl].output is not None)
    for (p1, l1), (p2, l2) in zip(paths, paths[1:]):
        if p2.startswith(p1):
            raise UserError(f"the outputs of {l1} and {l2} would nest ({OUT_DIR}/{p1} holds {OUT_DIR}/{p2}): "
                            "rename one of the targets")


def clean(ws: Workspace, cache_dir: Path, wipe_cache: bool) -> None:
    with workspace_lock(ws, lambda _m: None):
        out = ws.root / OUT_DIR
        for child in out.iterdir() if out.exists() else ():
            if child.name != ".tpbuild":
                outputs.remove_tree(child)
        state_dir = ws.root / STATE_DIR
        for p in (state_dir / "state", state_dir / "logs", state_dir / "tmp", memo_dir(cache_dir, ws.root)):
            if os.path.lexists(p):
                outputs.remove_tree(p)
    if wipe_cache and cache_dir.exists():
        if not (cache_dir / "id").exists() and any(cache_dir.iterdir()):
            raise BuildError(f"{cache_dir} does not look like a tpbuild cache (no 'id' file); not deleting it")
        outputs.remove_tree(cache_dir)
