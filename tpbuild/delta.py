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
the stat memo by column (`StatCache.digests`), not a call chain per file; the blobs to check are the
settle memo's column when its premise holds (`Premise`), not gathered from 20,000 results; the actions
are walked in the order analysis declared them (no walk of the graph, see `settle`), and on a hit of
the settle memo their outcomes made by column (`_recorded`); a settled action's outcome is its key and
its result, nothing more (`scheduler.Settled`); and a build that settles everything gives the
scheduler nothing to walk.
"""

from __future__ import annotations

import os
import time
from array import array
from itertools import chain, compress, repeat
from operator import attrgetter, itemgetter, not_
from pathlib import Path
from stat import S_IXUSR
from collections.abc import Mapping

from xxhash import xxh3_128

from . import code, critical, memo
from .action import ActionKind, Source, Tree, blobs_named, key_of, material, parts_of, recorded as recorded_tree
from .analysiscache import Declared
from .cas import Cas
from .layout import RACY_WINDOW_NS, packed, packed_sigs, packed_text, unpacked
from .outputs import BuildState, Last
from .scheduler import Settled
from .statcache import StatCache


KIND, VERSION = "settled", 4  # the settle memo (`Premise`)
# The modules that key an action besides the engine's (`code.ENGINE`): from its declaration (`Declared.material`), here.
_KEYING = ("tpbuild.analysiscache", "tpbuild.delta")


class Unsettled(Exception):
    """An action of the boundary has no record in the build state (a damaged one)."""


class _Unordered(Exception):
    """An action was reached before an action it reads from: the declared order is not a walk."""


def settle(declared: Mapping[str, Declared], state: BuildState, statcache: StatCache, cas: Cas, root: Path,
           salt: str, boundary: set[str] = frozenset(), premise: Premise | None = None) -> dict[str, Settled]:
    """The actions whose key did not move and whose recorded result is whole in the store, in the
    order declared. `boundary`: actions a delta build reads from without working them
    (`incremental.py`), settled as recorded, unkeyed and unchecked (the no-op stamp proved their inputs
    and blobs unchanged); raises Unsettled if one has no record. `premise`: of an ordinary build (no
    boundary), the settle memo (see `Premise`): when nothing that enters a key moved since the last
    build that settled every action, every action is settled at its recorded key, none keyed, and
    the blobs their results name are the ones it names.

    Analysis declares the actions of a target after its dependencies' (`analysis.Analysis.order`), so
    the declared order is a walk of the action graph unless a rule declared an action before one it
    reads from: only then is the graph walked (`critical.topological`), which a no-op build at
    10,000 models spares (0.07 s)."""
    records = state.actions
    horizon = time.time_ns() - RACY_WINDOW_NS  # before any blob is stat'ed (`Premise.whole`)
    values = [a for aid, a in declared.items() if aid not in boundary] if boundary else list(declared.values())
    # Every declared input, in order, and which are sources: by column, each made in C.
    per_action = list(map(attrgetter("inputs"), values))
    pairs = list(chain.from_iterable(per_action))
    inputs = list(map(itemgetter(1), pairs))
    sourced = list(map(isinstance, inputs, repeat(Source)))
    # The sources, each once (a file many actions read is stat'ed once); their digests through the stat
    # memo by column, unless the settle memo vouches for them at these stats (`Premise.sourced`).
    paths = list(dict.fromkeys(map(attrgetter("path"), compress(inputs, sourced))))
    base = os.path.join(root, "")
    sigs = statcache.sigs(list(map(base.__add__, paths)))
    named = None  # each source's digest as keys take it (None: gone, the scheduler says so), once asked
    settled = blobs = None
    if premise is not None:
        premise.paths = paths
        ids = list(declared)
        texts = records.texts(ids)
        joined = None if None in texts else memo.json_array(texts)  # parsed as it is if the premise holds
        sources = premise.sourced(paths, sigs, horizon)
        if sources is None:
            named = _named(statcache, paths, base, sigs)
            sources = premise.digested(named)
        else:
            statcache.vouch(paths, sigs)  # the stats their digests were taken at, for the no-op stamp
        premise.now = None if joined is None or sources is None else \
            _premise(ids, values, per_action, pairs, inputs, sourced, paths, sources, joined, salt)
        if premise.now is not None and premise.now == premise.recorded:
            found = memo.values_of(joined, len(ids))  # as they were read when the premise was recorded
            if found is not None:
                settled = _walked(_recorded, declared, values, ids, found)
                blobs, names = premise.blobs, premise.names
    if settled is None:
        if named is None:
            named = _named(statcache, paths, base, sigs)
        records.preload(declared)
        settled = _walked(_settle, declared, records, dict(zip(paths, named)), salt, boundary)
        if premise is not None and len(settled) < len(declared):
            premise.now = None  # what it would vouch for is not every action settled: not saved
    if blobs is None:
        # Every blob a settled result names, once (a flat tree names its inputs' blobs again), in order: a
        # damaged blob's warning comes where it always did.
        blobs = list(blobs_named([o.entries for aid, o in settled.items() if aid not in boundary]))
        names = None
        if premise is not None and premise.now is not None:
            premise.blobs, premise.names = blobs, cas.names(blobs)  # what it names, for the next build
            names = premise.names
    elif premise.stats is not None and cas.whole_at(blobs, names, premise.stats):
        return settled  # every blob at the stat it was found whole at, as recorded
    bad = cas.verify_all(blobs, names)
    if premise is not None and premise.now is not None:
        premise.whole(None if bad else list(map(cas.verified.get, blobs)), horizon)
    if bad:
        dependents = critical.edges(declared)[1]
        for aid in list(settled):
            o = settled.get(aid)
            if o is not None and aid not in boundary and not bad.isdisjoint(o.entries.blobs()):
                _drop(aid, settled, dependents)
    return settled


class Premise:
    """The settle memo (`tpbuild-out/.tpbuild/settled`, kind `settled`): the digest of everything that
    decided the keys of the last ordinary build that settled every action it declared, keyed each one
    (`_settle`) and found each at its recorded key. What decides them (`_premise`): what enters every
    key material besides an action's own parts and inputs (the key version, the salt, the engine's
    code, a run action's environment and PATH); each action's own parts (its kind, definition and
    code) and declared inputs (destination, source or upstream action, path); the sources' digests;
    and the build state's record of every action, which holds its key and the result its readers'
    input digests are read from. `_settle` reads nothing else, so a build whose premise is that one
    would key every action as that build did and find every key the recorded one: it settles them all
    from their records (`_recorded`) and makes no key material. At 10,000 models that spares a no-op
    build the keying of 20,000 actions and the decoding of their records into objects; any other
    premise is keyed action by action as ever.

    With it, the blobs those records name (`blobs`, each (digest, executable), in the order `settle`
    finds them) and where each is in the store (`names`, `cas.Cas.names`): the records are part of the
    premise, so a build of the same premise would find the same blobs; it checks them in the store from
    these columns, not from 20,000 results' entries and as many paths made again (at 10,000 models).
    And the stats every one of them was last found whole at (`stats`, `whole`), in the store at `root`:
    a blob at the very stat it was found whole at is whole, which is the stat memo's own rule, so a
    build whose blobs are all at those stats takes them as whole in one compare of their stats
    (`cas.Cas.whole_at`), not through the stat memo's 20,000 records; any other stat (a blob removed,
    replaced, edited in place through a hardlink), and they are checked as ever (`cas.verify_all`),
    then their stats recorded again once all are whole.

    And the digest of the sources' digests (`sources`, the premise's part of them) with the digest of
    the sources' paths and the stats those digests were taken at (`at`, `sourced`), none within the
    racy window: a file at the stat its digest was taken at has that digest, the stat memo's own rule,
    so a build whose sources are all at those stats takes that digest without asking the stat memo for
    their 10,000 digests (at 10,000 models), nor reading it.

    It vouches for nothing by itself: an older memo (a build killed after the state changed), or one
    of another workspace's, is a different premise, a miss. The blobs are checked in the store as
    always. Format: [premise, [digest of each blob], "0" or "1" a blob (executable), [name of each],
    the store's root, their stats (`layout.packed_text`, "" for none), the sources' paths and stats'
    digest, their digests' ("" for none)]."""

    def __init__(self, path: Path, store: str):
        """`store`: the root of the blob store this build checks its blobs in (`cas.Cas.root`): stats
        recorded of another's are none."""
        self.path = path
        self.store = store
        self.recorded: str | None = None
        self.blobs: list[tuple[str, bool]] = []
        self.names: list[str] = []
        self.stats: bytes | None = None  # the blobs' stats (`whole`), as bytes of a `layout.packed` array
        self.text: str | None = None  # those stats' `layout.packed_text` when known (the no-op stamp's too)
        self.at: str | None = None  # the sources' paths and stats, digested (`sourced`)
        self.sources: str | None = None  # the digest of their digests at those stats
        self.paths: list[str] | None = None  # the sources this build's actions read, each once, in order (`settle`)
        value = memo.load(path, KIND, VERSION)
        if isinstance(value, list) and len(value) == 8:
            recorded, digests, executable, names, root, stats, at, sources = value
            if recorded.__class__ is str and executable.__class__ is str and digests.__class__ is names.__class__ \
                    is list and len(digests) == len(executable) == len(names) and set(executable) <= {"0", "1"} \
                    and {*map(type, digests), *map(type, names)} <= {str} and root.__class__ is str \
                    and at.__class__ is sources.__class__ is str:
                try:
                    stats = None if stats == "" else unpacked(stats).tobytes()
                    whole = stats is None or len(stats) == 32 * len(digests)  # four 64-bit integers a blob
                except ValueError:
                    whole = False
                if whole:
                    self.recorded, self.names = recorded, names
                    self.blobs = list(zip(digests, map("1".__eq__, executable)))
                    self.stats = stats if root == store else None
                    self.text = value[5] if self.stats is not None else None
                    if at and sources:
                        self.at, self.sources = at, sources
        self.now: str | None = None  # this build's, when every action settled: what `save` records, with its blobs
        self._saved = self.recorded, self.stats, self.at, self.sources

    def sourced(self, paths: list[str], stats: list[tuple | None], horizon: int) -> str | None:
        """The digest of the sources' digests (`_sources`) when the memo recorded it at the stats `paths`
        are at now (`stats`), else None: they are asked of the stat memo (`digested`). Stats from
        `horizon` on (the racy window before the build began), or of a file not there, vouch for
        nothing and are not recorded."""
        fresh = None in stats or max(map(itemgetter(1), stats), default=0) >= horizon
        at = None if fresh else _at(paths, stats)
        if at is None or at != self.at:
            self.at, self.sources = at, None
        return self.sources

    def digested(self, named: list[str | None]) -> str | None:
        """The digest of the sources' digests `named` (None: one is gone), recorded at the stats `sourced`
        was given, if it recorded them."""
        self.sources = None if None in named else _sources(named)
        if self.sources is None:
            self.at = None
        return self.sources

    def whole(self, stats: list[tuple | None] | None, horizon: int) -> None:
        """Record the stats its blobs were found whole at (as `cas.Cas.verified` holds them: None for one
        this build stored; `stats` None when some blob is not whole), unless one is unknown or from
        `horizon` on (the racy window before the build began, in which a rewrite may keep a file's stat:
        a stat that does not vouch for content, as the stat memo has it)."""
        fresh = stats is None or None in stats or max(map(itemgetter(1), stats), default=0) >= horizon
        stats = None if fresh else packed_sigs(stats).tobytes()
        if stats != self.stats:
            self.stats, self.text = stats, None

    def save(self) -> str | None:
        """None when saved (or nothing to save), else a warning (see memo.save)."""
        if self.now is None or (self.now, self.stats, self.at, self.sources) == self._saved:
            return None
        if self.stats is not None and self.text is None:
            self.text = packed_text(array("q", self.stats))
        stats = "" if self.stats is None else self.text
        value = [self.now, list(map(itemgetter(0), self.blobs)), "".join("1" if x else "0" for _d, x in self.blobs),
                 self.names, self.store, stats, self.at or "", self.sources if self.at else ""]
        return memo.save(self.path, KIND, VERSION, value, self.path.parent / "tmp", f"the settle memo {self.path}")


def _named(statcache: StatCache, paths: list[str], base: str, sigs: list[tuple | None]) -> list[str | None]:
    """Each source's digest as keys take it (its kind and its content's digest), through the stat memo
    by column at `sigs`, the stats `settle` took of them (`base + path`); None: gone."""
    digests, sigs = statcache.digests(paths, base, sigs)
    return [None if d is None else ("x" if s[3] & S_IXUSR else "f") + d for d, s in zip(digests, sigs)]


def _premise(ids: list[str], values: list[Declared], per_action: list[tuple], pairs: list[tuple], inputs: list,
             sourced: list[bool], paths: list[str], sources: str, records: str, salt: str) -> str:
    """The digest of what decides every action's key (see `Premise`), by columns each made and joined in
    C, not by a loop over the actions: `ids` and `values` the declared actions, `per_action` their
    inputs, `pairs` those in one list and `inputs` their inputs, `sourced` which of them are sources,
    `paths` the sources and `sources` the digest of their digests as keys take them (`_sources`),
    `records` the state's records of the actions, their texts as one JSON array (`memo.json_array`).

    What enters a key besides an action's own parts and inputs is taken from the key material itself,
    an action's of each kind made without them (`action.material`), so that a part added to every key
    is a part of the premise too; and the code that makes a key of those parts besides the engine's
    (which its digest in the material covers) is: a change to how they are keyed is a miss."""
    definitions = list(map(attrgetter("definition"), values))
    if "" in definitions:  # analysed now: its action's definition, in the form the memo keeps
        definitions = list(map(Declared.stored_definition, values))
    h = xxh3_128()
    _column(h, [code.digest_of(_KEYING, follow=False), *(material(kind, b"", "", [], salt).decode() for kind in ActionKind)])
    for column in (ids, list(map(attrgetter("kind"), values)), definitions, list(map(attrgetter("code"), values)),
                   list(map(itemgetter(0), pairs)), list(map(attrgetter("path"), inputs)),
                   list(map(attrgetter("action"), compress(inputs, map(not_, sourced)))), paths, [sources], [records]):
        _column(h, column)
    h.update(packed([len(per_action), *map(len, per_action)]))  # how many inputs each action has
    h.update(bytes(sourced))  # and which of them are sources
    return h.hexdigest()


def _sources(named: list[str]) -> str:
    """The digest of the sources' digests (`_named`), which the premise takes (`_premise`) and the settle
    memo records (`Premise.sourced`)."""
    h = xxh3_128()
    _column(h, named)
    return h.hexdigest()


def _at(paths: list[str], stats: list[tuple]) -> str:
    """The digest of the sources' paths and stats, what the settle memo records its sources' digests at
    (`Premise.sourced`)."""
    h = xxh3_128()
    _column(h, paths)
    h.update(packed_sigs(stats).tobytes())
    return h.hexdigest()


def _column(h, items: list[str]) -> None:
    """Hash a column of texts so that no other column hashes the same: how many, each one's length, and
    their characters (as UTF-8, a path's undecodable bytes too), with how many bytes those are. The
    lengths packed by struct's one call (`layout.packed`, the same bytes as an array made of them, which
    converts each through a call: a third of hashing the columns of 2,000 models)."""
    text = "".join(items).encode(errors="surrogatepass")
    h.update(packed([len(items), len(text), *map(len, items)]))
    h.update(text)


def _walked(walk, declared: Mapping[str, Declared], *args):
    """`walk(declared, order, *args)` in the declared order, or, should an action come before one it
    reads from (`_Unordered`), in a walk of the graph."""
    try:
        return walk(declared, declared, *args)
    except _Unordered:
        return walk(declared, critical.topological(declared)[0], *args)


def _settle(declared: Mapping[str, Declared], order, records: Mapping[str, Last], sources: Mapping[str, str | None],
            salt: str, boundary) -> dict[str, Settled]:
    """`settle` before the blobs are checked, walking the actions in `order`, each keyed from its
    definition and its inputs' digests (`sources`: each source's); raises _Unordered when an action
    comes before one it reads from."""
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


def _recorded(declared: Mapping[str, Declared], order, values: list[Declared], ids: list[str],
              found: list[list]) -> dict[str, Settled]:
    """Every action settled at its recorded key, from `found` (the state record's value of each of
    `ids`, the declared actions, whose declarations are `values`; not decoded into an `outputs.Last`):
    `settle` when the premise of every key is the recorded one, so that `_settle` would find every key
    and result as it did when it recorded it, these records having been read and checked then
    (`outputs.Last`'s reading of a record: a flat result straight from its entries, a composed one with
    the parts its action composes, see `action.recorded`). The flat results by column (20,000 at
    10,000 models); a composed one (a repository's) then, walking them in `order`, from the upstream
    results it takes as parts. Raises _Unordered when a composed tree comes before a composed upstream."""
    flat = map(Tree, repeat(()), repeat(()), map(itemgetter(1), found), map(itemgetter(2), found))  # own, digest
    settled = dict(zip(ids, map(Settled, values, map(itemgetter(0), found), flat)))
    composed = {ids[i]: found[i] for i in compress(range(len(ids)), map(itemgetter(3), found))}
    pending = set(composed)  # made as flat above, not yet as composed
    for aid in composed if order is declared else [aid for aid in order if aid in composed]:
        a = declared[aid]
        key, own, tree, parts = composed[aid]
        trees = []
        for dest, inp in a.inputs:
            if inp.__class__ is not Source and not inp.path:
                up = settled.get(inp.action)
                if up is None or inp.action in pending:
                    raise _Unordered(inp.action)
                trees.append((dest, up.entries.digest, up.entries))
        settled[aid] = Settled(a, key, recorded_tree(Tree(raw=own), parts, lambda: parts_of(a.kind, a.inputs, trees),
                                                     tree))
        pending.discard(aid)
    return settled


def _drop(aid: str, settled: dict[str, Settled], dependents: Mapping[str, list[str]]) -> None:
    """Unsettle an action and everything downstream of it: its result must be made again, and their
    keys depend on its bytes."""
    stack = [aid]
    while stack:
        x = stack.pop()
        if settled.pop(x, None) is not None:
            stack.extend(dependents[x])
