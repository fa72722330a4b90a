"""Analysis: patterns -> target graph -> each rule's declared actions. Runs nothing.

Rules are analysed dependency-first, so a rule reads its dependencies' `TargetInfo` and refers to
their artifacts. The result is the whole action graph before the first action runs, which is what a
topological scheduler needs.

Analysis goes on past an error: every target that does not depend on a failed one is still analysed,
so one run reports all independent errors (sorted by file and line, see errors.ErrorList). Without
`keep_going` they are raised together at the end; with it, the analysis returns what succeeded and
carries the errors for the caller to report after building the rest.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from pathlib import Path

from .action import Action
from .errors import TpbuildError, UserError, collected
from . import digest
from .analysiscache import AnalysisCache, Declared, TargetRecord, fingerprint, info_digest, recorded_identity
from .layout import sig
from .label import Label, LabelSyntaxError, parse_pattern
from .targetinfo import TargetInfo
from .rulesets import rule_sets
from .workspace import WORKSPACE_FILE, Workspace

TYPE_CHECKING = False  # as `typing` has it (which a delta build does not otherwise import), for type checkers
if TYPE_CHECKING:  # imported by `analyze`: a delta build's Analysis has no graph
    from .graph import TargetGraph


class Actions(Mapping):
    """Action id -> the action, decoded from the analysis memo when first looked up (`Declared`)."""

    def __init__(self, declared: dict[str, Declared]):
        self._declared = declared

    def __getitem__(self, aid: str) -> Action:
        return self._declared[aid].action

    def __contains__(self, aid: object) -> bool:
        return aid in self._declared

    def __iter__(self):
        return iter(self._declared)

    def __len__(self) -> int:
        return len(self._declared)


class Analysis:
    """What analysis found: the targets in build order with their infos and actions. (A plain class, not
    a dataclass: its generated methods were compiled on every start, and nothing compares analyses.)"""

    def __init__(self, graph: TargetGraph, requested: list[Label], order: list[Label],
                 infos: dict[Label, TargetInfo] | None = None, declared: dict[str, Declared] | None = None,
                 target_actions: dict[Label, list[Declared]] | None = None):
        self.graph = graph
        self.requested = requested
        self.order = order  # dependency-first closure of `requested`
        self.infos = infos if infos is not None else {}
        # Every action, as declared (enough to walk the action graph and key each action); `actions` holds
        # the same decoded, which only what runs or reports on an action needs.
        self.declared = declared if declared is not None else {}
        self.target_actions = target_actions if target_actions is not None else {}
        self.actions: Mapping[str, Action] = Actions(self.declared)
        self.reanalysed = 0  # targets whose rule ran (the rest came from the analysis cache)
        self.reanalysed_packages: set[str] = set()  # the packages those targets are in
        self.errors: list[TpbuildError] = []  # only with keep_going; else raised
        self.warnings: list[str] = []  # what the rules that ran warned about

    def actions_of(self, label: Label) -> list[Action]:
        return [d.action for d in self.target_actions[label]]

    def declared_of(self, label: Label) -> list[Declared]:
        return self.target_actions[label]

    def decoded_packages(self) -> int:
        """Packages of which some action was decoded from the analysis memo so far (`Declared.decoded`)."""
        return len({lbl.package for lbl, ds in self.target_actions.items() if any(d.decoded for d in ds)})


def analyze(ws: Workspace, pattern_texts: list[str], memo: Path, keep_going: bool = False) -> Analysis:
    """`memo` is the workspace's memo directory (workspace.memo_dir), where the analysis cache lives.
    The rule sets are imported only if a rule runs (see `tpbuild.rulesets`)."""
    from .graph import CachedTarget, TargetGraph

    rules = rule_sets(memo, recorded_identity(memo / "analysis"))
    claimed = rules.claimed
    for name in ws.sections:
        if name not in claimed:
            raise ws.source.error((name,), f"unknown table [{name}]: tpbuild.toml takes [workspace], [cache]"
                                           + "".join(f", [{s}]" for s in sorted(claimed)))
    patterns = []
    errors: list[TpbuildError] = []
    for text in pattern_texts:
        try:
            patterns.append(parse_pattern(text))
        except LabelSyntaxError as e:
            errors.append(UserError(str(e)))
    if errors:
        raise collected(errors)
    infos: dict[Label, TargetInfo] = {}
    contexts: dict = {}  # label -> its plugin.AnalysisContext

    def make_context(label, rule, src, keypath):
        from .plugin import AnalysisContext  # with pydantic: only once a manifest is parsed

        if not gc.isenabled():
            # Rule code runs from here on (a manifest validated, a rule analysing): unlike the engine's
            # records it leaves cyclic garbage (240,000 objects in a clean build of 10,000 models, 27 MB of
            # its peak memory), so the collector a build runs without (cli._main) runs from now on.
            gc.enable()

        ctx = AnalysisContext(root=ws.root, label=label, rule=rule, source=src, deps=infos,
                              sections=ws.sections, keypath=keypath, workspace_source=ws.source)
        contexts[label] = ctx
        return ctx

    cache = AnalysisCache(memo / "analysis", fingerprint(ws.root, (ws.root / WORKSPACE_FILE).read_bytes()),
                          rules.identity, ws.root, ws.observed)
    graph = TargetGraph(ws, rules, make_context, cache)
    graph.keep_going = keep_going
    requested = graph.expand(patterns)
    order = graph.close(requested, memo / "closure")
    result = Analysis(graph, requested, order, infos)
    errors = graph.errors
    failed = set(graph.blocked)  # targets not analysed: broken themselves, or depending on what is
    info_digests: dict[Label, str] = {}
    # Dependencies (their label objects' ids: the graph holds them for the whole loop, and the memo's
    # labels are one object each, so no Label.__hash__ call per target) -> their deps_digest: a label's
    # info digest is final once it is ordered, and most targets share their dependencies (10,000
    # models, one genrule), so each list is hashed once.
    deps_digests: dict[tuple, str] = {}
    fresh: dict[str, list[Label]] = {}  # package -> its targets analysed this time
    edges, targets, declared, target_actions = graph.edges, graph.targets, result.declared, result.target_actions
    for label in order:
        deps = edges[label]
        if failed and (label in failed or any(d in failed for d in deps)):
            failed.add(label)
            continue
        target = targets[label]
        ids = tuple(map(id, deps))
        deps_digest = deps_digests.get(ids)
        if deps_digest is None:
            # `digest.of_value` of the rows, byte for byte (`canonical_rows`): a repository's 10,000 rows
            # encoded by json.dumps, whose options make an encoder per call, cost three times this.
            deps_digest = deps_digests[ids] = digest.of_bytes(digest.canonical_rows([(str(d), info_digests[d])
                                                                                     for d in deps]))
        rec = target.rec if target.__class__ is CachedTarget else None
        if rec is not None and rec.deps_digest == deps_digest and not rec.volatile:
            infos[label] = rec.info
            info_digests[label] = rec.info_digest
            actions = rec.actions
        else:
            if isinstance(target, CachedTarget):
                graph.parse_package(label.package)  # real targets for the whole package
                target = graph.targets[label]
            ctx = contexts[label]
            ctx.expanded = graph.expanded_of(target)
            try:
                infos[label] = target.rule.analyze(ctx, target.attrs)
            except TpbuildError as e:
                errors.append(e)
                failed.add(label)
                continue
            except ValueError as e:  # rules raise ValueError from shared attribute checks
                errors.append(ctx.error((), str(e)))
                failed.add(label)
                continue
            info_digests[label] = info_digest(infos[label])
            actions = [Declared.of(a) for a in ctx.actions]
            result.warnings.extend(ctx.warnings)
            target.deps_digest = deps_digest
            fresh.setdefault(label.package, []).append(label)
            result.reanalysed += 1
            result.reanalysed_packages.add(label.package)
        target_actions[label] = actions
        for d in actions:
            declared[d.id] = d
    # A package with an error is never recorded: its record would lack the broken targets, and the
    # next build would take the package as whole and pass over them silently.
    for package in graph.bad_packages | {lbl.package for lbl in failed}:
        fresh.pop(package, None)
    _remember(cache, graph, fresh, contexts, infos, info_digests, result.target_actions)
    if not errors:
        graph.save_closure(memo / "closure")
    cache.release()
    # The graph keeps `make_context`, and through it every context (a manifest's source, what the
    # rule observed), and its parsed targets their manifests: done with them, so at 10,000 models they
    # do not stay for the whole build.
    contexts.clear()
    for t in graph.targets.values():
        if t.__class__ is not CachedTarget:
            t.release()
    result.warnings[:0] = graph.warnings  # the workspace's (misnamed manifests) before the rules'
    if errors:
        result.errors = list(errors)
        result.requested = [lbl for lbl in requested if lbl not in failed]
        result.order = [lbl for lbl in order if lbl not in failed]
        if not keep_going or not result.requested:
            err = collected(errors)
            err.warnings = tuple(graph.warnings)
            raise err
    return result


def _remember(cache, graph, fresh, contexts, infos, info_digests, declared) -> None:
    """Record every package analysed this time whose targets were all analysed (so the record is whole)."""
    by_package: dict[str, list] = {}
    for t in graph.targets.values() if fresh else ():  # nothing analysed (a no-op): nothing to group
        by_package.setdefault(t.label.package, []).append(t)
    for package in fresh:
        targets = by_package[package]
        if any(getattr(t, "deps_digest", None) is None for t in targets):
            continue  # some target of it was not part of this build: record it next time
        observed = {}
        facts: dict = {}
        read_whole: set = set()
        records = []
        for t in targets:
            ctx = contexts[t.label]
            observed[t.source.path] = sig(str(graph.ws.root / t.source.path))
            observed.update(ctx.observed)
            facts.update(ctx.facts)
            read_whole |= ctx.read_whole
            records.append(TargetRecord(
                label=t.label, rule=t.rule.name, refs=t.references(), keypath=t.keypath, manifest=t.source.path,
                deps_digest=t.deps_digest, actions=declared[t.label], info=infos[t.label],
                info_digest=info_digests[t.label], volatile=ctx.volatile))
        # A file some target of the package read whole is watched by its stat alone.
        cache.put(package, observed, records, {p: f for p, f in facts.items() if p not in read_whole})
    cache.save()
