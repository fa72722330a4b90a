"""Analysis: patterns -> target graph -> each rule's declared actions. Runs nothing.

Rules are analysed dependency-first, so a rule reads its dependencies' `TargetInfo` and refers to
their artifacts. The result is the whole action graph before the first action runs, which is what a
topological scheduler needs.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field

from .action import Action
from .errors import BuildError, UserError
from .graph import TargetGraph
from .label import Label, LabelSyntaxError, parse_pattern
from .plugin import AnalysisContext, Rule, TargetInfo
from .workspace import Workspace

ENTRY_POINT_GROUP = "tpbuild.rules"


def load_rules() -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            loaded = ep.load()
        except Exception as e:  # a broken plugin must not look like a tpbuild crash
            raise BuildError(f"rule set {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}; "
                             "reinstall it or remove it") from None
        for cls in loaded:
            if cls.name in rules:
                raise UserError(f"rule {cls.name!r} is registered twice (entry point {ep.name!r}): "
                                "uninstall one of the rule sets")
            rules[cls.name] = cls()
    return rules


@dataclass
class Analysis:
    graph: TargetGraph
    requested: list[Label]
    order: list[Label]  # dependency-first closure of `requested`
    infos: dict[Label, TargetInfo] = field(default_factory=dict)
    actions: dict[str, Action] = field(default_factory=dict)
    contexts: dict[Label, AnalysisContext] = field(default_factory=dict)

    def actions_of(self, label: Label) -> list[Action]:
        return self.contexts[label].actions


def analyze(ws: Workspace, pattern_texts: list[str], rules: dict[str, Rule] | None = None) -> Analysis:
    rules = rules if rules is not None else load_rules()
    claimed = {s for r in rules.values() for s in r.sections}
    for name in ws.sections:
        if name not in claimed:
            raise ws.source.error((name,), f"unknown table [{name}]: tpbuild.toml takes [workspace], [cache]"
                                           + "".join(f", [{s}]" for s in sorted(claimed)))
    patterns = []
    for text in pattern_texts:
        try:
            patterns.append(parse_pattern(text))
        except LabelSyntaxError as e:
            raise UserError(str(e)) from None
    infos: dict[Label, TargetInfo] = {}
    contexts: dict[Label, AnalysisContext] = {}

    def make_context(label, rule, src, keypath):
        ctx = AnalysisContext(root=ws.root, label=label, rule=rule, source=src, deps=infos,
                              sections=ws.sections, keypath=keypath, workspace_source=ws.source)
        contexts[label] = ctx
        return ctx

    graph = TargetGraph(ws, rules, make_context)
    requested = graph.expand(patterns)
    order = graph.close(requested)
    result = Analysis(graph, requested, order, infos, contexts=contexts)
    for label in order:
        target = graph.targets[label]
        ctx = contexts[label]
        ctx.expanded = graph.expanded.get(label, {})
        try:
            infos[label] = target.rule.analyze(ctx, target.attrs)
        except ValueError as e:  # rules raise ValueError from shared attribute checks
            raise ctx.error((), str(e)) from None
        for a in ctx.actions:
            result.actions[a.id] = a
    return result
