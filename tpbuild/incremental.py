"""A delta build: a build after an edit of sources only, answered as a change to the last build.

The ordinary path costs the workspace in every phase (each package's analysis record, each action's
key, each target's placement, the memos), whatever the edit. Like ninja, which answers an edit from
its log and the stat pass, a build whose no-op stamp (`noop.py`) missed only on files actions read
takes the last build's graph as it was and works the part downstream of them:

- The stamp's check names its differences by group (`noop.Stamp.differences`). A delta build is
  taken only when each is a source an action reads, a file the analysis memo knows by its facts (a
  model.py, checked again below), a blob or a placed file the stamp recorded unproven (racy: fresh
  from the last build): a blob is hashed again (a small one, else the ordinary path), a placed file's
  target is placed again (placement checks it against the build state). Anything else (tpbuild.toml,
  a manifest, a directory package discovery or a rule looked into, a placed directory, code, the
  import path, a source gone, a blob gone or changed, a placed file changed) takes the ordinary path.
- The analysis is then the last one by construction, except where a changed file is one the
  analysis memo watches: its package's record is checked as the ordinary path checks it
  (`AnalysisCache.valid`: a model.py whose facts are unchanged keeps it), and the build takes the
  ordinary path if it does not hold.
- The graph it needs comes from a memo beside the stamp (`remember`, written with it under the same
  generation, or kept, generation and all, by a stamp of the same content: `remembered`): which
  actions read each source, which read each action's result, each target's actions (in build order)
  and output. Only the targets of the actions downstream of the changes are
  decoded from the analysis memo (their packages' records); the actions they read from outside that
  part (the boundary) are settled from the build state, unkeyed (their inputs did not move: the
  stamp proved it) and unchecked in the store (the stamp proved their blobs).
- Those targets' actions then go through the ordinary build (`build.run`: delta settling, the
  scheduler with early cutoff, the caches, placement of their outputs, the memos, appended as they
  are), and the stamp is patched with the stats the build used (`noop.Stamp.patch_with`), not
  written again: at 10,000 models it is 13 MB.

A failed build or one with warnings leaves no stamp, as on the ordinary path. What is reported for
the untouched part (the summary's counts, `--report`'s targets and actions) comes from the same
memo, and the build state's keys.
"""

from __future__ import annotations

import os
import re
import time
from bisect import bisect_right
from functools import cached_property
from itertools import accumulate, chain, compress, repeat
from operator import attrgetter, is_, itemgetter
from types import SimpleNamespace

from . import memo as memofile
from .analysiscache import Declared
from .layout import OUT_DIR, RACY_WINDOW_NS, STATE_DIR, packed, packed_text, positions, stat_at, unpacked

KIND, VERSION = "noop-graph", 7
GRAPH = "noop-graph"  # beside the stamp
SMALL_BLOB = 1 << 20  # an unproven blob up to this size is hashed again; a larger one: the ordinary path


class Walk:
    """The build's actions in one list (`flat`), walked for what reads what: the sources (`sources`: each
    path once, in the order actions read them), which the stamp records (`noop.Stamp.record`), and only
    when the graph is drawn (`drawn`), the indices of the actions that read each (`readers`) and the
    readers of each action's result (`consumers`): a stamp that keeps the graph memo it had
    (`remembered`) needs the sources alone, which settling the actions found (`delta.Premise.paths`:
    no walk of the 20,000 actions' inputs at 10,000 models, a tenth of writing the stamp), else found
    here in C."""

    def __init__(self, result, sources: list[str] | None = None):
        self._analysis = result.analysis
        if sources is not None:
            self.sources = sources

    @cached_property
    def declared(self) -> list[list]:
        """`Analysis.declared_of` of each target in the build order, in C: the mapping's own order when it
        is the build order (a label's hash is a Python call: 10,000 of them cost as much as the walk of
        the inputs)."""
        a = self._analysis
        actions = a.target_actions
        return list(actions.values()) if list(actions) == a.order else list(map(actions.__getitem__, a.order))

    @cached_property
    def flat(self) -> list:
        """Actions by their index in one list (their ids are written once: at 10,000 models the memo was
        twice as large with them in every reference)."""
        return list(chain.from_iterable(self.declared))

    @cached_property
    def sources(self) -> list[str]:
        from .action import Source

        inputs = list(map(itemgetter(1), chain.from_iterable(map(attrgetter("inputs"), self.flat))))
        sourced = map(is_, map(type, inputs), repeat(Source))
        return list(dict.fromkeys(map(attrgetter("path"), compress(inputs, sourced))))

    @cached_property
    def readers(self) -> dict[str, list[int]]:
        """Of each source (in the order of `sources`), the indices of the actions that read it."""
        from .action import Source

        readers: dict[str, list[int]] = {}
        for i, d in enumerate(self.flat):
            for _dest, inp in d.inputs:
                if inp.__class__ is Source:
                    readers.setdefault(inp.path, []).append(i)
        return readers

    def consumers(self, actions: list[str]) -> list[list[int]]:
        """Of each action (`actions`: their ids, in order), the actions that read its result."""
        from .action import Source

        index = dict(zip(actions, range(len(actions))))
        consumers = [[] for _ in actions]
        for i, d in enumerate(self.flat):
            for _dest, inp in d.inputs:
                if inp.__class__ is not Source:
                    consumers[index[inp.action]].append(i)
        return consumers


def drawn(result, walk: Walk, records: list, parts: list[tuple[str, str]]) -> dict:
    """The graph a delta build after this one needs (see the module docstring), as the memo holds it
    but for its generation, its stamp's digest and roles (`remember`), drawn from the build's `result`
    and the walk of its actions (`Walk`), and what `noop.Stamp.record` walked: `records`, (package,
    analysis memo record) of each package the build loaded; `parts`, (record, tree digest) of each part
    of a composed output in the build state."""
    a = result.analysis
    order = a.order
    # The targets by column: label, package, output directory ("" for none), and the first of their
    # actions (a run of the list). Column by column, in C where it can (a loop over the targets
    # building each cost half again as much).
    flat, readers = walk.flat, walk.readers
    actions = list(map(attrgetter("id"), flat))
    packages = list(map(attrgetter("package"), order))
    infos = a.infos
    first = [0, *accumulate(map(len, walk.declared))]
    row = dict(zip(reversed(packages), range(len(packages) - 1, -1, -1)))  # a package -> its first row
    watched: dict[str, list[int]] = {}  # a path -> a row of each package that watches it
    for package, rec in records:
        facts = rec.facts
        for p in rec.observed:
            if p in readers or p in facts:
                watched.setdefault(p, []).append(row[package])
    # Each part of a composed output (a repository's models) by its record in the build state, with the
    # tree digest it holds: what `Checked.holds` knows a part by without its record. (An output a delta
    # build works is read anyway; its parts, 10,000 at 10,000 models, are what it need not read.)
    return {
        "labels": list(map(str, order)), "packages": packages,
        "outputs": [f"{OUT_DIR}/{label.path}" if infos[label].output is not None else "" for label in order],
        "first": packed_text(packed(first, "I")), "actions": actions,
        "mnemonics": list(map(attrgetter("mnemonic"), flat)),
        "readers": [list(readers), *_adjacency(readers.values())], "consumers": _adjacency(walk.consumers(actions)),
        "watched": [list(watched), *_adjacency(watched.values())],
        "trees": [list(map(itemgetter(0), parts)), list(map(itemgetter(1), parts))],
    }


def remember(root, gen: str, stamp: str, roles: list[str], body: dict) -> str | None:
    """Save the graph memo (`drawn`) of the stamp of generation `gen` whose groups hold `roles` and whose
    content (but for its generation) has the digest `stamp` (`remembered`); None when saved, else a
    warning (the stamp is then not written)."""
    path = root / STATE_DIR / GRAPH
    return memofile.save(path, KIND, VERSION, {"gen": gen, "stamp": stamp, "roles": roles, **body},
                         path.parent / "tmp", "the delta build's graph")


def remembered(root, stamp: str) -> str | None:
    """The generation of the graph memo beside the stamp if it was saved with a stamp of the same content
    (but for the generation) as the one of digest `stamp`, else None. Such a stamp records the same
    inputs at the same stats, none unproven (the caller's condition), so the build it was made of had the
    same analysis and placed the same trees: its graph is this build's, and the new stamp takes its
    generation instead of a graph drawn and saved again (at 10,000 models, 0.1 s of a build without a
    stamp). Read from the memo's first bytes (its generation and digest come first, `remember`), not
    decoded: a memo damaged past them is kept only while no delta build reads it, as one takes the
    ordinary path (`plan`) after a change, which then leaves a stamp of another content."""
    head = memofile.prefix(root / STATE_DIR / GRAPH, KIND, VERSION, 128)
    found = _REMEMBERED.match(head) if head is not None else None
    if found is None or found["stamp"].decode() != stamp:
        return None
    return found["gen"].decode()


# The memo's first bytes as `remember` writes them (`memo.save`: compact JSON, its keys in order).
_REMEMBERED = re.compile(rb'\{"gen":"(?P<gen>[0-9a-f]{16})","stamp":"(?P<stamp>[0-9a-f]{32})",')


def _adjacency(lists) -> list[str]:
    """Lists of indices as two `layout.packed_text`: where each list starts (and the end of the last) in
    the other, all of them one after another. Decoded, two arrays, not an object per index: as lists
    and dicts, the targets' rows and their readers were most of the graph's decoding (0.03 s at
    10,000 models), which each delta build reads to look at a few of them."""
    lists = list(lists)
    return [packed_text(packed([0, *accumulate(map(len, lists))], "I")),
            packed_text(packed(list(chain.from_iterable(lists)), "I"))]


class Graph:
    """The graph memo `remember` wrote, decoded (see there); raises KeyError, TypeError, ValueError or
    IndexError when it is damaged."""

    def __init__(self, data: dict):
        self.labels, self.packages, self.outputs = data["labels"], data["packages"], data["outputs"]
        self.first = unpacked(data["first"], "I")
        self.actions, self.mnemonics, self.trees = data["actions"], data["mnemonics"], data["trees"]
        self._readers, self._watched = _Adjacent(*data["readers"]), _Adjacent(*data["watched"])
        self._consumers = _Adjacent(None, *data["consumers"])
        if not (len(self.labels) == len(self.packages) == len(self.outputs) == len(self.first) - 1
                and self.first[-1] == len(self.actions) == len(self.mnemonics) == len(self._consumers)):
            raise ValueError("a damaged graph memo")

    def __len__(self) -> int:
        return len(self.labels)

    def actions_of(self, t: int) -> range:
        """The indices of target `t`'s actions, in build order."""
        return range(self.first[t], self.first[t + 1])

    def owner(self, i: int) -> int:
        """The target of action `i`."""
        return bisect_right(self.first, i) - 1

    def readers(self, path: str):
        """The actions that read this source."""
        return self._readers.get(path)

    def consumers(self, i: int):
        """The actions that read action `i`'s result."""
        return self._consumers.at(i)

    def watchers(self, path: str) -> list[str] | None:
        """The packages whose analysis memo record watches this path (None: none)."""
        rows = self._watched.get(path)
        return None if rows is None else [self.packages[t] for t in rows]


class _Adjacent:
    """Lists of indices, `_adjacency` packed, each read by its index or by its key in `keys`."""

    def __init__(self, keys: list[str] | None, starts: str, flat: str):
        self.keys = keys
        self.starts, self.flat = unpacked(starts, "I"), unpacked(flat, "I")
        self._index: dict[str, int] | None = None
        if (keys is not None and len(keys) != len(self)) or self.starts[-1] != len(self.flat):
            raise ValueError("a damaged graph memo")

    def __len__(self) -> int:
        return len(self.starts) - 1

    def at(self, i: int):
        return self.flat[self.starts[i]:self.starts[i + 1]]

    def get(self, key: str):
        if self._index is None:
            self._index = dict(zip(self.keys, range(len(self.keys))))
        i = self._index.get(key)
        return None if i is None else self.at(i)


class Plan:
    """What a delta build works: the targets downstream of the changes, and what the stamp's patch needs."""

    def __init__(self, stamp, graph: Graph, targets: set[int], packages: set[str], sources: list[str],
                 watched: list[tuple[str, tuple]], blobs: list[tuple[str, tuple]]):
        self.stamp = stamp
        self.graph = graph
        self.targets = targets  # their rows in the graph memo
        self.packages = packages  # whose records are decoded (and checked)
        self.sources = sources  # changed sources
        self.watched = watched  # changed files the analysis memo knows by their facts, with their stat now
        self.blobs = blobs  # unproven blobs hashed again, with their stat now
        self.analysis = None  # the last build's, of `targets` (see `analyse`)
        self.boundary: set[str] = set()  # the actions they read from outside them: settled from the build state


def plan(stamp) -> Plan | None:
    """The delta build a stamp's miss allows, or None for the ordinary path."""
    from .noop import UNPROVEN

    if stamp.differences is None:
        return None
    memo = memofile.load(stamp.root / STATE_DIR / GRAPH, KIND, VERSION)
    data = stamp.data
    if not isinstance(memo, dict) or memo.get("gen") != data["gen"] or memo.get("roles") != data["roles"]:
        return None
    try:
        graph = Graph(memo)
    except (KeyError, TypeError, ValueError, IndexError):  # a damaged memo: the ordinary path
        return None
    sources, watched, blobs, placed = [], [], [], set()
    rels = None  # an output directory -> its target (for a placed file recorded unproven)
    for gi, found in stamp.differences.items():
        role = data["roles"][gi]
        base, _follow, paths, recorded = data["groups"][gi]
        for i, now in found:
            path = paths[i]
            if role == "sources":
                sources.append(path)
            elif role == "watched":
                if graph.watchers(path) is None:
                    return None  # a manifest, a directory a rule listed: analysis may change
                watched.append((path, now))
            elif stat_at(recorded, i) != UNPROVEN:
                return None  # a blob or a placed file that changed since the build that recorded it
            elif role == "blobs":
                if not _sound(base + path, now):
                    return None
                blobs.append((path, now))
            else:  # placed, fresh from the last build: its target is placed again (checked, see module docstring)
                if rels is None:
                    rels = {rel: t for t, rel in enumerate(graph.outputs) if rel}
                owner = _owner(path, rels)
                if owner is None:
                    return None
                placed.add(owner)
    targets = placed | {graph.owner(i) for p in sources for i in graph.readers(p) or ()}
    todo = list(targets)
    while todo:  # everything downstream: the readers of every action of a target in the delta
        for i in graph.actions_of(todo.pop()):
            for reader in graph.consumers(i):
                t = graph.owner(reader)
                if t not in targets:
                    targets.add(t)
                    todo.append(t)
    packages = {graph.packages[t] for t in targets}
    for p in [*sources, *(p for p, _now in watched)]:
        packages.update(graph.watchers(p) or ())
    return Plan(stamp, graph, targets, packages, sources, watched, blobs)


def _sound(path: str, now: tuple) -> bool:
    """A blob recorded unproven (written within the racy window) still holds what its name says."""
    from . import digest

    if now[0] > SMALL_BLOB:
        return False
    name = os.path.basename(path).removesuffix(".x")
    try:
        return digest.hex_part(digest.of_file(path)) == name
    except OSError:
        return False


def _owner(path: str, rels: dict[str, int]) -> int | None:
    """The target whose output holds this placed path (outputs never nest)."""
    parts = path.split("/")
    for n in range(len(parts) - 1, 0, -1):
        t = rels.get("/".join(parts[:n]))
        if t is not None:
            return t
    return None


def analyse(ws, p: Plan, memo_dir) -> bool:
    """The last build's analysis of the plan's targets (`Plan.analysis`), their packages' records checked
    as the ordinary path checks them; False when one does not hold (or the rule sets changed): the
    ordinary path."""
    from .analysis import Analysis
    from .analysiscache import AnalysisCache, fingerprint, recorded_identity
    from .rulesets import rule_sets
    from .workspace import WORKSPACE_FILE

    recorded = recorded_identity(memo_dir / "analysis")
    rules = rule_sets(memo_dir, recorded)
    if rules.identity is not recorded:
        return False  # the rule sets are not those the memo was made with
    cache = AnalysisCache(memo_dir / "analysis", fingerprint(ws.root, (ws.root / WORKSPACE_FILE).read_bytes()),
                          rules.identity, ws.root, ws.observed, lazy=True)
    records = {}
    for package in p.packages:
        rec = cache.valid(package)
        if rec is None:
            return False
        records.update((str(t.label), t) for t in rec.targets)
    labels = p.graph.labels
    if not all(labels[t] in records for t in p.targets):
        return False
    order, infos, target_actions, declared = [], {}, {}, {}
    for row in sorted(p.targets):  # in build order, as the graph memo has them
        t = records[labels[row]]
        order.append(t.label)
        infos[t.label] = t.info
        target_actions[t.label] = t.actions
        declared.update((d.id, d) for d in t.actions)
    boundary = {u for d in list(declared.values()) for u in d.upstream() if u not in declared}
    for u in boundary:  # read from, not worked: settled from the build state (see the module docstring)
        declared[u] = _Boundary(u, "", "", (), "", "")
    p.analysis = Analysis(SimpleNamespace(cache=cache), [], order, infos, declared, target_actions)
    p.boundary = boundary
    cache.save()  # a record whose files moved with the same facts, kept with their stats (AnalysisCache.valid)
    return True


class _Boundary(Declared):
    """An action the delta build reads from without working it (`analyse`): settled as the build state
    records it, never keyed, so declared without its definition or text. What asks for the action
    itself (to key it, run it or name it) cannot have it from here: that is a build this one cannot
    answer, and it raises `delta.Unsettled`, for the ordinary path to build, not the error of a
    damaged memo record that decoding its empty text would give."""

    __slots__ = ()

    @property
    def action(self):
        from .delta import Unsettled

        raise Unsettled(f"{self.id} is read from, not analysed, in this delta build")


class Checked:
    """The stamp's stat groups as its check saw them (`noop.Stamp.differences`), by role: what proves a
    placed tree intact (`outputs.Proof`: `intact`, `holds`), and what the stamp's patch must change
    (`patch`)."""

    def __init__(self, stamp, graph: Graph):
        self.stamp = stamp
        self.graph = graph  # the graph memo the delta build was planned on (`plan`)
        self._groups = {role: gi for gi, (role, g) in enumerate(zip(stamp.data["roles"], stamp.data["groups"]))
                        if g[1] is not None}
        self._index: dict[str, dict[str, int]] = {}
        self._now: dict[str, dict[int, tuple]] = {}
        self._trees: dict[str, str] | None = None  # record -> the tree digest the last build placed there
        self._touched: set[str] = set()  # the records at or above a path whose stat the check found changed
        self._dirs: bytes | None = None  # the linked files' directory indices, packed (`_linked`)

    def _view(self, role: str) -> tuple[dict[str, int], list[int], dict[int, tuple]]:
        gi = self._groups[role]
        paths, recorded = self.stamp.data["groups"][gi][2:]
        if role not in self._index:
            self._index[role] = dict(zip(paths, range(len(paths))))
            self._now[role] = dict(self.stamp.differences.get(gi, ()))
        return self._index[role], recorded, self._now[role]

    def _linked(self, path: str) -> int | None:
        """The index of a file among the stamp's linked files (`noop._Linked`), None if it is not one: one
        in its directory (by index) of its name, its directory's found by a search of the packed indices'
        bytes, in C (a table of the 60,000 of them at 10,000 models took 0.01 s, for a few questions)."""
        group = self.stamp.data["groups"][self._groups["linked"]]
        if self._dirs is None:
            self._dirs = group[5].tobytes()
            self._index["names"] = dict(zip(group[2], range(len(group[2]))))
        parent, _, name = path.rpartition("/")
        d, n = self._view("placed_dirs")[0].get(parent), self._index["names"].get(name)
        if d is None or n is None:
            return None
        return next((j for j in positions(self._dirs, "I", d) if group[3][j] == n), None)

    def _placed(self, path: str, now: bool) -> tuple | None:
        """The stat the stamp holds for a placed file (`now`: as its check found it), None if it holds none:
        from the placed group, where a delta build's patch puts a file placed again, else the linked one."""
        index, recorded, found = self._view("placed")
        i = index.get(path)
        if i is not None:
            return (now and found.get(i)) or stat_at(recorded, i)
        j = self._linked(path)
        if j is None:
            return None
        return (now and self.stamp.linked.get(j)) or self.stamp.linked_stat(j)

    def unsettled(self, role: str, paths) -> set[str]:
        """Of `paths`, those the stamp's group of this role does not hold, or whose stat its check found
        changed (an entry recorded unproven among them): all a patch may have to say of them, unless the
        build changed them itself."""
        index, _recorded, _now = self._view(role)
        paths = set(paths)
        return paths.difference(index) | (self.differed(role) & paths)

    def intact(self, rel: str, rec: tuple) -> bool:
        """`outputs.Proof.intact`: a placed tree is intact as the build state records it when the check
        found each of its files and directories at the lstat the state records (it lstat'ed every placed
        path: those it found unchanged are at the stamp's stat, the others differed, unproven, and it
        kept their stat now)."""
        from .noop import placed_paths

        files, dirs = placed_paths(rel, rec)
        if any(self._placed(path, True) != tuple(s) for path, s in files):
            return False
        index, recorded, now = self._view("placed_dirs")
        for path, s in dirs:
            i = index.get(path)
            if i is None or (now.get(i) or stat_at(recorded, i)) != tuple(s):
                return False
        return True

    def vouch(self, kinds: list[str], targets: list[str], dirs: list[str]) -> None:
        """`outputs.Proof.vouch`: nothing, each tree is asked of alone (`intact`: a delta build asks of few)."""
        return None

    def holds(self, rel: str, digest: str) -> bool:
        """`outputs.Proof.holds`: the graph memo (or the stamp's patch since) has the tree at `rel` at
        this digest, and the check found none of the paths at or below it changed (a file or a
        directory unproven, a linked file its proof did not cover): every one of them is as it was when
        that tree was placed, so it still holds that tree. Its record in the build state is not read (a
        delta build at 10,000 models placing one model of a repository does not decode the 10,000
        others)."""
        if self._trees is None:
            try:
                trees = dict(zip(*self.graph.trees))
                trees.update(self.stamp.patch["trees"] if self.stamp.patch is not None else {})
            except (KeyError, TypeError, ValueError):  # a damaged memo: nothing is known this way
                trees = {}
            for path in self.differed("placed") | self.differed("placed_dirs"):
                self._touched.add(path)
                while "/" in path:
                    path = path.rpartition("/")[0]
                    self._touched.add(path)
            self._trees = trees
        return rel not in self._touched and self._trees.get(rel) == digest

    def differed(self, role: str) -> set[str]:
        """The paths of a group (of the placed files: with the linked ones) whose stat the check found
        changed: an entry recorded unproven among them."""
        _index, _recorded, now = self._view(role)
        groups = self.stamp.data["groups"]
        found = set(map(groups[self._groups[role]][2].__getitem__, now))
        if role == "placed":
            from .noop import linked_path

            linked, dirs = groups[self._groups["linked"]], groups[self._groups["placed_dirs"]][2]
            found.update(linked_path(linked, dirs, j) for j in self.stamp.linked)
        return found

    def changed(self, role: str, items) -> tuple[int, list[str], list[int], list[int | None]]:
        """Of (path, stat) items, those the stamp does not hold at that stat, with their index in the
        role's group (None for one it lacks): its patch of that group (`noop.Stamp.patch_with`)."""
        index, recorded, _now = self._view(role)
        paths, stats, indices = [], [], []
        for path, s in items:
            i = index.get(path)
            if i is None and role == "placed":
                if self._placed(path, False) == tuple(s):
                    continue  # a linked file as it was; placed again, it goes to the placed group
            elif i is not None and stat_at(recorded, i) == tuple(s):
                continue
            paths.append(path)
            stats += s
            indices.append(i)
        return self._groups[role], paths, stats, indices


def patch(p: Plan, checked: Checked, result, cache_dir) -> None:
    """Amend the stamp with what this delta build used (see `noop.Stamp.patch_with`): the stats of the
    changed sources and files, of new blobs, of what was placed again, and the digests of the trees
    placed again; or remove it when the build leaves none (a failure, a warning).

    From the differences only: of the blobs the worked actions name, only those the stamp does not
    hold and those its check found changed are looked at; of tpbuild-out, the records the build placed
    (`outputs.Placed.placed_now`: of a repository whose one model changed, that model's part and the
    repository's own record, not its 50,000 paths at 10,000 models) and the paths the check found
    changed, at the stat the record holding them has now (placement proved them by it, or placed them
    again). Any other is in the stamp at the stat the check found it at, which is the one the build used."""
    from .cas import Cas
    from .noop import proof

    stamp = p.stamp
    if not result.success or result.warnings or result.cache:
        stamp.forget()
        return
    horizon = time.time_ns() - RACY_WINDOW_NS

    def stat(s) -> list[int]:
        return list(proof(s, horizon))

    peek = result.statcache.peek
    cas = Cas(cache_dir)
    named = {cas.path_text(d, exe) for aid, o in result.outcomes.items() if aid not in p.boundary
             for d, exe in o.blobs()}
    placed, dirs, trees = [], [], {}
    for k, (digest, files, ds) in result.placed.placed_now():
        trees[k] = digest
        placed += ((f"{k}/{path}", stat(s)) for path, (_kind, _d, s) in files.items())
        # A file's proof of its stat (the racy window); a directory's is exempt (see noop._groups).
        dirs += ((f"{k}/{path}" if path else k, list(s)) for path, s in ds.items())
    for role, out in (("placed", placed), ("placed_dirs", dirs)):
        for path in sorted(checked.differed(role)):
            held = result.placed.holding(path)
            if held is None or held[0] in trees:
                continue  # no record holds it (it is gone: the next check finds it so), or placed again above
            k, (_digest, files, ds) = held
            sub = path[len(k) + 1:]
            if role == "placed" and sub in files:
                out.append((path, stat(files[sub][2])))
            elif role == "placed_dirs" and sub in ds:
                out.append((path, list(ds[sub])))
    changes = {
        "sources": [(path, stat(peek(path))) for path in p.sources],
        "watched": [(path, stat(now)) for path, now in p.watched],
        "blobs": [*((path, stat(now)) for path, now in p.blobs),
                  *((path, stat(peek(path))) for path in sorted(checked.unsettled("blobs", named)))],
        "placed": placed,
        "placed_dirs": dirs,
    }
    groups = [checked.changed(role, items) for role, items in changes.items()]
    if stamp.patch_with({gi: entries for gi, *entries in groups if entries[0]}, trees) is not None:
        stamp.forget()  # not saved (a full disk): the next build takes the ordinary path


def report_rows(p: Plan, result, cache_dir):
    """For `--report`: every action of the build, in build order, as (target, mnemonic, outcome), the
    untouched ones as cached under their recorded key; every target's result; the count of targets."""
    from .build import TargetStatus
    from .outputs import BuildState, cache_id
    from .scheduler import Outcome, Status

    state = BuildState.load(p.stamp.root / STATE_DIR / "state", cache_id(cache_dir))
    worked = {str(label): label for label in p.analysis.order}
    rows, targets = [], {}
    g = p.graph
    actions, mnemonics = g.actions, g.mnemonics
    for t, (label, rel) in enumerate(zip(g.labels, g.outputs)):
        acts = g.actions_of(t)
        if label in worked:
            t = result.targets[worked[label]]
            targets[label] = {"status": t.status.value, "outputs": t.outputs}
            rows += ((label, mnemonics[i], result.outcomes[actions[i]]) for i in acts)
            continue
        targets[label] = {"status": TargetStatus.BUILT.value, "outputs": [rel] if rel else []}
        # A record that does not decode (a damaged state) is reported without its key.
        rows += ((label, mnemonics[i], Outcome(None, Status.CACHED, getattr(state.actions.get(actions[i]), "key", "")))
                 for i in acts)
    return rows, targets, len(p.graph)
