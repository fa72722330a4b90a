"""The output tree `tpbuild-out/` and the workspace's memory of the last build.

`BuildState` (`tpbuild-out/.tpbuild/state`, a journal of kind `state` whose meta is the cache's id,
see `memo.Journal`) records, per action (`a:<id>`), the key, entries and tree digest of its last
result (a `Last`: the entries are decoded when first read, the tree digest is what a downstream key
takes of a whole tree, so an unchanged action costs its record's parse, `delta`; a composed tree,
`action.Tree`, by its own entries and its number of parts), and, per materialized output
(`o:<path>`), its tree digest, the stat of every file placed and the stat of every directory of the
tree; a composed output's parts each have such a record of their own (`o:<path>/<prefix>`), so a
repository whose one model changed re-records that model's part, not the repository. With it a
no-op build reads no action cache entry and places no file, and a build appends only the records it
changed. It is tied to one cache directory by that cache's
id: pointing the workspace at another cache (or emptying it) starts from a clean memory.

Outputs are hardlinks (or reflinks) of read-only blobs, for speed; an output edited in place through
its link changes its stat, so the tree is re-placed, and the blob's stat, so the blob store finds
it damaged before anything uses it (see `cas`).

Crash consistency, for a `kill -9` at any point:
- a tree is intact only if every recorded file *and every directory* has its recorded stat: a file
  added by a build that was killed before saving the state moves its directory's mtime, so the
  tree is checked against what is there, not only against what was recorded;
- no temp name is ever inside an output: a tree is assembled, and a single file prepared, in this
  process's temp directory under `tpbuild-out/.tpbuild/tmp`, then renamed into place; a rename onto
  a link of the same inode is a no-op in POSIX, which would leave the temp name behind, so it is
  unlinked then;
- what a killed build left in those temp directories is swept by the next build (`atomic.sweep`);
- `prune` removes the outputs of targets that no longer exist, and only paths this state recorded
  placing (ninja's `-t cleandead`).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from itertools import chain, compress, repeat
from json.encoder import encode_basestring
from operator import eq, itemgetter, not_
from pathlib import Path

from . import atomic, memo
from .action import EntryKind, OutputEntry, Part, Symlink, Tree, recorded, tree_digest
from .cas import Cas
from .layout import OUT_DIR, STATE_DIR, stat_sig

KIND, VERSION = "state", 6


class Last:
    """An action's last result as the state holds it: its key, `tree` (its `tree_digest`, kept so a
    downstream key needs no re-hash of an unchanged upstream's entries), its own entries (as JSON
    until read: most unchanged actions never need them) and, for a composed tree, how many parts it
    took (`action.Tree`)."""

    __slots__ = ("key", "tree", "parts", "_raw", "_own")

    def __init__(self, key: str, tree: str, entries: tuple | None = None, raw: list | None = None, parts: int = 0):
        self.key = key
        self.tree = tree
        self.parts = parts
        self._raw = raw
        self._own = None if raw is not None else Tree(entries or ())  # of a record, made when first read

    def _tree(self) -> Tree:
        if self._own is None:
            self._own = Tree(raw=self._raw)
        return self._own

    @property
    def entries(self) -> tuple[OutputEntry, ...]:
        """Its own entries: of a flat result, the whole tree."""
        return self._tree().own

    def result(self, parts: Callable[[], tuple[Part, ...]]) -> Tree | None:
        """The result, read no further than its readers read it; a composed one with the parts its
        action composes now (`parts()`), None if they are not the ones recorded (`action.recorded`)."""
        if self._own is None and not self.parts:  # a flat one straight from the record (20,000 in a no-op build)
            return Tree(raw=self._raw, digest_=self.tree)
        return recorded(self._tree(), self.parts, parts, self.tree)

    def blobs(self) -> list[tuple[str, bool]]:
        """(digest, executable) of every blob its own entries name, without building them."""
        return self._tree().blobs()

    def to_json(self) -> list:
        return [self.key, self._raw if self._own is None else self._own.own_json(), self.tree, self.parts]


class BuildState:
    def __init__(self, path: Path, cache_id: str):
        self.path = path
        self._journal = memo.Journal(path, KIND, VERSION, cache_id, path.parent / "tmp", f"the build state {path}",
                                     convert=(_from_json, _to_json), keep_text=True)
        self.actions: MutableMapping[str, Last] = _Records(self._journal, "a:")
        # output rel path -> (tree digest, {path: (kind, digest, sig)}, {directory: sig})
        self.outputs: MutableMapping[str, tuple] = _Records(self._journal, "o:")
        self._sorted: list[str] | None = None  # the output records' paths, sorted, once asked for (`recorded_below`)
        self.placed_now: list[str] = []  # the output records this process placed (`place`), in order
        # Runs of records the place check found to be their trees' records now, each all of one shape, as
        # the columns it compared them by (`_Shape.compare`), which the no-op stamp sorts them by (`Placed.compared`)
        self.compared: list[tuple] = []

    def recorded_below(self, rel: str) -> list[str]:
        """The output records below `rel` (a composed output's parts, and theirs), in path order: those
        from `rel/` up to `rel0` among the sorted paths ("0" follows "/"), found without a look at every
        record for every output (a map of every record's ancestors cost a delta build at 10,000
        models 0.05 s)."""
        keys = self._sorted_outputs()
        below = f"{rel}/"
        lo = bisect_left(keys, below)
        if lo == len(keys) or not keys[lo].startswith(below):  # none: each of 20,000 trees a no-op build checks
            return []
        # Some maybe removed since: those still recorded, looked up in C (a repository's 10,000 parts)
        return list(filter(self.outputs._listed().__contains__, keys[lo:bisect_left(keys, f"{rel}0", lo)]))

    def recorded_below_all(self, rels: list[str]) -> dict[int, list[str]]:
        """`recorded_below` of those of `rels` with records below them, by their index in `rels`: whether any
        is found for all in C (the first path from `rel/` on starts with it), only those asked one by one
        (the no-op stamp asks of every output, 20,000 at 10,000 models, and a call each was a tenth of its
        writing): no empty list made, nor a step of a loop taken, for each of the others."""
        keys = self._sorted_outputs()
        belows = list(map(str.__add__, rels, repeat("/")))
        firsts = map([*keys, ""].__getitem__, map(bisect_left, repeat(keys), belows))
        return {i: self.recorded_below(rels[i]) for i in compress(range(len(rels)), map(str.startswith, firsts, belows))}

    def _sorted_outputs(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.outputs)
        return self._sorted

    def place(self, rel: str, record: tuple) -> None:
        """Record an output (or a part of one) as placed."""
        keys = self._sorted
        if keys is not None:
            i = bisect_left(keys, rel)
            if i == len(keys) or keys[i] != rel:
                keys.insert(i, rel)
        self.outputs[rel] = record
        self.placed_now.append(rel)

    def remember(self, action_id: str, key: str, entries) -> None:
        """Record a result; a composed tree by its own entries and the number of its parts, so a
        repository whose one model changed appends a record of its own size, not of the models'."""
        hit = self.actions.get(action_id)
        if hit is None or hit.key != key:
            if isinstance(entries, Tree):
                self.actions[action_id] = Last(key, entries.digest, entries.own, parts=len(entries.parts))
            else:
                self.actions[action_id] = Last(key, tree_digest(entries), tuple(entries))

    @classmethod
    def load(cls, path: Path, cache_id: str) -> "BuildState":
        return cls(path, cache_id)

    def save(self) -> str | None:
        """None when saved (or unchanged), else a warning (see memo.Journal.save)."""
        if not self._journal.changed:
            return None
        atomic.crash_point("save-state")
        return self._journal.save()


class _Records(MutableMapping):
    """One kind of record of the state's journal (decoded when first read: a build that changes one
    model reads the records of what it touches, not all of them). A record that does not decode is
    absent: the build re-checks what it would have said. Its keys are listed only when asked for
    (a delta build asks for none of the 10,000 actions' and sorts the outputs' once, `recorded_below`)."""

    def __init__(self, journal: memo.Journal, prefix: str):
        self._journal = journal
        self._prefix = prefix
        self._keys: set[str] | None = None  # once listed

    def _listed(self) -> set[str]:
        if self._keys is None:
            n, prefix = len(self._prefix), self._prefix
            self._keys = {k[n:] for k in self._journal.keys() if k.startswith(prefix)}
        return self._keys

    def preload(self, keys) -> None:
        """Decode these records in one parse (see `memo.Journal.preload`)."""
        self._journal.preload([self._prefix + k for k in keys])

    def texts(self, keys: list[str]) -> list[str | None]:
        """These records' texts, not decoded (`memo.Journal.texts`)."""
        return self._journal.texts(list(map(self._prefix.__add__, keys)))

    def text_of(self, key: str, value) -> str:
        """The text of a record of this value (`memo.Journal.text_of`)."""
        return self._journal.text_of(self._prefix + key, value)

    def matched(self, keys: list[str], values: list) -> None:
        """These records are of these values, as their texts showed (`memo.Journal.matched`)."""
        self._journal.matched(list(map(self._prefix.__add__, keys)), values)

    def get_all(self, keys: list[str]) -> list:
        """`get` of each key, None for one absent (`memo.Journal.get_all`: the decoded ones found in C)."""
        return self._journal.get_all(list(map(self._prefix.__add__, keys)))

    def __contains__(self, key: object) -> bool:
        # without decoding it (a record that does not decode is found absent later); once the keys are
        # listed, by them (`recorded_below` asks of each of a repository's 10,000 parts)
        if self._keys is not None:
            return key in self._keys
        return isinstance(key, str) and self._prefix + key in self._journal

    def __getitem__(self, key: str):
        hit = self.get(key)
        if hit is None:
            raise KeyError(key)
        return hit

    def get(self, key: str, default=None):
        """Mapping's, without its KeyError for each record absent (a delta build gets 10,000)."""
        hit = self._journal.get(self._prefix + key)
        if hit is None:
            if self._keys is not None:
                self._keys.discard(key)
            return default
        return hit

    def __setitem__(self, key: str, value) -> None:
        self._journal.put(self._prefix + key, value)
        if self._keys is not None:
            self._keys.add(key)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._journal.remove(self._prefix + key)
        if self._keys is not None:
            self._keys.discard(key)

    def __iter__(self):
        return iter(list(self._listed()))

    def __len__(self) -> int:
        return len(self._listed())

    def __bool__(self) -> bool:
        prefix = self._prefix
        return bool(self._keys) if self._keys is not None else any(k.startswith(prefix) for k in self._journal.keys())


def _from_json(key: str, v) -> Last | tuple:
    if key.startswith("a:"):
        # A plain loop and class tests: a no-op build at 10,000 models decodes 20,000 of these.
        k, entries, tree, parts = v
        if not (k.__class__ is str and tree.__class__ is str and entries.__class__ is list
                and parts.__class__ is int and parts >= 0):
            raise ValueError("not an action record")  # a miss: the action is looked up again
        for e in entries:
            if e.__class__ is not list or len(e) != 4 or e[1] not in _KINDS or e[0].__class__ is not str \
                    or e[2].__class__ is not str:
                raise ValueError("not an action record")
        return Last(k, tree, raw=entries, parts=parts)
    d, files, dirs = v
    return (d, {p: (k, bd, tuple(s)) for p, (k, bd, s) in files.items()}, {p: tuple(s) for p, s in dirs.items()})


_KINDS = {k.value for k in EntryKind}


def _to_json(key: str, v) -> list:
    if key.startswith("a:"):
        return v.to_json()
    d, files, dirs = v
    return [d, {p: list(x) for p, x in files.items()}, dirs]


def cache_id(cache_root: Path) -> str:
    """A random id made when a cache directory is first used; a new cache gets a new id."""
    p = cache_root / "id"
    try:
        return p.read_text().strip()
    except FileNotFoundError:
        cache_root.mkdir(parents=True, exist_ok=True)
        tmp = atomic.temp_path(cache_root / "tmp", "id")
        tmp.write_text(os.urandom(16).hex())
        try:
            os.link(tmp, p)  # first writer wins; others read theirs
        except FileExistsError:
            pass
        tmp.unlink()
        return p.read_text().strip()


class Proof:
    """What a caller knows of the placed trees without looking at them (a delta build, from the no-op
    stamp's check of every placed path: `incremental.Checked`; the ordinary path, from the stats of
    the trees' directories and of the blobs their files are links of: `build._Linked`). The interface,
    described (as `runner.Runner`): nothing subclasses it."""

    def intact(self, rel: str, record: tuple) -> bool:
        """The tree at `rel` is intact as `record` (the build state's) has it; False: not known."""

    def vouch(self, kinds: list[str], targets: list[str], dirs: list[str]) -> tuple[list, list] | None:
        """The stats placed files (each by its kind letter and its blob's digest or its link's target) and
        directories (each by its path from the workspace root) have now, as far as known without a look
        at the files: each None where not known; None when nothing is (a directory gone). The ordinary
        path checks the 20,000 trees of a no-op at 10,000 models so (`in_place_all`): a record of each
        tree at these stats, compared with the state's as text, a column of stats at a time."""

    def holds(self, rel: str, digest: str) -> bool:
        """The tree at `rel` holds the tree of this digest, intact, known without reading its record;
        False: not known."""


def _intact(root: Path, rel: str, rec, proven: Proof | None = None) -> bool:
    """Every file placed last time is still there, unmodified (same inode, size, mtime and mode), and
    no directory of the tree gained or lost an entry since (its own stat is unchanged); known from
    `proven` where it can tell, else looked at."""
    if proven is not None and proven.intact(rel, rec):
        return True
    base = f"{root}/{rel}/"  # strings, not pathlib, and a plain loop: a build checks every placed file
    lstat = os.lstat
    try:
        for path, (_kind, _d, recorded) in rec[1].items():
            if stat_sig(lstat(base + path)) != recorded:
                return False
        for path, recorded in rec[2].items():
            if stat_sig(lstat(base + path)) != recorded:
                return False
    except OSError:
        return False
    return True


def in_place_all(state: BuildState, root: Path, outs: list[tuple[str, Sequence[OutputEntry]]],
                 proven: Proof | None = None) -> set[str]:
    """The outputs of `outs` ((rel, entries) each) that `root` holds, intact, as this state placed them,
    each part of a composed tree checked by its own record (`proven`: see `materialize`). Checked
    together: the records each needs are found first (by their keys), then compared with the records
    their trees would have now, as `proven` vouches for their stats (`_as_placed`), and only a record
    that differs is decoded and looked at alone."""
    needs = {}
    for rel, entries in outs:
        records: list[tuple] = []
        if _records_of(state, rel, entries, None, proven, records):
            needs[rel] = records
    every = [r for records in needs.values() for r in records]
    same = _as_placed(state, every, proven) if proven is not None else set()
    damaged = {rel for rel, digest, _entries, parts in every
               if rel not in same and not _recorded_intact(state, root, rel, digest, parts, proven)}
    if not damaged:
        return set(needs)
    return {rel for rel, records in needs.items() if damaged.isdisjoint(r[0] for r in records)}


def _recorded_intact(state: BuildState, root: Path, rel: str, digest: str, parts: tuple[Part, ...],
                     proven: Proof | None) -> bool:
    """The record at `rel` is of the tree of `digest` (of these parts: `_same_shape`), and the tree is
    intact as it records it (`_intact`): one record, decoded."""
    rec = state.outputs.get(rel)
    return (rec is not None and rec[0] == digest and _same_shape(state, rel, rec[1], parts)
            and _intact(root, rel, rec, proven))


def _records_of(state: BuildState, rel: str, entries: Sequence[OutputEntry], digest: str | None,
                proven: Proof | None, into: list[tuple]) -> bool:
    """False when the state's records show by their keys alone that `root/rel` does not hold the tree
    `entries` as placed (no record, records below a flat tree's or a flat part's); else True, with `into`
    given `(rel, digest, entries, parts)` of each record that must be of its tree, intact, for it to:
    its own and its parts', those `proven` knows to hold theirs left out."""
    parts = _parts(entries)
    digest = digest or tree_digest(entries)
    if proven is not None and proven.holds(rel, digest):
        return True
    if rel not in state.outputs:
        return False
    into.append((rel, digest, entries, parts))
    if not parts:
        return not state.recorded_below(rel)
    # The parts, in one pass over the records below `rel`: a flat part is of its shape when no record
    # is below its own (a repository's 10,000 parts are one listing of the records below it, not a
    # search of all of them for each part).
    nested = set()  # the records below `rel` that have records below them
    for k in state.recorded_below(rel):
        k = k.rpartition("/")[0]
        while len(k) > len(rel) and k not in nested:
            nested.add(k)
            k = k.rpartition("/")[0]
    base = f"{rel}/"
    recorded = state.outputs
    for p in parts:
        at = base + p.prefix
        if _parts(p.tree):
            if not _records_of(state, at, p.tree, p.digest, proven, into):
                return False
            continue
        if proven is not None and proven.holds(at, p.digest):
            continue
        if at not in recorded or at in nested:
            return False
        into.append((at, p.digest, p.tree, ()))
    return True


def _as_placed(state: BuildState, expected: list[tuple], proven: Proof) -> set[str]:
    """The records of `expected` (`_records_of`) that the state holds exactly as their trees would be
    recorded now, at the stats `proven` vouches for (`Proof.vouch`): each compared as text, not decoded
    (at 10,000 models, decoding the 20,000 records of a no-op build cost more than checking them), and
    the records alike (a model's: the same files in the same directories, `_Shape`) a column at a time,
    a thousand at once (a directory gone costs its thousand a look each, not the whole build's). Each
    record found so is taken as decoded, its value made of what was compared (`Journal.matched`)."""
    alike: dict[tuple, list[tuple]] = {}
    for rel, digest, entries, parts in expected:
        own = entries.own_json() if isinstance(entries, Tree) else [e.to_json() for e in entries]
        if parts and not _same_shape(state, rel, map(itemgetter(0), own), parts):
            continue  # its record looked at alone tells
        # its files, and the parts that lead through directories of its own (`_dirs`: not one at the top)
        shape = (tuple(map(_PATH_KIND, own)), tuple(p.prefix for p in parts if "/" in p.prefix) if parts else ())
        records = alike.get(shape)
        if records is None:
            records = alike[shape] = []
        records.append((rel, digest, own))
    same: set[str] = set()
    for (files, below), records in alike.items():
        shape = _Shape(files, below)
        for i in range(0, len(records), _PROVEN_AT_ONCE):
            same.update(shape.compare(state, records[i:i + _PROVEN_AT_ONCE], proven))
    return same


_PATH_KIND = itemgetter(0, 1)  # of an entry as JSON
# Records compared at once (`_as_placed`): a directory gone costs the others of its thousand a second
# look, not the whole build's, and the columns held at once stay small.
_PROVEN_AT_ONCE = 1000
_SIG_FIELDS = 4  # the integers of a `stat_sig`
_SIG_TEXT = ",".join(["%s"] * _SIG_FIELDS)  # a `stat_sig`'s integers as a record's JSON writes them, in its list
_ESCAPED = (*map(chr, range(0x20)), '"', "\\")  # what JSON writes escaped (`memo._dumps`: not ensure_ascii)


class _Shape:
    """The files (path and kind) and directories of a placed tree's record (those of a tree's own
    entries, and for a composed tree the directories that lead to its parts, see `_dirs`), and two
    functions of a record's values (`_makers`): its text, and its value as `_from_json` makes it. The
    records of 10,000 models' trees are written out so, one call each, where encoding their values took
    as long as decoding them (their stats' 400,000 integers). Its strings are written as they are: a
    record whose digest, blob or link target has a character JSON escapes is left to itself."""

    def __init__(self, files: tuple[tuple[str, str], ...], below: tuple[str, ...]):
        self.paths = [p for p, _k in files]
        self.kinds = [k for _p, k in files]
        self.dirs = _dir_names(self.paths + list(below))
        self._makers: tuple[Callable[..., str], Callable[..., tuple]] | None = None  # made when first vouched for
        self.checked = False  # its text found to be the journal's own for a record (`compare`)

    def compare(self, state: BuildState, records: list[tuple[str, str, list]], proven: Proof) -> list[str]:
        """The records of `records` ((rel, tree digest, own entries as JSON) each) whose text in the state
        is the text of their tree's record at the stats `proven` vouches for now; each is taken as
        decoded so. None of them when a stat is not vouched for (the file-by-file check tells)."""
        rels, digests, owns = (list(map(itemgetter(i), records)) for i in range(3))
        n, m = len(self.paths), len(self.dirs)
        targets = list(map(itemgetter(2), chain.from_iterable(owns)))
        now = proven.vouch(self.kinds * len(records), targets, [f"{rel}/{d}" for rel in rels for d in self.dirs])
        if now is None:
            return []
        file_stats, dir_stats = now
        # Each stat vouched for (a stat_sig is never empty: None is falsy, found in C without a
        # comparison of each stat with None) and of a stat_sig's integers.
        if not (all(file_stats) and all(dir_stats)) or \
                not {*map(len, file_stats), *map(len, dir_stats)} <= {_SIG_FIELDS}:
            return []
        try:
            strings = "".join(chain(digests, targets))
            # A stat's text made once for each stat: the files linked to one blob are at its one stat
            # (every model's labels; each model's files, in its tree and in the repository's).
            file_texts = dict.fromkeys(file_stats)
            file_texts = list(map(dict(zip(file_texts, map(_SIG_TEXT.__mod__, file_texts))).__getitem__, file_stats))
            dir_texts = list(map(_SIG_TEXT.__mod__, dir_stats))
        except TypeError:  # a digest or target that is not text, a stat not a tuple: left to the records themselves
            return []
        if any(map(strings.__contains__, _ESCAPED)):  # one JSON escapes: likewise (a search in C for each character)
            return []
        if self._makers is None:
            self._makers = _makers(self.paths, self.kinds, self.dirs)
        text, value = self._makers

        def columns(files: list, dirs: list) -> list:
            """Each record's values, a column each (sliced in C): its digest, each file's blob and stat,
            each directory's stat (the stats as `files` and `dirs` give them: their texts, or themselves)."""
            return [digests, *chain.from_iterable((targets[i::n], files[i::n]) for i in range(n)),
                    *(dirs[j::m] for j in range(m))]

        texts = list(map(text, *columns(file_texts, dir_texts)))
        same = list(map(eq, texts, state.outputs.texts(rels)))
        if not any(same):
            return []
        values = list(map(value, *columns(file_stats, dir_stats)))
        if not self.checked:  # the format is the journal's own encoding, for a first record of this shape
            if state.outputs.text_of(rels[0], values[0]) != texts[0]:
                return []
            self.checked = True
        if all(same):
            state.compared.append((self.paths, self.kinds, self.dirs, rels, values, targets, file_stats, dir_stats))
        else:
            rels, values = list(compress(rels, same)), list(compress(values, same))
        state.outputs.matched(rels, values)
        return rels


def _makers(paths: list[str], kinds: list[str], dirs: list[str]) -> tuple[Callable[..., str], Callable[..., tuple]]:
    """Of a record of these files (paths and kinds) and directories, given its values a column each
    (`_Shape.compare`: its digest; each file's blob or link target, and stat; each directory's stat):
    its text as the journal writes it (of strings JSON writes as they are, `_Shape`), given each stat
    as its text (`_SIG_TEXT`), and its value as `_from_json` makes it (`(digest, {path: (kind, blob,
    stat)}, {directory: stat})`). Each is a function made for the shape, an f-string or a display of
    its values, called once a record: a format of a tuple of its 25 values a record, and zips of its
    files into dicts, took a no-op build at 10,000 models twice as long. The made source holds names
    only; the shape's paths and kinds, and the text between the values, are constants it is given
    (`c<i>`, `p<i>`, `k<i>`, `e<j>`)."""
    n, m = len(paths), len(dirs)
    params = ", ".join(["d", *chain.from_iterable((f"t{i}", f"s{i}") for i in range(n)), *(f"u{j}" for j in range(m))])
    # The text: constants between the values, each value's place after the constant before it.
    constants = ['["']
    places = ["d"]
    for i, (p, k) in enumerate(zip(paths, kinds)):
        constants.append(('",{' if i == 0 else "]],") + f"{encode_basestring(p)}:[{encode_basestring(k)},\"")
        places.append(f"t{i}")
        constants.append('",[')
        places.append(f"s{i}")
    constants.append(("]]},{" if n else '",{},{'))
    for j, d in enumerate(dirs):
        constants[-1] += ("" if j == 0 else "],") + f"{encode_basestring(d)}:["
        places.append(f"u{j}")
        constants.append("")
    constants[-1] += ("]}]" if m else "}]")
    fstring = "".join(f"{{c{x}}}{{{place}}}" for x, place in enumerate(places)) + f"{{c{len(places)}}}"
    value = "(d, {%s}, {%s})" % (", ".join(f"p{i}: (k{i}, t{i}, s{i})" for i in range(n)),
                                 ", ".join(f"e{j}: u{j}" for j in range(m)))
    names = [f"c{x}" for x in range(len(constants))] + [f"p{i}" for i in range(n)] + [f"k{i}" for i in range(n)] + \
        [f"e{j}" for j in range(m)]
    source = (f"def make({', '.join(names)}):\n"
              f"    def text({params}):\n        return f'{fstring}'\n"
              f"    def value({params}):\n        return {value}\n"
              f"    return text, value\n")
    scope: dict = {}
    exec(compile(source, "<outputs._makers>", "exec"), scope)
    return scope["make"](*constants, *paths, *kinds, *dirs)


def materialize(state: BuildState, root: Path, rel: str, entries: Sequence[OutputEntry], cas: Cas,
                proven: Proof | None = None, digest: str | None = None) -> tuple[bool, int]:
    """Make `root/rel` hold exactly `entries`: whether its own entries were written, and how many of its
    parts (False and 0 when it already held them).

    An intact tree is updated file by file, each file replaced by an atomic rename, so one edited
    model in a repository of a thousand touches one file. Otherwise (first build, a tree damaged by
    hand or by a killed build) the tree is assembled aside and renamed into place whole. A composed
    tree (`action.Tree`) is placed as its own entries, recorded at `rel`, and each part placed the same
    way at `rel/<prefix>` with a record of its own: an unchanged part is only checked (the stats of its
    files), a changed one is re-placed and re-recorded alone. `proven` (a delta build's, from the
    stamp's check of every placed file: `incremental.py`): a tree (or a part) it knows intact as
    recorded is not looked at, and a part it knows to hold its tree is not even read (of a repository
    of 10,000 models whose one model changed, that model's part is read; decoding every part's record
    took a fifth of such a build)."""
    digest = digest or tree_digest(entries)
    parts = _parts(entries)
    own = entries.own if parts else entries
    rec = state.outputs.get(rel)
    intact = rec is not None and _same_shape(state, rel, rec[1], parts) and _intact(root, rel, rec, proven)
    wrote = not (intact and rec[0] == digest)
    placed, dirs = (rec[1], rec[2]) if rec is not None else ({}, {})
    whole = False  # assembled whole just now: its parts are gone, each is placed again
    if wrote:
        _drop_parts(state, root, rel, {p.prefix for p in parts})
        placed = None
        if intact:
            try:
                placed = _update(root, root / rel, rec[1], own, cas)
            except OSError:  # a file became a directory or the other way round: rebuild the tree whole
                placed = None
        if placed is None:
            for k in state.recorded_below(rel):  # the tree is swapped out whole, its parts with it
                del state.outputs[k]
            placed, dirs = assemble(root, rel, own, cas)
            whole = True
        elif not parts:  # only the directories whose entries were replaced or removed moved (if none was made or removed)
            touched = {os.path.dirname(p) for p in rec[1].keys() - placed.keys()}
            touched.update(os.path.dirname(p) for p, r in placed.items() if r is not rec[1].get(p))
            dirs = _dirs(root / rel, own, rec[2], touched)
    n = 0
    if parts:
        if proven is not None and not whole:
            parts_todo = [p for p in parts if not proven.holds(f"{rel}/{p.prefix}", p.digest)]
        else:
            parts_todo = parts
        state.outputs.preload(f"{rel}/{p.prefix}" for p in parts_todo)  # one parse for all the parts' records
        for p in parts_todo:
            here, below = materialize(state, root, f"{rel}/{p.prefix}", p.tree, cas, proven, p.digest)
            if here or below:
                n += here + below
                atomic.crash_point("placed-part")  # a part placed, its tree's others and its record not yet
        if wrote or n:  # a part placed whole is renamed into one of this tree's directories: their stats moved
            dirs = _dirs(root / rel, own, parts=parts)
    if wrote or n:
        state.place(rel, (digest, placed, dirs))
    return wrote, n


def _parts(entries: Sequence[OutputEntry]) -> tuple[Part, ...]:
    return entries.parts if isinstance(entries, Tree) else ()


def _same_shape(state: BuildState, rel: str, files: Iterable[str], parts: tuple[Part, ...]) -> bool:
    """The record at `rel`, of these files' paths, is of a tree made as this one is: a flat tree's has no
    part records below it, a composed one's holds none of its parts' files (a flat record of the same
    files, placed by the placement lane or from a remote cache's answer, is updated into a composed one,
    and back)."""
    if not parts:
        return not state.recorded_below(rel)
    prefixes = tuple(f"{p.prefix}/" for p in parts)
    return not any(path.startswith(prefixes) for path in files)


def _drop_parts(state: BuildState, root: Path, rel: str, keep: set[str]) -> None:
    """Remove the parts recorded below `rel` that are not in `keep` (and the records of their own
    parts), with the directories that leaves empty: a model gone from a repository."""
    base = rel + "/"
    live = {f"{base}{p}" for p in keep}

    def stale(k: str) -> bool:
        while k.startswith(base):
            if k in live:
                return False
            k = k.rpartition("/")[0]
        return True

    for k in sorted(k for k in state.recorded_below(rel) if k not in live and k in state.outputs and stale(k)):
        p = root / k
        if os.path.lexists(p):
            atomic.remove(p)
        del state.outputs[k]
        _prune_empty(p.parent, root / rel)


def assemble(root: Path, rel: str, entries: Sequence[OutputEntry], cas: Cas) -> tuple[dict, dict]:
    """`root/rel` assembled whole from `entries` (aside, then renamed into place): its files' records and
    its directories' stats, as a build state records a placed tree (the placement lane runs this too)."""
    return _replace(root, rel, entries, cas), _dirs(root / rel, entries)


def _dirs(dest: Path, entries: Sequence[OutputEntry], old: dict | None = None,
          touched: set[str] = frozenset(), parts: tuple[Part, ...] = ()) -> dict:
    """The stat of every directory of the tree, taken once it is complete; of a composed tree, the
    directories that hold its own entries and lead to its parts (each part records its own). `old`:
    the directories' stats before an update in place, which touched only the entries of `touched`:
    when the tree has the same directories, the others are at their old stat (a repository of 10,000
    models, one model changed, is not 30,000 lstats)."""
    names = _dir_names([e.path for e in entries] + [p.prefix for p in parts])
    base = f"{dest}/"
    if old is not None and old.keys() == set(names):
        return {d: stat_sig(os.lstat(base + d)) if d in touched else old[d] for d in names}
    return {d: stat_sig(os.lstat(base + d)) for d in names}


def _dir_names(paths: list[str]) -> list[str]:
    """The directories of a tree that hold these paths ("" its top), sorted."""
    names = {""}
    for path in paths:
        if "/" not in path:  # at the top (a repository's 10,000 parts): no directory of its own
            continue
        d = os.path.dirname(path)
        while d and d not in names:
            names.add(d)
            d = os.path.dirname(d)
    return sorted(names)


def _work(root: Path) -> Path:
    return root / STATE_DIR / "tmp"


def _place(p: Path, e: OutputEntry, cas: Cas) -> tuple:
    if isinstance(e, Symlink):
        os.symlink(e.target, p)
    else:
        cas.link(e.digest, e.executable, p)
    return (*e.identity, stat_sig(os.lstat(p)))


def _update(root: Path, dest: Path, old: dict, entries: Sequence[OutputEntry], cas: Cas) -> dict:
    placed = {}
    for e in entries:
        prev = old.get(e.path)
        if prev is not None and prev[:2] == e.identity:
            placed[e.path] = prev
            continue
        p = dest / e.path
        if not p.parent.is_dir():
            p.parent.mkdir(parents=True, exist_ok=True)
        if os.path.isdir(p) and not os.path.islink(p):
            atomic.remove(p)
        tmp = atomic.temp_path(_work(root), "file")
        try:
            placed[e.path] = _place(tmp, e, cas)
            atomic.crash_point("update-file")
            os.replace(tmp, p)
        finally:
            atomic.unlink(tmp)  # left behind when `p` already was a link of the same blob
    for path in old.keys() - placed.keys():
        p = dest / path
        if os.path.lexists(p) and not (os.path.isdir(p) and not os.path.islink(p)):
            os.unlink(p)
        _prune_empty(p.parent, dest)
    return placed


def _prune_empty(d: Path, stop: Path) -> None:
    """Remove `d` and its parents, up to `stop`, while they are empty."""
    while d != stop and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent


def _replace(root: Path, rel: str, entries: Sequence[OutputEntry], cas: Cas) -> dict:
    dest = root / rel
    tmp = atomic.temp_path(_work(root), "new")
    tmp.mkdir()
    placed = {}
    try:
        for d in sorted({os.path.dirname(e.path) for e in entries} - {""}):
            os.makedirs(tmp / d, exist_ok=True)
        for e in entries:
            placed[e.path] = _place(tmp / e.path, e, cas)
    except OSError:
        atomic.remove(tmp)  # the old tree stays as it was
        raise
    atomic.crash_point("replace-tree")
    if not dest.parent.is_dir():  # mkdir of an existing directory is slow on some filesystems
        dest.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dest):
        trash = atomic.temp_path(_work(root), "old")
        os.rename(dest, trash)
        atomic.crash_point("swap-tree")
        os.rename(tmp, dest)
        atomic.remove(trash)
    else:
        os.rename(tmp, dest)
    return placed


def prune(state: BuildState, root: Path, live: set[str]) -> list[str]:
    """Remove the outputs this state recorded placing that are not in `live` (targets that no longer
    exist), and the directories that leaves empty up to tpbuild-out; returns what went. The parts of
    an output (`materialize`) go with it and stay with it."""
    gone: dict[str, None] = {}
    stale = list(set(state.outputs).difference(live))  # in C (a Mapping's keys() - live: in Python)
    # A part whose parent is live (each of a repository's 10,000 models, every build of every target)
    # stays: those are found in C, the others looked at ancestor by ancestor.
    parent_live = map(live.__contains__, map(itemgetter(0), map(str.rpartition, stale, repeat("/"))))
    for rel in sorted(compress(stale, map(not_, parent_live))):
        held = next((a for a in _ancestors(rel) if a in live or a in gone), None)
        if held in live:
            continue
        if held is None:
            p = root / rel
            if os.path.lexists(p):
                atomic.remove(p)
            gone[rel] = None
            _prune_empty(p.parent, root / OUT_DIR)
        del state.outputs[rel]
    return list(gone)


def _ancestors(rel: str):
    while "/" in rel:
        rel = rel.rpartition("/")[0]
        yield rel


class Placed(Mapping):
    """What tpbuild-out holds, output by output, as `(tree digest, {path: (kind, digest, stat)},
    {directory: stat})`: a composed output's record with its parts' merged in below their prefixes
    (the no-op stamp checks every file placed)."""

    def __init__(self, state: BuildState):
        self._outputs = state.outputs
        self._state = state  # its records below each output

    def __getitem__(self, rel: str) -> tuple:
        digest, files, dirs = self._outputs[rel]
        parts = self._state.recorded_below(rel)
        if not parts:
            return digest, files, dirs
        files, dirs = dict(files), dict(dirs)
        for k in parts:
            _d, f, ds = self._outputs[k]
            sub = k[len(rel) + 1:]
            files.update((f"{sub}/{p}", v) for p, v in f.items())
            dirs.update(((f"{sub}/{p}" if p else sub), v) for p, v in ds.items())
        return digest, files, dirs

    def __iter__(self):
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def records(self, rels: list[str]) -> tuple[list[tuple[str, tuple]], list[tuple[str, str]]]:
        """Each output at `rels` as placed, record by record, in one list: its own and then each of its parts'
        (and theirs), `(record, (tree digest, files, directories))`, none merged (`__getitem__` merges
        them); and `(record, tree digest)` of each part. Their own records and whether they have parts
        looked up for all at once, and the list made a run of outputs without parts at a time, in C (the
        no-op stamp's 20,000 outputs at 10,000 models, of which one, the repository, has parts: no list
        of each, nor a step of a loop); KeyError for one not recorded."""
        own = self._outputs.get_all(rels)
        if None in own:
            raise KeyError(rels[own.index(None)])
        placed: list[tuple[str, tuple]] = []
        parts: list[tuple[str, str]] = []
        start = 0
        for i, below in self._state.recorded_below_all(rels).items():
            records = self._outputs.get_all(below)
            placed += zip(rels[start:i + 1], own[start:i + 1])
            placed += zip(below, records)
            parts += zip(below, map(itemgetter(0), records))
            start = i + 1
        placed += zip(rels[start:], own[start:])
        return placed, parts

    def compared(self) -> list[tuple]:
        """Runs of records the place check found to be their trees' records now, in the order it found them,
        each all of one shape, as the columns it compared them by: (file paths, their kinds, directories,
        records, their values, each file's blob digest or link target and stat, each directory's stat), a
        record's files and directories a run at a time (`_Shape.compare`). A record placed again since
        has another value."""
        return self._state.compared

    def parts(self, rel: str) -> list[tuple[str, str]]:
        """(record, tree digest) of each part's record below the output at `rel` (none for a flat one)."""
        return [(k, self._outputs[k][0]) for k in self._state.recorded_below(rel)]

    def placed_now(self) -> list[tuple[str, tuple]]:
        """The records the build placed (each once), as the state holds them now: `(record, (tree digest,
        files, directories))`, a composed output's parts each by its own."""
        return [(k, self._outputs[k]) for k in dict.fromkeys(self._state.placed_now) if k in self._outputs]

    def holding(self, path: str) -> tuple[str, tuple] | None:
        """The record whose files or directories hold `path` (the deepest record at or above it), with
        it; None when no record is there."""
        for k in (path, *_ancestors(path)):
            if k in self._outputs:
                return k, self._outputs[k]
        return None
