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
(a stat; a file whose stat moved is hashed again), and an upstream's whole tree by the tree digest
kept with its record (no re-hash of its entries), which is valid because that upstream is itself
settled: its result is the one recorded. An upstream that is not settled makes its readers wait for
the scheduler, which then keys them with early cutoff as always (an upstream re-run to the same bytes
leaves them hits on their record).

A key costs about 8 µs an action; settling saves what the ordinary path adds around it (building
every upstream's entries, re-hashing its trees, requests and ready queues, an action-cache read when
the last-build record misses): at 10,000 models, the actions phase of a no-op build took 1.3 s of CPU
instead of 2.0 s (a shared machine, side by side). What the fast path keeps from the ordinary one: every blob a settled result names is checked in the store (`cas.verify`, a stat), as a hit on the
record would be; an action whose blob is gone or damaged is not settled, nor anything downstream of
it, and the scheduler runs them (the blob comes back, a damaged one is quarantined first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from .action import Source, input_digest, key_of, parts_of
from .analysiscache import Declared
from .cas import Cas
from .outputs import BuildState
from .scheduler import Settled, source_entry
from .statcache import StatCache


class Unsettled(Exception):
    """An action of the boundary has no record in the build state (a damaged one)."""


def settle(declared: Mapping[str, Declared], walk: tuple[list[str], dict[str, list[str]]], state: BuildState,
           statcache: StatCache, cas: Cas, root: Path, salt: str,
           boundary: set[str] = frozenset()) -> dict[str, Settled]:
    """The actions whose key did not move and whose recorded result is whole in the store. `walk`:
    the action graph's `critical.topological` walk. `boundary`: actions a delta build reads from
    without working them (`incremental.py`), settled as recorded, unkeyed and unchecked (the no-op
    stamp proved their inputs and blobs unchanged); raises Unsettled if one has no record."""
    order, dependents = walk
    state.actions.preload(order)
    settled: dict[str, Settled] = {}
    for aid in order:
        if aid in boundary:
            last = state.actions.get(aid)  # None: absent, or a record that does not decode
            if last is None or last.parts:  # a composed tree's parts are its inputs': not known unkeyed
                raise Unsettled(aid)
            settled[aid] = Settled(declared[aid], last.key, last.result(tuple), [])
            continue
        if aid not in state.actions:
            continue
        a = declared[aid]
        if boundary and not all(inp.action in settled for _dest, inp in a.inputs if inp.__class__ is not Source):
            continue  # downstream of a delta build's change: not settled, known before any digest is made
        digests = []
        trees = []  # (destination, digest, result) of each whole upstream tree: what a composed tree takes
        for dest, inp in a.inputs:
            if isinstance(inp, Source):
                try:
                    entry, _full = source_entry(statcache, root, inp.path)
                except OSError:
                    break  # gone: the scheduler says so
                digests.append((dest, input_digest((entry,), whole_tree=False)))
                continue
            up = settled.get(inp.action)
            if up is None:
                break
            if not inp.path:
                digests.append((dest, up.tree()))
                trees.append((dest, digests[-1][1], up.entries))
                continue
            entry = up.entry(inp.path)
            if entry is None:
                break
            digests.append((dest, input_digest((entry,), whole_tree=False)))
        else:
            last = state.actions.get(aid)  # read only now: a record whose inputs moved is not decoded
            if last is not None and key_of(a.material(digests, salt)) == last.key:
                result = last.result(lambda: parts_of(a.kind, a.inputs, trees))
                if result is not None:
                    settled[aid] = Settled(a, last.key, result, digests)
    sound: set[tuple[str, bool]] = set()  # a flat tree names its inputs' blobs again: each is checked once
    for aid in order:  # dependency-first: dropping one drops its readers before they are checked
        o = settled.get(aid)
        if o is None or aid in boundary:
            continue
        for blob in o.blobs():
            if blob not in sound:
                if not cas.verify(*blob):
                    _drop(aid, settled, dependents)
                    break
                sound.add(blob)
    return settled


def _drop(aid: str, settled: dict[str, Settled], dependents: Mapping[str, list[str]]) -> None:
    """Unsettle an action and everything downstream of it: its result must be made again, and their
    keys depend on its bytes."""
    stack = [aid]
    while stack:
        x = stack.pop()
        if settled.pop(x, None) is not None:
            stack.extend(dependents[x])
