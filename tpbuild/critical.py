"""The critical path: what the ready queue is ordered by, and the chain that bounded a build.

Like ninja (its `.ninja_log` and the priority of its ready queue), a build remembers how long each
action took to execute, and the next build starts first the ready action with the longest remaining
path to the end of the graph by those durations: the long chain starts early, and the short
independent work fills the gaps. An action with no past duration is estimated by the average of its
mnemonic's, else 0. Only executions are remembered: a cache hit says nothing of what running costs.

The memo (`<memo dir>/durations`, action id -> seconds) goes through `memo.py`; a memo that cannot be
read orders the queue as written (every priority 0), which is correct, only less clever.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from . import memo
from .action import Action

KIND, VERSION = "durations", 1


def load(path: Path) -> dict[str, float]:
    value = memo.load(path, KIND, VERSION)
    return value if isinstance(value, dict) else {}


def save(path: Path, past: dict[str, float], executed: Iterable[tuple[str, float]], tmp_parent: Path,
         keep: set[str] | None = None) -> str | None:
    """Remember the durations of this build's executions over the past ones (only those of `keep`
    when given: the build covered every target). None when saved or nothing changed, else a warning."""
    durations = dict(past) if keep is None else {a: s for a, s in past.items() if a in keep}
    durations.update((a, round(s, 4)) for a, s in executed)
    if durations == past:
        return None
    return memo.save(path, KIND, VERSION, durations, tmp_parent, "the action durations")


def edges(actions: Mapping[str, Action]) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Each action's count of the actions it reads from, and the actions that read from each one:
    what a topological walk of the action graph (this module's, the scheduler's) starts from."""
    dependents: dict[str, list[str]] = {a: [] for a in actions}
    waiting = {}
    for aid, a in actions.items():
        ups = a.upstream()
        waiting[aid] = len(ups)
        for u in ups:
            dependents[u].append(aid)
    return waiting, dependents


def _topological(actions: Mapping[str, Action]) -> tuple[list[str], dict[str, list[str]]]:
    waiting, dependents = edges(actions)
    order = [a for a, n in waiting.items() if n == 0]
    for aid in order:  # grows while it is walked
        for d in dependents[aid]:
            waiting[d] -= 1
            if waiting[d] == 0:
                order.append(d)
    return order, dependents


def priorities(actions: Mapping[str, Action], durations: Mapping[str, float]) -> dict[str, float]:
    """Each action's longest path (its own duration included) to the end of the graph."""
    by_mnemonic: dict[str, list[float]] = {}
    for aid, a in actions.items():
        if aid in durations:
            by_mnemonic.setdefault(a.mnemonic, []).append(durations[aid])
    average = {m: sum(xs) / len(xs) for m, xs in by_mnemonic.items()}
    order, dependents = _topological(actions)
    prio: dict[str, float] = {}
    for aid in reversed(order):
        own = durations.get(aid)
        if own is None:
            own = average.get(actions[aid].mnemonic, 0.0)
        prio[aid] = own + max((prio[d] for d in dependents[aid]), default=0.0)
    return prio


def path(actions: Mapping[str, Action], seconds: Mapping[str, float]) -> tuple[list[str], float]:
    """The chain of actions, first to last, with the largest total of `seconds`, and that total."""
    order, _ = _topological(actions)
    total: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for aid in order:
        ups = actions[aid].upstream()
        best = max(ups, key=lambda u: (total[u], u), default=None)
        via[aid] = best
        total[aid] = seconds.get(aid, 0.0) + (total[best] if best is not None else 0.0)
    if not total:
        return [], 0.0
    end = max(total, key=lambda a: (total[a], a))
    chain = []
    at: str | None = end
    while at is not None:
        chain.append(at)
        at = via[at]
    return chain[::-1], total[end]
