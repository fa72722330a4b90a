"""What changed since the last build, known before the scheduler runs: every action whose key
provably did not move is settled straight from the build state, so an edit costs the actions
downstream of it, not the workspace's.

An action is settled when the build state (`outputs.BuildState`) has its last result and the key
computed now equals the key of that result. The key is computed exactly as the scheduler computes it
(`action.material`: definition, rule and engine code, tools, PATH, salt, key version, input
digests), so the fast path has no notion of "unchanged" of its own to keep in step with what enters a
key; what it saves is everything around the key. It works on the actions as declared
(`analysiscache.Declared`: the definition part of the key material as the analysis memo keeps it),
so a settled action is never decoded from the memo, nor its entries built. A source input's digest comes through the stat memo
(a stat; a file whose stat moved is hashed again), an upstream's file by its kind and digest as its
record holds them (no entry built), and an upstream's whole tree by the tree digest kept with its
record (no re-hash of its entries), which is valid because that upstream is itself settled: its
result is the one recorded. An upstream that is not settled makes its readers wait for
the scheduler, which then keys them with early cutoff as always (an upstream re-run to the same bytes
leaves them hits on their record).

A key costs about 8 µs an action; settling saves what the ordinary path adds around it (building
every upstream's entries, re-hashing its trees, requests and ready queues, an action-cache read when
the last-build record misses): at 10,000 models, the actions phase of a no-op build took 1.3 s of CPU
instead of 2.0 s (a shared machine, side by side). What the fast path keeps from the ordinary one:
every blob a settled result names is checked in the store (`cas.verify`, a stat), as a hit on the
record would be; an action whose blob is gone or damaged is not settled, nor anything downstream of
it, and the scheduler runs them (the blob comes back, a damaged one is quarantined first).

What a no-op build at 10,000 models does here is in proportion to its 20,000 actions, so it is done
by column where it can be: the sources' stats and the blobs' (30,000 files) are each compared with
the stat memo in one loop (`StatCache.digests`), not a call chain per file; the actions are walked in
the order analysis declared them (no walk of the graph, see `settle`); a settled action's outcome is
its key and its result, nothing more (`scheduler.Settled`); and a build that settles everything gives
the scheduler nothing to walk.
"""

from __future__ import annotations

import os
from pathlib import Path
from stat import S_IXUSR
from typing import Mapping

from . import critical
from .action import Source, key_of, parts_of
from .analysiscache import Declared
from .cas import Cas
from .outputs import BuildState
from .scheduler import Settled
from .statcache import StatCache


class Unsettled(Exception):
    """An action of the boundary has no record in the build state (a damaged one)."""


class _Unordered(Exception):
    """An action was reached before an action it reads from: the declared order is not a walk."""


def settle(declared: Mapping[str, Declared], state: BuildState, statcache: StatCache, cas: Cas, root: Path,
           salt: str, boundary: set[str] = frozenset()) -> dict[str, Settled]:
    """The actions whose key did not move and whose recorded result is whole in the store, in the
    order declared. `boundary`: actions a delta build reads from without working them
    (`incremental.py`), settled as recorded, unkeyed and unchecked (the no-op stamp proved their inputs
    and blobs unchanged); raises Unsettled if one has no record.

    Analysis declares the actions of a target after its dependencies' (`analysis.Analysis.order`), so
    the declared order is a walk of the action graph unless a rule declared an action before one it
    reads from: only then is the graph walked (`critical.topological`), which a no-op build at
    10,000 models spares (0.07 s)."""
    state.actions.preload(declared)
    try:
        settled = _settle(declared, declared, state, statcache, root, salt, boundary)
    except _Unordered:
        settled = _settle(declared, critical.topological(declared)[0], state, statcache, root, salt, boundary)
    # Every blob a settled result names, once (a flat tree names its inputs' blobs again), in one pass.
    blobs: dict[tuple[str, bool], None] = {}  # in order: a damaged blob's warning comes where it always did
    for aid, o in settled.items():
        if aid not in boundary:
            for b in o.entries.blobs():
                blobs[b] = None
    bad = cas.verify_all(blobs)
    if bad:
        dependents = critical.edges(declared)[1]
        for aid in list(settled):
            o = settled.get(aid)
            if o is not None and aid not in boundary and not bad.isdisjoint(o.entries.blobs()):
                _drop(aid, settled, dependents)
    return settled


def _settle(declared: Mapping[str, Declared], order, state: BuildState, statcache: StatCache, root: Path,
            salt: str, boundary) -> dict[str, Settled]:
    """`settle` before the blobs are checked, walking the actions in `order`; raises _Unordered when an
    action comes before one it reads from."""
    # The sources, each once (a file many actions read is stat'ed once), through the stat memo in one
    # loop; None: gone (the scheduler says so).
    paths = list(dict.fromkeys(inp.path for aid in order if aid not in boundary
                               for _dest, inp in declared[aid].inputs if inp.__class__ is Source))
    sources = dict(zip(paths, (None if f is None else ("x" if f[1][3] & S_IXUSR else "f") + f[0]
                               for f in statcache.digests(paths, os.path.join(root, "")))))
    records = state.actions
    settled: dict[str, Settled] = {}
    if boundary:  # upstream of the rest, whatever the order
        for aid in order:
            if aid in boundary:
                last = records.get(aid)  # None: absent, or a record that does not decode
                if last is None or last.parts:  # a composed tree's parts are its inputs': not known unkeyed
                    raise Unsettled(aid)
                settled[aid] = Settled(declared[aid], last.key, last.result(tuple))
    unsettled: set[str] = set()  # walked, and not settled
    for aid in order:
        if aid in boundary:
            continue
        a = declared[aid]
        last = records.get(aid)  # None: absent, or a record that does not decode
        if last is None:
            unsettled.add(aid)
            continue
        digests = []
        trees = []  # (destination, digest, result) of each whole upstream tree: what a composed tree takes
        for dest, inp in a.inputs:
            if inp.__class__ is Source:
                d = sources[inp.path]
            else:
                up = settled.get(inp.action)
                if up is None:
                    if inp.action not in unsettled and inp.action in declared:
                        raise _Unordered(inp.action)
                    break
                if inp.path:
                    d = up.entries.input_digest(inp.path)
                else:
                    d = up.entries.digest
                    trees.append((dest, d, up.entries))
            if d is None:
                break
            digests.append((dest, d))
        else:
            if key_of(a.material(digests, salt)) == last.key:
                result = last.result(lambda: parts_of(a.kind, a.inputs, trees))
                if result is not None:
                    settled[aid] = Settled(a, last.key, result)
                    continue
        unsettled.add(aid)
    return settled


def _drop(aid: str, settled: dict[str, Settled], dependents: Mapping[str, list[str]]) -> None:
    """Unsettle an action and everything downstream of it: its result must be made again, and their
    keys depend on its bytes."""
    stack = [aid]
    while stack:
        x = stack.pop()
        if settled.pop(x, None) is not None:
            stack.extend(dependents[x])
