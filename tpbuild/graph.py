"""The target graph: which targets a set of patterns names, and what they depend on.

Packages are loaded on demand (those the patterns cover, then those their dependencies live in), so a
build of one model never parses the manifests of unrelated ones. Edges come from label-valued
attributes; the graph knows nothing about what rules do with them. Cycles and dangling labels are
reported with the whole cycle or the manifest line naming the missing target, before any work starts.

Errors in manifests, patterns and dependencies are collected rather than raised (`errors`), so one run
reports every independent one; a target that could not be read is `broken`, and a target that
depends on a broken or missing one is `blocked` (its own error would only repeat the cause).
"""

from __future__ import annotations

from functools import cached_property
from itertools import accumulate, chain
from pathlib import Path
from operator import attrgetter

from . import digest, memo, tomlsource
from .analysiscache import AnalysisCache, PackageRecord, TargetRecord
from .errors import TpbuildError, UserError, at
from .label import Label, Pattern
from .layout import packed, packed_text, unpacked
from .rulesets import RuleSets
from .workspace import Workspace

TYPE_CHECKING = False  # as `typing` has it, whose import cost every build 0.8% of a no-op's instructions at 2,000 models
if TYPE_CHECKING:  # imported when a manifest is parsed: it brings pydantic, which the memo's targets do not need
    from . import manifest

# Labels sorted by this key sort as Label's own order, comparing tuples in C: sorting 10,000 labels
# through the dataclass's __lt__ made 360,000 Python calls (a tenth of the analysis of a no-op build).
BY_LABEL = attrgetter("package", "name")

CLOSURE_KIND, CLOSURE_VERSION = "closure", 2  # the closure memo, in the workspace's memo directory (`close`)


class CachedTarget:
    """A target known from the analysis cache: enough for the graph, without parsing its manifest."""

    def __init__(self, rec: TargetRecord, rules, root):
        self.rec = rec
        self.label = rec.label
        self.keypath = rec.keypath
        self._rules = rules
        self._root = root

    @cached_property
    def rule(self):  # imports the rule sets: only what reports on targets needs it (query, affected)
        return self._rules[self.rec.rule]

    def references(self) -> list:
        return self.rec.refs

    @cached_property
    def source(self) -> tomlsource.TomlSource:  # only for error messages
        return tomlsource.load(self._root / self.rec.manifest, self.rec.manifest)


class TargetGraph:
    """Edges live in plain dicts on the hot path; networkx gets the graph for queries and DOT."""

    def __init__(self, ws: Workspace, rules: RuleSets, make_context, cache: AnalysisCache | None = None):
        self.ws = ws
        self.rules = rules
        self._make_context = make_context
        self.cache = cache
        self._rule_names = frozenset(rules.identity["names"])  # what `rules` contains
        self.targets: dict[Label, manifest.Target | CachedTarget] = {}
        self._loaded: set[str] = set()
        self._load_order: list[str] = []  # the packages loaded, in the order they were (the closure memo's key)
        self._gens: dict[str, str] = {}  # package -> the generation of the record it was loaded from
        self._closed: tuple | None = None  # what `close` found, for `closure` to record
        self._by_id: dict[int, int] | None = None  # id of a target's label -> its position (`_indices`)
        self._declared: dict[str, list[Label]] = {}  # package -> the labels of its targets, once loaded
        self._all_packages: list[str] | None = None
        self.walked: list[tuple[str, tuple]] = []  # directories package discovery looked into, with their sig
        self.edges: dict[Label, list[Label]] = {}  # target -> its dependencies, in attribute order
        self.expanded: dict[Label, dict[Pattern, list[Label]]] = {}  # pattern attributes, resolved
        self.from_memo = False  # the closure was the one recorded (`close`)
        self.keep_going = False  # a command-line pattern matching nothing is then a warning, not an error
        self.errors: list[TpbuildError] = []
        self.warnings: list[str] = []
        self.broken: set[Label] = set()  # declared, but their table is wrong (the error is in `errors`)
        self.blocked: set[Label] = set()  # depend on something broken or missing
        self.bad_packages: set[str] = set()  # packages with an error: never recorded in the analysis cache
        self.unreadable: set[str] = set()  # packages whose manifest as a whole is wrong: no target is known

    @cached_property
    def graph(self):
        import networkx as nx

        g = nx.DiGraph()
        for lbl, deps in self.edges.items():
            g.add_node(lbl)
            g.add_edges_from((lbl, d) for d in deps)
        return g

    @property
    def all_packages(self) -> list[str]:
        if self._all_packages is None:
            misnamed: list[str] = []
            self._all_packages = self.ws.packages(self.walked, misnamed)
            if self.cache is not None:
                self.cache.seen = dict(self.walked)
            self.warnings.extend(f"{m} is not read: only files named exactly BUILD.toml declare targets; "
                                 "rename it" for m in misnamed)
        return self._all_packages

    @property
    def loaded_packages(self) -> set[str]:
        return self._loaded

    def load_package(self, package: str) -> None:
        if package in self._loaded:
            return
        self._loaded.add(package)
        self._load_order.append(package)
        rec = self._valid(package)
        if rec is None:
            self.parse_package(package)
            return
        self._gens[package] = rec.gen
        labels = self._declared[package] = []
        targets, rules, root = self.targets, self.rules, self.ws.root
        for tr in rec.targets:
            label = tr.label
            targets[label] = CachedTarget(tr, rules, root)
            labels.append(label)

    def _valid(self, package: str) -> PackageRecord | None:
        """The package's analysis record, if it is valid and of rules that exist."""
        rec = self.cache.valid(package) if self.cache is not None else None
        if rec is None:
            return None
        names = self._rule_names
        for t in rec.targets:  # a loop and a frozenset, not a generator and `RuleSets.__contains__` (10,000 records)
            if t.rule not in names:
                return None
        return rec

    def parse_package(self, package: str) -> list[manifest.Target]:
        """Parse and validate a manifest for real (also to re-analyse a package known from the cache)."""
        from . import manifest

        found: list[tuple[Label | None, TpbuildError]] = []
        try:
            targets = manifest.load_package(self.ws.root, package, self.rules, self._make_context, found)
        except TpbuildError as e:  # the manifest as a whole (TOML syntax, encoding)
            targets, found = [], [(None, e)]
            self.unreadable.add(package)
        for label, e in found:
            self.errors.append(e)
            self.bad_packages.add(package)
            if label is not None:
                self.broken.add(label)
        if not targets and not found:
            rel = f"{package}/BUILD.toml" if package else "BUILD.toml"
            self.warnings.append(f"{rel} declares no targets: add a [<rule>.<name>] table, or delete the file")
        for t in targets:
            self.targets[t.label] = t
        self._declared[package] = [t.label for t in targets]
        return targets

    def match(self, p: Pattern) -> set[Label]:
        """Load the packages a pattern covers and return the targets it names."""
        if p.recursive:
            pkgs = [k for k in self.all_packages if p.covers(k)]
            if not pkgs and not p.negative:
                raise UserError(f"pattern {p} matches no package: no BUILD.toml at or below "
                                f"{p.package or 'the workspace root'}")
        else:
            if p.package not in self.all_packages:
                raise UserError(f"no package {p.package or '(root)'}: "
                                f"{p.package + '/' if p.package else ''}BUILD.toml does not exist")
            pkgs = [p.package]
        if self.cache is not None and len(pkgs) > 1:
            self.cache.check_all([k for k in pkgs if k not in self._loaded])
        matched: set[Label] = set()
        for k in pkgs:
            self.load_package(k)
            matched.update(self._declared.get(k, ()))
        if not p.recursive:
            matched = {lbl for lbl in matched if p.matches(lbl)}
        if p.name is not None and not matched and not p.negative and Label(p.package, p.name) not in self.broken:
            declared = sorted(l.name for l in self.targets if l.package == p.package)
            raise UserError(f"no target {p}: {p.package or 'the root package'} declares "
                            f"{', '.join(declared) or 'no targets'}")
        return matched

    def expand(self, patterns: list[Pattern]) -> list[Label]:
        """Labels the patterns name: the union of the positive ones minus the negative ones."""
        if not any(not p.negative for p in patterns):
            raise UserError("no target pattern given: e.g. tpbuild build //...")
        chosen: set[Label] = set()
        for p in patterns:
            try:
                matched = self.match(p)
            except UserError as e:
                self._pattern_problem(e.message)
                continue
            if p.negative:
                chosen -= matched
            else:
                chosen |= matched
                if not matched and not any(p.matches(b) for b in self.broken) and \
                        not any(p.matches(Label(pkg, p.name or "_")) for pkg in self.bad_packages):
                    self._pattern_problem(f"pattern {p} matches no target")  # as Bazel: nothing built is no success
        return sorted(chosen, key=BY_LABEL)

    def _pattern_problem(self, message: str) -> None:
        if self.keep_going:
            self.warnings.append(message)
        else:
            self.errors.append(UserError(message))

    def deps(self, t: manifest.Target) -> list[Label]:
        """A target's dependencies: its labels, and what its pattern attributes match (never itself)."""
        out: list[Label] = []
        for ref in t.references():
            if isinstance(ref, Pattern):
                try:
                    matched = sorted(self.match(ref) - {t.label}, key=BY_LABEL)
                except UserError as e:
                    raise UserError(e.message, at(t.source.path, t.source.line_of(t.keypath))) from None
                self.expanded.setdefault(t.label, {})[ref] = matched
                out.extend(matched)
            else:
                out.append(ref)
        return out

    def close(self, roots: list[Label], recorded: Path | None = None) -> list[Label]:
        """Add every dependency of `roots`, check it exists, reject cycles; return a dependency-first order.
        `recorded`: the closure memo (`save_closure`), taken instead when it is of the same records."""
        if recorded is not None:
            rec = memo.load(recorded, CLOSURE_KIND, CLOSURE_VERSION)
            order = self._recorded(roots, rec) if isinstance(rec, dict) else None
            self._gens = {}  # read by `_recorded` alone
            if order is not None:
                return order
        start = len(self._load_order)
        stack = list(roots)
        seen = set(roots)
        while stack:
            lbl = stack.pop()
            t = self.targets[lbl]
            try:
                deps = self.edges[lbl] = self.deps(t)
            except UserError as e:
                self.errors.append(e)
                self.blocked.add(lbl)
                deps = self.edges[lbl] = []
            for dep in list(deps):
                if dep not in self.targets:
                    try:
                        self._require(t, dep)
                    except UserError as e:
                        self.errors.append(e)
                    if dep not in self.targets:  # missing or broken: analysed as nothing
                        self.blocked.add(lbl)
                        deps.remove(dep)
                        continue
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        graph = {lbl: self.edges[lbl] for lbl in sorted(seen, key=BY_LABEL)}
        order = _static_order(graph)
        if order is None:
            cycle = _cycle(graph)
            first = self.targets[cycle[0]]
            raise UserError(f"dependency cycle: {' -> '.join(map(str, cycle))}; remove one of these dependencies",
                            at(first.source.path, first.source.line_of(first.keypath)))
        self._closed = (roots, order, start)
        return order

    # The closure memo. Closing 10,000 targets (each one's dependencies looked up, the repository's pattern
    # matched against every package, the order sorted out) was a fifth of the analysis of a build whose
    # records are all valid, and it is a function of the roots, of the loaded packages' records (each
    # target's references) and of the workspace's packages (a pattern attribute, `//models/...`, matches
    # among them: a new model package joins the repository whose records are all unchanged). So the
    # closure of a build without errors is recorded with the generation of each record it was made of
    # (`PackageRecord.gen`) and the packages discovered, and taken again while the same records make the
    # graph among the same packages.

    def _key(self, packages: list[str], gens: list) -> str | None:
        """The packages loaded, their records' generations and the workspace's packages; None when one
        was not loaded from a record. The three lists' lengths, then their
        texts joined by NULs, which no path holds (nor a generation: one that does is no record's), so
        that no other lists join the same: 30,000 texts at 10,000 models, which `digest.of_value` took
        6 ms to encode as JSON."""
        texts = (packages, gens, self.all_packages)
        if None in gens or "" in gens or "\0" in "".join(gens):  # generations are text (`analysiscache._record`)
            return None
        head = ",".join(map(str, map(len, texts)))
        return digest.of_bytes("\0".join([head, *chain.from_iterable(texts)]).encode(errors="surrogatepass"))

    def closure(self) -> dict | None:
        """What `close` found, for a memo (`memo.save`), once every package it loaded is recorded (call it
        after the records are put); None when there is nothing to record: an error, a package without a
        record, or the closure was taken from the memo."""
        if self._closed is None or self.errors or self.blocked or self.cache is None:
            return None
        roots, order, start = self._closed
        self._by_id = None
        records = [self.cache.record(p) for p in self._load_order]  # as recorded now, after this analysis
        if None in records:
            return None
        key = self._key(self._load_order[:start], [r.gen for r in records[:start]])
        then, gens = self._load_order[start:], records[start:]
        if key is None or "" in (r.gen for r in gens):
            return None
        edges = self.edges
        lists = [edges[lbl] for lbl in order]
        return {"key": key, "then": [[p, r.gen] for p, r in zip(then, gens)], "targets": len(self.targets),
                "roots": packed_text(packed(self._indices(roots), "I")),
                "order": packed_text(packed(self._indices(order), "I")),
                "starts": packed_text(packed([0, *accumulate(map(len, lists))], "I")),
                "deps": packed_text(packed(self._indices([d for deps in lists for d in deps]), "I"))}

    def _indices(self, labels: list[Label]) -> list[int]:
        """Each label's position among the targets: by the object where it is the target's own (the
        analysis memo makes one object of a label, `AnalysisCache._shared`), an int's hash and not a
        Label's (a Python call: 60,000 of them were most of recording 10,000 targets' closure)."""
        if self._by_id is None:
            self._by_id = {id(lbl): i for i, lbl in enumerate(self.targets)}
        by_id = self._by_id
        out = [by_id.get(id(lbl)) for lbl in labels]
        if None in out:  # an equal label, not the same object (a parsed manifest's)
            index = {lbl: i for i, lbl in enumerate(self.targets)}
            out = [index[lbl] for lbl in labels]
        return out

    def save_closure(self, path: Path) -> None:
        """Record the closure (`closure`) in the memo at `path`, unless there is nothing to record."""
        closure = self.closure()
        if closure is not None:
            warning = memo.save(path, CLOSURE_KIND, CLOSURE_VERSION, closure, path.parent / "tmp", "the closure memo")
            if warning is not None:
                self.cache.warnings.append(warning)

    def _recorded(self, roots: list[Label], rec: dict) -> list[Label] | None:
        """The recorded closure (`closure`) if the graph is made of the records it was made of: those the
        patterns loaded, and those the closing loaded beyond them (loaded here, each from its record, when
        every one is the recorded one; else nothing is loaded and None is returned: the closing loads
        what it needs, as without the memo)."""
        if self.errors or self.blocked or self.broken:
            return None
        if rec.get("key") != self._key(self._load_order, [self._gens.get(p) for p in self._load_order]):
            return None
        try:
            then = [(p, self._valid(p)) for p, gen in rec["then"] if p not in self._loaded]
            if len(then) != len(rec["then"]) or any(r is None or r.gen != gen for (_, r), (_, gen)
                                                     in zip(then, rec["then"])):
                return None
            if then and not (len({p for p, _ in then}) == len(then) and {p for p, _ in then} <= set(self.all_packages)):
                return None
            n = len(self.targets) + sum(len(r.targets) for _, r in then)
            if rec["targets"] != n:
                return None
            order, req = unpacked(rec["order"], "I"), unpacked(rec["roots"], "I")
            starts, flat = unpacked(rec["starts"], "I"), unpacked(rec["deps"], "I")
            if len(starts) != len(order) + 1 or starts[-1] != len(flat) or max(order, default=0) >= n \
                    or max(flat, default=0) >= n:
                return None
            labels = list(self.targets)
            if [labels[i] for i in req] != roots:  # an index past them: an IndexError
                return None
        except (KeyError, TypeError, ValueError, IndexError):
            return None
        for package, r in then:
            self._loaded.add(package)
            self._load_order.append(package)
            names = self._declared[package] = []
            for tr in r.targets:
                self.targets[tr.label] = CachedTarget(tr, self.rules, self.ws.root)
                names.append(tr.label)
                labels.append(tr.label)
        order = [labels[i] for i in order]
        deps = [labels[i] for i in flat]
        edges = self.edges
        for i, lbl in enumerate(order):
            edges[lbl] = deps[starts[i]:starts[i + 1]]
        self.from_memo = True
        return order

    def expanded_of(self, target) -> dict[Pattern, list[Label]]:
        """A target's pattern attributes, resolved (a closure from the memo resolved none)."""
        if target.label not in self.expanded and self.from_memo:
            self.deps(target)
        return self.expanded.get(target.label, {})

    def _require(self, t: manifest.Target, dep: Label) -> None:
        if dep.package in self.all_packages:
            self.load_package(dep.package)
        if dep not in self.targets and dep not in self.broken and dep.package not in self.unreadable:
            line = t.source.line_of(t.keypath)
            if not isinstance(t, CachedTarget):  # parsed: the line of the attribute naming it
                from .manifest import _collect_labels

                for name in type(t.attrs).model_fields:
                    found: list[Label] = []
                    _collect_labels(getattr(t.attrs, name), found)
                    if dep in found:
                        line = t.source.line_of((*t.keypath, name))
                        break
            where = "its package has no BUILD.toml" if dep.package not in self.all_packages else \
                f"{dep.package or 'the root package'} declares no target {dep.name!r}"
            raise UserError(f"{t.label} depends on {dep}, which does not exist: {where}", at(t.source.path, line))


def _static_order(graph: dict[Label, list[Label]]) -> list[Label] | None:
    """`graphlib.TopologicalSorter(graph).static_order()`, the same order, without its per-node objects and
    calls (a third of closing 10,000 targets); None when the graph has a cycle (graphlib then names it)."""
    nodes: dict[Label, list] = {}  # node -> [dependencies not yet ordered, dependents], in graphlib's order
    for lbl, deps in graph.items():
        info = nodes.setdefault(lbl, [0, []])
        info[0] += len(deps)
        for d in deps:
            nodes.setdefault(d, [0, []])[1].append(lbl)
    ready = [n for n, info in nodes.items() if info[0] == 0]
    order: list[Label] = []
    while ready:
        order += ready
        group, ready = ready, []
        for n in group:
            for m in nodes[n][1]:
                info = nodes[m]
                info[0] -= 1
                if info[0] == 0:
                    ready.append(m)
    return order if len(order) == len(nodes) else None


def _cycle(graph: dict[Label, list[Label]]) -> list[Label]:
    """A cycle of a graph that has one, each target followed by one it depends on."""
    import graphlib  # here: only a graph with a cycle needs it (`_static_order` orders the others)

    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        # graphlib lists each node before the one depending on it; read "depends on" the other way.
        return list(reversed(e.args[1]))
    raise ValueError("the graph has no cycle")
