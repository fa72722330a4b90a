"""Actions: the closed set of things a build does, and the key that names each one's result.

Rules never run anything; they declare actions. There are three variants, after buck2's small set,
each a frozen value whose fields are exactly what it needs:
- `WriteAction`: a file whose content is known at analysis (a rendered config). Its content is its key.
- `TreeAction`: a directory assembled from files and other trees (a model directory, a model
  repository). It copies nothing: its result is a list of entries pointing into the blob store.
- `RunAction`: a subprocess in a scratch directory, with declared inputs placed in it and declared
  outputs collected from it (a genrule, an env build, a stub build). Only these may run on another
  machine, and only when the rule did not declare them too small to ship (`local_only`).

An action's key hashes what can change its result: the variant and its spec, the rule and its
version, the *content* digests of its inputs (so a rebuilt input that comes out byte-identical
changes no key downstream: early cutoff), fingerprints of external tools, the code that shapes the
result (the modules a `run` action runs, and the engine's own, see `code`), the environment a `run`
action gets (`RUN_ENV` and `PATH`), the platform it must run on (`exec_properties`), the cache salt
and `KEY_VERSION`, which retires every old entry when the meaning of a key changes. Presentation
(description, log hint) and scheduling hints (`local_only`) are not identity: they are excluded from
equality and from the key.

A result is a sequence of entries: `Entry` (a file in the blob store, plain or executable) or `Symlink`
(a link and its target, which names no blob). A tree action that takes whole upstream trees, each at a
destination of its own (a repository of model directories), makes a composed `Tree`: its own few
entries and those parts, never a flat copy, so one changed part costs one part (see `Tree`).
"""

from __future__ import annotations

import functools
import os
from enum import StrEnum
from collections.abc import Iterable, Sequence

from . import code, digest
from .label import Label
from .value import Frozen

_set = object.__setattr__  # a field, in a constructor (value.Frozen refuses assignment)

KEY_VERSION = 2

# A placeholder in `run` argv/env for the interpreter running tpbuild: its path differs between
# machines, so it must not enter keys verbatim (keys are shared through the remote cache).
PYTHON = "{python}"
# Likewise, in `run` argv: a file beside the action's own log for a tool's detailed log, which the
# failure message names and which outlives the scratch directory.
TOOL_LOG = "{tool_log}"
# The environment of every `run` action besides its own `env`: fixed by tpbuild, so no caller's
# variable reaches a command unseen. The placeholders stand for places on this machine whose paths
# must not enter keys: the scratch directory (HOME and TMPDIR are in it, so no user config is read),
# and the user's download cache (pip's; a cache changes how fast, never what). `PATH` is the caller's,
# because it decides which tools a command finds: it enters the key of every `run` action.
SCRATCH = "{scratch}"
USER_CACHE = "{user_cache}"
RUN_ENV = {"HOME": f"{SCRATCH}/home", "TMPDIR": f"{SCRATCH}/tmp", "LANG": "C.UTF-8", "SOURCE_DATE_EPOCH": "0",
           "XDG_CACHE_HOME": USER_CACHE}


def run_path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin")
# A run action writes its declared outputs below this directory of its scratch directory.
OUT = "out"


class Source(Frozen):
    """A file of the workspace, by its path from the root."""

    __slots__ = __match_args__ = ("path",)

    def __init__(self, path: str):
        _set_source(self, path)  # by the slot's own setter, as `label.Label` (see below)


class Artifact(Frozen):
    """An output of an action: one file of its tree, or the whole tree when `path` is empty."""

    __slots__ = __match_args__ = ("action", "path")

    def __init__(self, action: str, path: str = ""):
        _set_action(self, action)
        _set_path(self, path)


# Past __setattr__, by the slots' own setters: the analysis memo makes a source and an artifact or two for
# every target it decodes, and object.__setattr__ took them 1.7 times as long (410 against 240 ns).
_set_source, _set_action, _set_path = Source.path.__set__, Artifact.action.__set__, Artifact.path.__set__
Input = Source | Artifact


class EntryKind(StrEnum):
    """What one path of an output tree is. The values are the on-disk and on-the-wire letters."""

    FILE = "f"
    EXECUTABLE = "x"
    SYMLINK = "l"


class Entry(Frozen):
    """A file of an output tree, held in the blob store under `digest`."""

    __slots__ = __match_args__ = ("path", "kind", "digest", "size")

    def __init__(self, path: str, kind: EntryKind, digest: str, size: int):
        kind = kind if kind.__class__ is EntryKind else EntryKind(kind)
        if kind is EntryKind.SYMLINK:
            raise ValueError(f"{path}: a symlink is a Symlink, not an Entry")
        _set(self, "path", path)
        _set(self, "kind", kind)
        _set(self, "digest", digest)
        _set(self, "size", size)

    @staticmethod
    def file(path: str, digest_: str, size: int, executable: bool) -> "Entry":
        return Entry(path, EntryKind.EXECUTABLE if executable else EntryKind.FILE, digest_, size)

    @property
    def executable(self) -> bool:
        return self.kind is EntryKind.EXECUTABLE

    @property
    def identity(self) -> tuple[EntryKind, str]:
        """What the path holds, comparable across both forms (the materializer's change test)."""
        return (self.kind, self.digest)

    def moved(self, path: str) -> "Entry":
        return Entry(path, self.kind, self.digest, self.size)

    def to_json(self) -> list:
        return [self.path, self.kind.value, self.digest, self.size]

    @staticmethod
    def from_json(v: list) -> "OutputEntry":
        """An entry of either form, from the encoding `to_json` of both writes."""
        if v[1] == EntryKind.SYMLINK:
            return Symlink(v[0], v[2])
        return Entry(v[0], EntryKind(v[1]), v[2], int(v[3]))


class Symlink(Frozen):
    """A symbolic link of an output tree; its target is kept verbatim and names no blob."""

    __slots__ = __match_args__ = ("path", "target")
    kind = EntryKind.SYMLINK
    size = 0

    def __init__(self, path: str, target: str):
        _set(self, "path", path)
        _set(self, "target", target)

    @property
    def identity(self) -> tuple[EntryKind, str]:
        return (EntryKind.SYMLINK, self.target)

    def moved(self, path: str) -> "Symlink":
        return Symlink(path, self.target)

    def to_json(self) -> list:
        return [self.path, EntryKind.SYMLINK.value, self.target, 0]


OutputEntry = Entry | Symlink


def tree_digest(entries: Iterable[OutputEntry]) -> str:
    """The digest of a whole tree, in a Merkle form after REAPI's `Directory` digests: a directory hashes
    its children by name, a file or link with its kind and digest or target, a subdirectory with that
    directory's digest. So it depends on the files alone, never on how the tree was made, and a
    composed `Tree` takes each part's digest as it is instead of hashing the part's entries again."""
    if isinstance(entries, Tree):
        return entries.digest
    return _merkle(entries, ())


def _merkle(entries: Iterable[OutputEntry], parts: Iterable[tuple[str, str]]) -> str:
    # A directory: (name, kind letter or "d") -> a leaf's digest or target, a subdirectory (a dict), or
    # the digest of a part. Files and directories are apart by kind, so a tree that names one path
    # both ways (which no filesystem holds) still hashes, to a digest of its own.
    root: dict = {}
    for e in entries:
        *dirs, name = e.path.split("/")
        _subdir(root, dirs)[(name, e.kind.value)] = e.identity[1]
    for prefix, d in parts:
        if "/" not in prefix:  # a part at the top (a repository's models): 10,000 of them
            root[(prefix, "d")] = d
            continue
        *dirs, name = prefix.split("/")
        _subdir(root, dirs)[(name, "d")] = d
    return _directory_digest(root)


def _subdir(node: dict, names: list[str]) -> dict:
    for n in names:
        node = node.setdefault((n, "d"), {})
    return node


def _directory_digest(node: dict) -> str:
    return digest.of_value([[name, kind, v if isinstance(v, str) else _directory_digest(v)]
                            for (name, kind), v in sorted(node.items())])


EMPTY_TREE = _directory_digest({})


class Part:
    """A whole upstream tree placed at `prefix` of a composed tree: its digest, and its result as the
    upstream has it (a `Tree` or a tuple of entries, read only when a reader needs its files). Never
    changed once made, and never compared: a plain slotted class, not a `value.Frozen` (whose
    constructor sets each field through `object.__setattr__`), as a repository of 10,000 models is
    composed of 10,000 of these in every build that settles or keys it, at a third of the cost so."""

    __slots__ = ("prefix", "digest", "tree")

    def __init__(self, prefix: str, digest: str, tree: Sequence[OutputEntry]):
        self.prefix = prefix
        self.digest = digest
        self.tree = tree

    def __repr__(self) -> str:
        return f"Part({self.prefix!r}, {self.digest!r})"


class Tree(Sequence):
    """A whole tree result: a sequence of its entries in path order, built on first read, with its
    digest.

    A composed tree is its own entries plus `parts`. It is recorded (the build state, the action cache)
    as its own entries and the number of its parts, which the key that finds the record makes exact:
    the key covers every input's digest, so the parts are the action's current inputs
    (`parts_of`). Its digest is computed from the parts' digests, it is placed part by part
    (`outputs.materialize`), and the blobs it names itself (`blobs`) are its own entries' only: each
    part's are its upstream's, which the build has checked as that upstream's. Read as a sequence it is
    exactly the flat tree, so whoever needs the files (a run action's inputs, an upload) gets them.

    A tree read from a record keeps its own entries as JSON until they are read (`raw`); every argument
    may be given by position, so that the 20,000 flat results of a no-op build at 10,000 models are made
    by one `map` over their records' columns (`delta._recorded`)."""

    __slots__ = ("parts", "_own", "_raw", "_flat", "_digest")

    def __init__(self, own: tuple[OutputEntry, ...] = (), parts: tuple[Part, ...] = (),
                 raw: list | None = None, digest_: str | None = None):
        self.parts = parts
        self._own = None if raw is not None else own
        self._raw = raw
        self._flat: tuple[OutputEntry, ...] | None = None
        self._digest = digest_

    @property
    def own(self) -> tuple[OutputEntry, ...]:
        """Its entries besides its parts' (of a flat tree, all of them)."""
        if self._own is None:
            self._own = tuple(Entry.from_json(e) for e in self._raw)
            self._raw = None
        return self._own

    @property
    def digest(self) -> str:
        if self._digest is None:
            self._digest = _merkle(self.own, ((p.prefix, p.digest) for p in self.parts))
        return self._digest

    def flat(self) -> tuple[OutputEntry, ...]:
        if self._flat is None:
            if not self.parts:
                self._flat = self.own
            else:
                out = list(self.own)
                for p in self.parts:
                    out.extend(e.moved(f"{p.prefix}/{e.path}") for e in p.tree)
                out.sort(key=lambda e: e.path)
                self._flat = tuple(out)
        return self._flat

    def composed(self, parts: tuple[Part, ...], digest_: str | None = None) -> "Tree":
        """A tree of these own entries (read or not) and `parts`."""
        return Tree(self._own or (), parts, raw=self._raw, digest_=digest_)

    def own_json(self) -> list:
        """Its own entries as records keep them."""
        return self._raw if self._raw is not None else [e.to_json() for e in self.own]

    def blobs(self) -> list[tuple[str, bool]]:
        """(digest, executable) of the blobs its own entries name (see the class)."""
        if self._raw is not None:
            return [(e[2], e[1] == EntryKind.EXECUTABLE) for e in self._raw if e[1] != EntryKind.SYMLINK]
        return [(e.digest, e.executable) for e in self.own if isinstance(e, Entry)]

    def entry(self, path: str) -> OutputEntry | None:
        """The entry at `path`, found without building the others."""
        if self._raw is not None:
            hit = next((Entry.from_json(e) for e in self._raw if e[0] == path), None)
        else:
            hit = next((e for e in self.own if e.path == path), None)
        if hit is not None:
            return hit
        for p in self.parts:
            if path.startswith(p.prefix + "/"):
                inner = entry_of(p.tree, path[len(p.prefix) + 1:])
                return inner.moved(path) if inner is not None else None
        return None

    def input_digest(self, path: str) -> str | None:
        """`input_digest` of the one file at `path` (None if it has none), from the record's JSON when
        the entries are not built (a no-op build at 10,000 models reads 20,000 files of upstream trees
        so: each model's config, and the one labels file every model ships)."""
        if self._raw is not None:
            for e in self._raw:
                if e[0] == path:
                    return e[1] + e[2]  # kind letter and digest (of a link, its target), as `identity`
        hit = self.entry(path)
        return input_digest((hit,), whole_tree=False) if hit is not None else None

    def __len__(self) -> int:
        return len(self.flat())

    def __getitem__(self, i):
        return self.flat()[i]

    def __iter__(self):
        return iter(self.flat())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Tree, tuple, list)):
            return self.flat() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Tree({len(self.own)} own entries, {len(self.parts)} parts, {self.digest})"


def recorded(own: Tree, n_parts: int, parts, digest_: str | None = None) -> Tree | None:
    """A tree result as a record keeps it (its own entries and how many parts it composed), read back
    under the key that found it: a flat one as it is; a composed one with `parts()`, the parts its
    action composes now, None when they are not as many as recorded (the record is then a miss)."""
    if not n_parts:
        return own.composed((), digest_)
    now = parts()
    return own.composed(now, digest_) if len(now) == n_parts else None


def entry_of(entries: Sequence[OutputEntry], path: str) -> OutputEntry | None:
    """The entry of a tree result at `path`, None if it has none."""
    if isinstance(entries, Tree):
        return entries.entry(path)
    return next((e for e in entries if e.path == path), None)


def blobs_of(entries: Iterable[OutputEntry]) -> Iterable[tuple[str, bool]]:
    """(digest, executable) of every blob the entries name: what must be in the store for them to be used.
    Of a composed `Tree`, its own entries' (its parts' are their upstreams')."""
    if isinstance(entries, Tree):
        return entries.blobs()
    return ((e.digest, e.executable) for e in entries if isinstance(e, Entry))


def blobs_named(results: list) -> dict[tuple[str, bool], None]:
    """`blobs_of` of each of `results` (their entries), each blob once, in order. By column when every
    one is a tree that holds its own entries as read (`raw`) and names plain files only (a settled
    build's): the digests taken from the entries' JSON in C, not by a `Tree.blobs` call of each (at
    10,000 models, 20,000 calls were a tenth of writing the no-op stamp)."""
    from itertools import chain, repeat
    from operator import attrgetter, itemgetter

    if {*map(type, results)} == {Tree}:
        own = list(map(attrgetter("_raw"), results))
        if None not in own:
            own = list(chain.from_iterable(own))
            if {*map(itemgetter(1), own)} <= {EntryKind.FILE.value}:  # not executable, no symlink
                return dict.fromkeys(zip(map(itemgetter(2), own), repeat(False)))
        return dict.fromkeys(chain.from_iterable(map(Tree.blobs, results)))
    return dict.fromkeys(chain.from_iterable(map(blobs_of, results)))


def input_digest(entries: tuple[OutputEntry, ...], whole_tree: bool) -> str:
    """How an input enters a key: a whole tree by its tree digest, one file (a source, or one path of
    an upstream tree) by its kind and digest. The scheduler's keys and `affected`'s analysis-only
    identities both name inputs through this one function."""
    if whole_tree:
        return tree_digest(entries)
    kind, ref = entries[0].identity
    return f"{kind.value}{ref}"


class ActionKind(StrEnum):
    WRITE = "write"
    TREE = "tree"
    RUN = "run"


class Action(Frozen):
    """What every variant has (never instantiated itself: see the three variants below). `tools`,
    `description`, `log_hint` and `code_modules` are presentation, not identity: equality and the hash
    pass over them."""

    kind: ActionKind  # each variant's
    __slots__ = __match_args__ = ("id", "owner", "mnemonic", "rule", "rule_version", "inputs", "tools",
                                  "description", "log_hint", "code", "code_modules")
    _compared = ("id", "owner", "mnemonic", "rule", "rule_version", "inputs", "code")

    def __init__(self, id: str, owner: Label, mnemonic: str, rule: str, rule_version: str,
                 inputs: tuple[tuple[str, Input], ...] = (), tools: dict | None = None, description: str = "",
                 log_hint: str = "", code: str = "", code_modules: tuple[str, ...] = ()):
        _set(self, "id", id)
        _set(self, "owner", owner)
        _set(self, "mnemonic", mnemonic)
        _set(self, "rule", rule)
        _set(self, "rule_version", rule_version)
        # (destination, input): for a tree, where the input lands in the output; for a run, where it is
        # placed in the scratch directory before the command runs.
        _set(self, "inputs", inputs)
        _set(self, "tools", {} if tools is None else tools)
        _set(self, "description", description)
        _set(self, "log_hint", log_hint)
        _set(self, "code", code)  # run actions: digest of the modules the command runs (code.digest_of)
        # Those modules by name: not identity (`code` is), kept so an explanation can name the one edited.
        _set(self, "code_modules", code_modules)

    def upstream(self) -> set[str]:
        return {i.action for _, i in self.inputs if isinstance(i, Artifact)}

    @property
    def remotable(self) -> bool:
        """May a remote executor run it? In-process actions are a few syscalls: never worth shipping."""
        return False

    def spec(self) -> dict:
        """The variant's own fields as they enter the key (the encoding is fixed: see key_material)."""
        return {}

    def key_material(self, input_digests: list[tuple[str, str]], salt: str) -> bytes:
        return material(self.kind, self.definition().encode(), self.code, input_digests, salt)

    def material_parts(self, input_digests: list[tuple[str, str]], salt: str) -> list[tuple[str, object]]:
        """The key material, part by part in its fixed order, each named: the key hashes the values
        (`key_material` is their `canonical_json`), `explain` compares them part by part to say why a
        key moved. One list for both, so an explanation covers exactly what the key does."""
        return [("version", KEY_VERSION), ("salt", salt), *self._own_parts(), ("inputs", input_digests),
                ("engine", code.engine()), ("code", self.code), ("env", _env(self.kind))]

    def _own_parts(self) -> list[tuple[str, object]]:
        """The parts of the key material that analysis decides (see `definition`)."""
        return [("kind", self.kind.value), ("rule", self.rule), ("rule_version", self.rule_version),
                ("mnemonic", self.mnemonic), ("spec", self.spec()), ("content", self._content_digest()),
                ("tools", self.tools)]

    def definition(self) -> str:
        """The own parts of its key material as they stand in it (their `canonical_json`, comma
        separated). Kept with the analysis memo, so an action whose key did not move is keyed
        (`material`) without being decoded: by the same bytes, not by a notion of "unchanged" of its own."""
        return ",".join(digest.canonical_json(value).decode() for _name, value in self._own_parts())

    def _content_digest(self) -> str:
        return ""

    def parts_of(self, resolved: Iterable[tuple[str, str, Sequence[OutputEntry]]]) -> tuple[Part, ...]:
        """The parts of a composed `Tree` it makes from its inputs as resolved now (`parts_of`)."""
        return parts_of(self.kind, self.inputs, resolved)


class WriteAction(Action):
    """A file whose content analysis knows."""

    kind = ActionKind.WRITE
    __slots__ = ("out", "content", "executable")
    __match_args__ = Action.__match_args__ + __slots__
    _compared = Action._compared + __slots__

    def __init__(self, *args, out: str, content: bytes, executable: bool = False, **common):
        Action.__init__(self, *args, **common)
        _set(self, "out", out)
        _set(self, "content", content)
        _set(self, "executable", executable)

    def spec(self) -> dict:
        return {"out": self.out, "executable": self.executable}

    def _content_digest(self) -> str:
        return digest.of_bytes(self.content)


class TreeAction(Action):
    """A directory assembled from files and other trees."""

    kind = ActionKind.TREE
    __slots__ = ()


def part_dests(inputs: tuple[tuple[str, Input], ...]) -> frozenset[str]:
    """The destinations of the inputs a tree action takes as parts of a composed `Tree`: an upstream's
    whole tree at a destination of its own, which no other input shares, nests in or holds (and none
    merges at the root), so no other input can put a file among the part's. What the action declares
    decides it, never what the inputs hold."""
    dests = [d for d, _ in inputs]
    if "" in dests:
        return frozenset()
    seen: set[str] = set()
    twice: set[str] = set()
    above: set[str] = set()  # every proper ancestor of a destination
    for d in dests:
        (twice if d in seen else seen).add(d)
        while "/" in d:
            d = d.rpartition("/")[0]
            above.add(d)
    return frozenset(
        d for d, inp in inputs
        if isinstance(inp, Artifact) and not inp.path and d not in twice and d not in above
        and _NOT_NAMES.isdisjoint(d.split("/"))
        and ("/" not in d or not any(a in seen for a in _ancestors(d))))


_NOT_NAMES = frozenset(("", ".", ".."))  # a destination with one of them is no part (`part_dests`)


def parts_of(kind: str, inputs: tuple[tuple[str, Input], ...],
             resolved: Iterable[tuple[str, str, Sequence[OutputEntry]]]) -> tuple[Part, ...]:
    """The parts an action of this kind and these declared inputs composes from its inputs as resolved
    now, (destination, digest, result) of each whole-tree input at least: only a tree action's; an
    empty tree adds no files, so it is no part either. Takes the kind and inputs alone, so an action as
    declared (`analysiscache.Declared`) answers it undecoded."""
    if kind != ActionKind.TREE:
        return ()
    at = part_dests(inputs)
    return tuple(Part(dest, d, tree) for dest, d, tree in resolved if dest in at and d != EMPTY_TREE)


def _ancestors(path: str) -> Iterable[str]:
    while "/" in path:
        path = path.rpartition("/")[0]
        yield path


class RunAction(Action):
    """A subprocess in a scratch directory, its declared inputs placed in it, its declared outputs taken."""

    kind = ActionKind.RUN
    __slots__ = ("argv", "env", "outs", "timeout", "exec_properties", "local_only")
    __match_args__ = Action.__match_args__ + __slots__
    _compared = Action._compared + __slots__[:-1]  # not `local_only`

    def __init__(self, *args, argv: tuple[str, ...], env: tuple[tuple[str, str], ...] = (), outs: tuple[str, ...],
                 timeout: float | None = None, exec_properties: tuple[tuple[str, str], ...] = (),
                 local_only: bool = False, **common):
        Action.__init__(self, *args, **common)
        _set(self, "argv", argv)
        _set(self, "env", env)  # sorted
        _set(self, "outs", outs)  # sorted, below the scratch directory's `out/`
        _set(self, "timeout", timeout)  # seconds; the process group is killed after it
        # Platform properties (REAPI's, e.g. container-image, OSFamily, a pool), sorted: where it must run.
        _set(self, "exec_properties", exec_properties)
        # Declared by the rule: too small to be worth shipping to a remote executor.
        _set(self, "local_only", local_only)

    @property
    def remotable(self) -> bool:
        return not self.local_only

    def spec(self) -> dict:
        spec = {"argv": list(self.argv), "env": dict(self.env), "outs": list(self.outs), "timeout": self.timeout}
        if self.exec_properties:  # absent when empty, so keys of actions that set none are unchanged
            spec["exec_properties"] = dict(self.exec_properties)
        return spec


def _env(kind: ActionKind) -> list:
    return [RUN_ENV, run_path()] if kind is ActionKind.RUN else []


def material(kind: ActionKind, definition: bytes, code_digest: str, input_digests: list[tuple[str, str]],
             salt: str) -> bytes:
    """An action's key material from its `definition` and what the build adds: the `canonical_json`
    of `Action.material_parts`' values, assembled part by part (a JSON list is its items' encodings
    between brackets, comma separated), so that the analysis memo's definition of an action keys it
    exactly as the action itself does."""
    env = digest.canonical_json(_env(kind)) if kind is ActionKind.RUN else b"[]"
    return b"[%b,%b,%b,%b,%b,%b,%b]" % (_encoded(KEY_VERSION), _encoded(salt), definition,
                                        digest.canonical_rows(input_digests), _encoded(code.engine()),
                                        _encoded(code_digest), env)


@functools.lru_cache(maxsize=256)
def _encoded(value: str | int) -> bytes:
    """A part every action of a build (or of a rule) shares, encoded once."""
    return digest.canonical_json(value)


def key_of(material: bytes) -> str:
    """The local key; the remote cache names the same material by its SHA-256."""
    return digest.of_bytes(material)


def wire_key_of(material: bytes) -> str:
    import hashlib  # here, as only the remote cache needs SHA-256: loading it (OpenSSL) took 2 ms of every build

    return hashlib.sha256(material).hexdigest()
