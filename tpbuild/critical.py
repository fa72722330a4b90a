"""The critical path: what the ready queue is ordered by, and the chain that bounded a build.

Like ninja (its `.ninja_log` and the priority of its ready queue), a build remembers how long each
action took to execute, and the next build starts first the ready action with the longest remaining
path to the end of the graph by those durations: the long chain starts early, and the short
independent work fills the gaps. An action with no past duration is estimated by the average of its
mnemonic's, else 0. Only executions are remembered: a cache hit says nothing of what running costs.

The memo (`<memo dir>/durations`, action id -> seconds) is a `memo.Journal`; a memo that cannot be
read orders the queue as written (every priority 0), which is correct, only less clever.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterable, Mapping

from . import memo
from .action import Action

KIND, VERSION = "durations", 2


class Durations(Mapping):
    """Action id -> seconds of its last execution: a journal (`memo.Journal`), so a build writes the
    durations of what it executed, not every action's."""

    def __init__(self, path: Path, tmp_parent: Path, eager: bool = True):
        """`eager`: decode every duration at once (a build that ranks every action); a delta build ranks
        the few it works, each then found and decoded when asked for (`memo.Journal`'s `lazy`)."""
        self._journal = memo.Journal(path, KIND, VERSION, None, tmp_parent, "the action durations", eager=eager,
                                     lazy=not eager)

    def __getitem__(self, aid: str) -> float:
        value = self._journal.get(aid)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KeyError(aid)
        return value

    def __iter__(self):
        return iter(list(self._journal.keys()))

    def __len__(self) -> int:
        return len(self._journal.keys())

    def save(self, executed: Iterable[tuple[str, float]], keep: set[str] | None = None) -> str | None:
        """Remember this build's executions (and, with `keep`, drop the durations of every other
        action: the build covered every target). None when saved or nothing changed, else a warning."""
        if keep is not None:
            for aid in [a for a in self._journal.keys() if a not in keep]:
                self._journal.remove(aid)
        for aid, seconds in executed:
            seconds = round(seconds, 4)
            if self._journal.get(aid) != seconds:
                self._journal.put(aid, seconds)
        return self._journal.save()


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


def waiting(dependents: Mapping[str, list[str]]) -> dict[str, int]:
    """`edges`' counts again from its readers (the walk of `topological` keeps them): a build walks
    the action graph's edges once (making each action's set of upstreams cost a tenth of a no-op's
    actions phase at 10,000 models)."""
    counts = dict.fromkeys(dependents, 0)
    for readers in dependents.values():
        for r in readers:
            counts[r] += 1
    return counts


def topological(actions: Mapping[str, Action]) -> tuple[list[str], dict[str, list[str]]]:
    """Every action after those it reads from, and the readers of each (`edges`)."""
    waiting, dependents = edges(actions)
    order = [a for a, n in waiting.items() if n == 0]
    for aid in order:  # grows while it is walked
        for d in dependents[aid]:
            waiting[d] -= 1
            if waiting[d] == 0:
                order.append(d)
    return order, dependents


def priorities(actions: Mapping[str, Action], durations: Mapping[str, float],
               walk: tuple[list[str], dict[str, list[str]]] | None = None) -> dict[str, float]:
    """Each action's longest path (its own duration included) to the end of the graph. `walk`: the
    graph's `topological` walk, when the caller has it."""
    by_mnemonic: dict[str, list[float]] = {}
    for aid, a in actions.items():
        if aid in durations:
            by_mnemonic.setdefault(a.mnemonic, []).append(durations[aid])
    average = {m: sum(xs) / len(xs) for m, xs in by_mnemonic.items()}
    order, dependents = walk or topological(actions)
    prio: dict[str, float] = {}
    for aid in reversed(order):
        own = durations.get(aid)
        if own is None:
            own = average.get(actions[aid].mnemonic, 0.0)
        prio[aid] = own + max((prio[d] for d in dependents[aid]), default=0.0)
    return prio


def path(actions: Mapping[str, Action], seconds: Mapping[str, float]) -> tuple[list[str], float]:
    """The chain of actions, first to last, with the largest total of `seconds`, and that total."""
    order, _ = topological(actions)
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
