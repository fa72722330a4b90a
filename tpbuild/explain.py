"""Why an action ran: what went into each action's last key, and the one-line cause when a key moves
(`--explain`, the report's `"why"`).

A constructive-trace cache knows only that a key moved, not what moved it. Like ninja's
`-d explain` and doit's recorded reasons, tpbuild keeps, per action, a *record*: a short digest of
every named part of its last key material (`Action.material_parts`), taken apart down to the unit a
person acts on — each input by its destination, each attribute of the action's spec (each env
variable and platform property on its own), each code module (the engine's, and those a run action
names), each tool, PATH and the fixed run environment, the salt and the key version. The cause is
the first part whose digest differs between the record and the new material, in the order of
`_RANK` (what moves every key comes first: a key version or an engine edit explains more than the
input that happens to differ too), followed by the count of the others.

What gets a `why` (and a new record): every action that executed (or failed running), or whose
result came from the remote cache, and every action whose key differs from the last build's (a
cache hit under a new key: a reverted edit, another branch). An action answered under its last key
needs none, so a build that moves no key reads no record at all; nor does a hit with no record to
compare with (after `tpbuild clean`), though it is recorded. When the key did not move but the
action ran anyway, the cause is the cache: its result was evicted or removed, or found damaged and
quarantined. Failed and unstable results are explained but not recorded, as the build state does
not remember them either.

Format: `tpbuild-out/.tpbuild/why/<shard>`, memos (`memo.py`) of kind `why`, the actions spread over
`SHARDS` files by a digest of their id, so a build that moves a few keys reads and rewrites a few
small files. A shard: {"shared": {ref: {part: short}}, "actions": {action id: [key, ref, {part:
short}]}}: the parts the actions of one rule have in common (rule, version, code, tools, engine,
PATH, ...) are written once per shard under `ref`, their own digest; each action keeps its own
(spec attributes, written content, inputs). Digests are shortened to `SHORT` hex digits: a record
only explains, the key decides, so a collision costs at worst a vaguer explanation. A missing or
damaged shard is a miss (its actions get "no record"). Records are saved before the build state,
so after a crash they are at least as new as it is.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable, Container, Iterable, Mapping

from . import code, digest, memo
from .action import Action, Artifact, Entry, OutputEntry, Source, blobs_of, tree_digest
from .outputs import Last
from .scheduler import Outcome, Status

KIND, VERSION = "why", 1
SHARDS = 64
SHORT = 12   # hex digits kept of each digest
SHOWN = 8    # hex digits of a digest shown in a message
# Parts the actions of one rule (in one process) have in common: written once per shard.
SHARED = {"version", "salt", "kind", "rule", "rule_version", "mnemonic", "tools", "engine", "code", "env"}
# Parts kept verbatim rather than digested: short, and worth showing (`rule version changed (1 -> 2)`).
VERBATIM = {"version", "kind", "rule", "rule_version", "mnemonic"}
# Which differing part explains a moved key best, by the first word of its name; attributes (the spec
# and the written content) and anything new come between the rule and the inputs.
_RANK = {"version": 0, "salt": 1, "engine": 2, "code": 3, "PATH": 4, "RUN_ENV": 4, "tool": 5, "kind": 6, "rule": 6,
         "rule_version": 6, "mnemonic": 6, "in": 8}
_ATTRIBUTES = 7

Parts = dict[str, str]


class Record:
    """What went into one key: `shared` is interned under `ref` when saved. Equal by value (a plain
    class: a dataclass's generated methods were compiled on every start)."""

    __slots__ = ("key", "ref", "shared", "own")

    def __init__(self, key: str, ref: str, shared: Parts, own: Parts):
        self.key = key  # the key, shortened
        self.ref = ref
        self.shared = shared
        self.own = own

    def __eq__(self, other) -> bool:
        return other.__class__ is Record and (self.key, self.ref, self.shared, self.own) == \
            (other.key, other.ref, other.shared, other.own)

    def parts(self) -> Parts:
        return {**self.shared, **self.own}


class Recorder:
    """Takes key material apart into records; the parts an action shares with the others of its rule
    are taken apart once per build."""

    def __init__(self, salt: str):
        self.salt = salt
        self._shared: dict[bytes, tuple[str, Parts]] = {}

    def record(self, action: Action, key: str, input_digests: list[tuple[str, str]]) -> Record:
        shared_values, own = [], {}
        for name, value in action.material_parts(input_digests, self.salt):
            if name in SHARED:
                shared_values.append((name, value))
            else:
                own.update(_own_parts(name, value))
        memo_key = digest.canonical_json([shared_values, action.code_modules])
        hit = self._shared.get(memo_key)
        if hit is None:
            shared = dict(p for name, value in shared_values for p in _shared_parts(name, value, action))
            hit = self._shared[memo_key] = (_short(shared), shared)
        return Record(digest.hex_part(key)[:SHORT], hit[0], hit[1], own)


def _short(value: object) -> str:
    return digest.hex_part(digest.of_value(value))[:SHORT]


def _short_input(d: str) -> str:
    """An input digest (`action.input_digest`): a file's kind letter and content digest, a tree's
    digest, or a symlink's target. A content digest is kept as the blob store names it, and an
    executable file is marked `x:`."""
    head, sep, tail = d.rpartition(":")
    if sep and head.endswith(digest.ALGO):
        kind = head[: -len(digest.ALGO)]
        return ("" if kind in ("", "f") else f"{kind}:") + tail[:SHORT]
    return f"l:{_short(d)}"


def _shared_parts(name: str, value, action: Action) -> Iterable[tuple[str, str]]:
    if name in VERBATIM:
        yield name, str(value)
    elif name == "tools":
        for tool, v in value.items():
            yield f"tool:{tool}", _short(v)
    elif name == "engine":
        yield name, _short(value)
        for module, d in code.module_digests(code.ENGINE, False).items():
            yield f"engine:{module}", _short(d)
    elif name == "code":
        if value:
            yield name, _short(value)
        modules = action.code_modules
        if modules and code.digest_of(modules) == value:  # by module only when they are what the key has
            for module, d in code.module_digests(modules).items():
                yield f"code:{module}", _short(d)
    elif name == "env":
        if value:
            run_env, path = value
            yield "RUN_ENV", _short(run_env)
            yield "PATH", _short(path)
    else:
        yield name, _short(value)


def _own_parts(name: str, value) -> Iterable[tuple[str, str]]:
    if name == "spec":
        for attr, v in value.items():
            if isinstance(v, dict):  # env, exec_properties: one part per variable
                for k, x in v.items():
                    yield f"{attr}:{k}", _short(x)
            else:
                yield attr, _short(v)
    elif name == "inputs":  # zipped in C: the repository's action has 10,000 inputs, recorded every build
        yield from zip(_input_names([dest for dest, _ in value]), map(_short_input, [d for _, d in value]))
    elif name == "content":
        if value:
            yield name, digest.hex_part(value)[:SHORT]
    else:
        yield name, _short(value)


def _input_names(dests: list[str]) -> list[str]:
    """`in:<dest>`, numbered when several inputs share a destination (trees merged at one place)."""
    if len(set(dests)) == len(dests):  # the usual case, without a Python loop over every input
        return ["in:" + dest for dest in dests]
    names, seen = [], {}
    for dest in dests:
        n = seen.get(dest, 0)
        seen[dest] = n + 1
        names.append(f"in:{dest}" + (f"#{n}" if n else ""))
    return names


# -- the cause ------------------------------------------------------------------------------------

Upstream = Callable[[str], tuple[tuple[OutputEntry, ...] | None, tuple[OutputEntry, ...]]]


def cause(action: Action, old: Record | None, new: Record, *, known: bool, upstream: Upstream) -> str | None:
    """The first reason the key moved and the count of the others; None when it did not move.
    `known`: the build state has a last result of the action (so a missing record is not a first
    build). `upstream(action id)`: that upstream action's entries at its last build (None if
    unknown) and now."""
    if old is None:
        return ("no record of what went into its last key (lost, or kept by an older tpbuild)" if known
                else "no record (first build of this action)")
    if old.key == new.key:
        return None
    was, now = old.parts(), new.parts()
    changed = [n for n in now if was.get(n) != now[n]] + [n for n in was if n not in now]
    for aggregate in ("engine", "code"):  # named by module when a module is
        if any(n.startswith(f"{aggregate}:") for n in changed):
            changed = [n for n in changed if n != aggregate]
    if not changed:
        return "key material changed (no recorded part differs)"
    changed.sort(key=lambda n: _RANK.get(n.split(":")[0], _ATTRIBUTES))
    first = _describe(changed[0], was.get(changed[0]), now.get(changed[0]), action, upstream)
    more = len(changed) - 1
    return first + (f" (and {more} more change{'s' if more > 1 else ''})" if more else "")


def _shown(short: str | None) -> str:
    if short is None:
        return "none"
    kind, sep, hexd = short.rpartition(":")
    return f"{kind}{sep}{hexd[:SHOWN]}"


def _describe(name: str, old: str | None, new: str | None, action: Action, upstream: Upstream) -> str:
    group, _, rest = name.partition(":")
    if group == "in":
        inputs = dict(zip(_input_names([d for d, _ in action.inputs]), [i for _, i in action.inputs]))
        return _describe_input(name, rest, old, new, inputs, upstream)
    how = "added" if old is None else "removed" if new is None else "changed"
    if name in VERBATIM:
        what = "key version" if name == "version" else name.replace("_", " ")
        return f"{what} {how} ({old or 'none'} -> {new or 'none'})"
    if group == "salt":
        return f"cache salt {how}"
    if group == "engine":
        return f"engine code changed: {rest}" if rest else "engine code changed"
    if group == "code":
        return f"code changed: module {rest}" if rest else "code changed"
    if group in ("PATH", "RUN_ENV"):
        return f"key material changed: {'PATH' if group == 'PATH' else 'the run environment (RUN_ENV)'}"
    if group == "tool":
        return f"key material changed: tool {rest} version"
    if group == "content":
        return f"written content {how} ({_shown(old)} -> {_shown(new)})"
    if group in ("argv", "env", "exec_properties", "outs", "timeout", "out", "executable"):
        what = {"argv": "argv (the command)"}.get(name, name.replace(":", " "))
        return f"attribute {what} {how}"
    return f"key material changed: {name} {how}"


def _describe_input(name: str, dest: str, old: str | None, new: str | None, inputs: dict,
                    upstream: Upstream) -> str:
    inp = inputs.get(name)
    if inp is None:
        return f"input {(dest.rpartition('#')[0] if '#' in dest else dest) or '(root)'} removed"
    if isinstance(inp, Source):
        what = f"input {inp.path}"
    else:
        what = f"upstream output {inp.action}" + (f" {inp.path}" if inp.path else "")
    if old is None:
        return f"{what} added"
    if isinstance(inp, Artifact) and not inp.path:
        detail = _tree_change(old, *upstream(inp.action))
        if detail:
            return f"{what} changed: {detail}"
    return f"{what} changed ({_shown(old)} -> {_shown(new)})"


def _tree_change(old_digest: str, before: tuple[OutputEntry, ...] | None, after: tuple[OutputEntry, ...]) -> str:
    """Which paths of an upstream tree changed, when its entries at its last build are the ones this
    action's record saw (else "": the tree digests alone are shown)."""
    if before is None or _short_input(tree_digest(before)) != old_digest:
        return ""
    was = {e.path: e for e in before}
    now = {e.path: e for e in after}
    paths = sorted(p for p in was.keys() | now.keys() if p not in was or p not in now
                   or was[p].identity != now[p].identity)
    if not paths:
        return ""
    p = paths[0]
    first = (f"{p} added" if p not in was else f"{p} removed" if p not in now
             else f"{p} ({_entry_shown(was[p])} -> {_entry_shown(now[p])})")
    return first + (f" and {len(paths) - 1} more file{'s' if len(paths) > 2 else ''}" if len(paths) > 1 else "")


def _entry_shown(e: OutputEntry) -> str:
    kind, ref = e.identity
    if isinstance(e, Entry):
        return ("x:" if e.executable else "") + digest.hex_part(ref)[:SHOWN]
    return f"l:{ref}"


def _cache_cause(o: Outcome, quarantined: set[str], remote: bool) -> str:
    """Why an action whose key did not move was not answered by the cache."""
    damaged = [d for d, _ in blobs_of(o.entries) if d in quarantined]
    if damaged:
        return (f"key unchanged; its cached output was damaged and quarantined "
                f"(blob {digest.hex_part(damaged[0])[:SHOWN]})")
    why = "key unchanged; its cached result was gone from the local cache (evicted or removed)"
    return why + (" and the remote cache had none" if remote and o.status is not Status.REMOTE else "")


# -- one build ------------------------------------------------------------------------------------

def annotate(outcomes: dict[str, Outcome], last: Mapping[str, Last], records: "Records", recorder: Recorder, *,
             quarantined: Iterable[str], remote: bool, settled: Container[str] = ()) -> None:
    """Set `why` on every outcome that needs one (see the module docstring) and record the new
    parts of each recordable one. `last` is the build state's record before this build: action id
    -> its `outputs.Last`. `settled`: actions settled from that record (`delta`), at its key: a hit on
    it, with nothing to say, known without looking the record up (10,000 of them in a delta build)."""
    gone = set(quarantined)

    def upstream(aid: str):
        before = last.get(aid)  # a composed tree's record has its own entries only: its paths are not known
        return (before.entries if before is not None and not before.parts else None), outcomes[aid].entries

    for aid, o in outcomes.items():
        if aid in settled or not o.key or o.status is Status.SKIPPED:
            continue
        ran = o.status in (Status.EXECUTED, Status.REMOTE, Status.FAILED)
        prev = last.get(aid)
        if not ran and prev is not None and prev.key == o.key:
            continue
        new = recorder.record(o.action, o.key, list(o.input_digests))
        old = records.get(aid)
        if ran or old is not None:  # a hit with nothing to compare with (a cleaned workspace) is no news
            why = cause(o.action, old, new, known=prev is not None, upstream=upstream)
            o.why = why if why is not None else _cache_cause(o, gone, remote) if ran else ""
        if o.status.succeeded and not o.unstable and (old is None or old != new):
            records.put(aid, new)


class Records:
    """The records, by action id, loaded shard by shard as they are asked for."""

    def __init__(self, directory: Path, tmp: Path):
        self.dir = directory
        self.tmp = tmp
        self._shards: dict[str, dict] = {}
        self._dirty: set[str] = set()

    def _shard(self, aid: str) -> tuple[str, dict]:
        name = f"{int(digest.hex_part(digest.of_bytes(aid.encode()))[:4], 16) % SHARDS:02x}"
        shard = self._shards.get(name)
        if shard is None:
            data = memo.load(self.dir / name, KIND, VERSION)
            ok = (isinstance(data, dict) and isinstance(data.get("shared"), dict)
                  and isinstance(data.get("actions"), dict))
            shard = self._shards[name] = data if ok else {"shared": {}, "actions": {}}
        return name, shard

    def get(self, aid: str) -> Record | None:
        _, shard = self._shard(aid)
        try:
            key, ref, own = shard["actions"][aid]
            shared = shard["shared"][ref]
        except (KeyError, TypeError, ValueError):
            return None  # none, or damaged: a miss
        if not (isinstance(key, str) and isinstance(shared, dict) and isinstance(own, dict)):
            return None
        return Record(key, ref, shared, own)

    def put(self, aid: str, rec: Record) -> None:
        name, shard = self._shard(aid)
        shard["actions"][aid] = [rec.key, rec.ref, rec.own]
        shard["shared"][rec.ref] = rec.shared
        self._dirty.add(name)

    def save(self, live: set[str] | None = None) -> str | None:
        """Write the shards that changed, keeping only the actions in `live` when given (a build of
        every target: the records of targets that are gone go with them); None, or the first warning."""
        warning = None
        for name in sorted(self._dirty):
            shard = self._shards[name]
            actions = shard["actions"]
            if live is not None:
                actions = {aid: v for aid, v in actions.items() if aid in live}
            refs = {v[1] for v in actions.values() if isinstance(v, list) and len(v) == 3}
            value = {"shared": {r: s for r, s in shard["shared"].items() if r in refs}, "actions": actions}
            err = memo.save(self.dir / name, KIND, VERSION, value, self.tmp, f"the explain records {self.dir / name}",
                            depth=0)  # a shard: one of SHARDS
            warning = warning or err
        self._dirty.clear()
        return warning
