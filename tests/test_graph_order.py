"""The target graph's dependency-first order (tpbuild/graph.py `_static_order`) is graphlib's
`static_order`, made without graphlib's per-node objects: the same order for the same graph, and no
order (then graphlib names the cycle) for a graph with one."""

from __future__ import annotations

import graphlib
import random

import pytest

from tpbuild.graph import _cycle, _static_order
from tpbuild.label import Label


def _graph(rng: random.Random, n: int, edges: int, acyclic: bool) -> dict[Label, list[Label]]:
    labels = [Label(f"p{i % 7}", f"t{i}") for i in range(n)]
    rng.shuffle(labels)
    graph: dict[Label, list[Label]] = {lbl: [] for lbl in labels}
    for _ in range(edges):
        a, b = rng.sample(range(n), 2)
        if acyclic and a < b:
            a, b = b, a  # only towards an earlier label: no cycle
        graph[labels[a]].append(labels[b])  # duplicates too, as a target naming a dependency twice
    return graph


@pytest.mark.parametrize("seed", range(20))
def test_the_order_is_graphlibs(seed):
    rng = random.Random(seed)
    graph = _graph(rng, rng.randint(1, 60), rng.randint(0, 150), acyclic=True)
    assert _static_order(graph) == list(graphlib.TopologicalSorter(graph).static_order())


def test_dependencies_not_among_the_keys_come_first():
    a, b, c = Label("", "a"), Label("", "b"), Label("x", "c")
    graph = {a: [b, c], b: [c]}
    assert _static_order(graph) == list(graphlib.TopologicalSorter(graph).static_order()) == [c, b, a]


@pytest.mark.parametrize("seed", range(10))
def test_a_cycle_gives_no_order_and_is_named(seed):
    rng = random.Random(seed)
    graph = _graph(rng, 30, 40, acyclic=True)
    ring = rng.sample(list(graph), 3)
    for x, y in zip(ring, ring[1:] + ring[:1]):
        graph[x].append(y)
    assert _static_order(graph) is None
    cycle = _cycle(graph)
    assert cycle[0] == cycle[-1] and all(y in graph[x] for x, y in zip(cycle, cycle[1:]))


def test_a_target_depending_on_itself_is_a_cycle():
    a = Label("", "a")
    assert _static_order({a: [a]}) is None and _cycle({a: [a]}) == [a, a]
