"""The persisted memo of analysis, per package, so a no-op build parses no manifest and runs no rule.

Format: a journal (`memo.Journal`) of kind `analysis` in the workspace's memo directory, whose meta
is the fingerprint below with the rule sets' identity (`tpbuild.rulesets`), and whose records are
package -> PackageRecord. A record is decoded only when a build loads its package, and a save appends
only the records that build made or dropped, so what an edit costs here is the packages it touches.
Another version, fingerprint or identity is a miss; so is a record that does not decode (for its
package alone).

A record is plain JSON in a fixed positional shape (`_record_json`), not the tagged form `memo.encode`
gives any value: [watched [paths with a stat, their stats as one hex text, {other path: state}],
targets, facts {path: entry as text}, generation], a target [name, rule, refs, keypath, manifest,
deps_digest, actions, info, info_digest, volatile], an action [id, kind, mnemonic, inputs as
(destination, upstream action or null for a source, path) triples, definition, code].
A no-op build of 10,000 models decodes every record: tagged, the parser called back into Python for
each of their 260,000 objects (0.45 s); plain, it builds lists in C and this module makes the few
objects a record holds. A target's info values are inline when they are plain JSON, else their
`memo.encode_text` (rebuilt only as `memo_types`, when first read: `TargetInfo.deferred`); a file's
facts are always their text, read only when the file's stat moved.

The watched stats are one text of packed integers, not four JSON numbers each (each decoded into an object:
a third of a record's parse): a build of `//...` joins every record's text and compares it with the text
of the stats taken now, one compare for 30,000 stats at 10,000 models (`AnalysisCache.check_all`).

A package's record holds what analysing it produced (each target's references, actions and
`TargetInfo`) and the stat of everything analysis looked at: the manifest, each source it checked or
read, each directory it listed. It is valid while all of those stats are unchanged. A target's record
is reused only if its dependencies' infos are also unchanged (`deps_digest`), so a change upstream
re-runs exactly the rules downstream of it. The meta covers the engine's and the rule sets' code (by
stat), the rule sets' entry points, tpbuild.toml and the key version: new rule code means fresh analysis.

An action is recorded as declared (`Declared`): what the build's walk of the action graph and its
key need, with the rest of the action as text, made only for an action the scheduler must key or run
(from that text and the definition: each field is recorded once). So a valid package whose actions'
keys did not move costs the parse of its record, not the construction of its actions.

Those texts (a quarter of the memo's bytes) are not in the record: a second journal (`TEXT_KIND`, beside
the memo, of the same meta) holds each record's, a list in the order of its targets' actions, under the
package and the record's generation (`_text_key`), and a package's list is decoded only when one of its
actions is. A no-op build then parses no text; it only asks whether the list is there (a key looked up,
nothing decoded). Written before the records and under a key no other record has, the list can never
be another record's: a kill between the two saves leaves a record without its list, which is a miss of
that package (analysed again), or a list without a record (never read, and kept until the memo is made
anew: of another meta or version). Looking the list up costs the split of the texts journal into its
lines, not a parse: at 2,000 models a no-op build costs 0.5% less than with the texts in the records.

A file a rule knows only through `AnalysisContext.file_facts` (a model.py: its grammar, its model
class, its imports) is recorded with its facts too (`tpbuild.facts`): when its stat moved, the fact
function alone runs again, and the same facts keep the record (with the file's new stat, once that
is settled), so an edit of a model's body re-analyses nothing and loads no rule.

Stats, not contents, decide validity here, which is safe because analysis never puts a source's
*content* into an action without the action hashing it again at build time; a rule that reads a file
to decide its actions (a config.pbtxt) records that file, and a same-size rewrite within the racy
window is caught by not trusting records younger than `RACY_WINDOW_NS`.
"""

from __future__ import annotations

import functools
import json
import os
import time
from itertools import chain, compress, islice, repeat
from operator import attrgetter, is_, itemgetter
from pathlib import Path

from . import digest, memo
from .action import KEY_VERSION, ActionKind, Artifact, Source, material
from .errors import BuildError
from .label import Label, Pattern
from .layout import RACY_WINDOW_NS, hexed_sigs, observe, sigs, unhexed_sigs
from .observed import Observed
from .rulesets import ENGINE_DIR, code_digest
from .targetinfo import TargetInfo
from .value import Value

KIND, VERSION = "analysis", 10
TEXT_KIND = "analysis-text"  # the journal of the actions' texts, of the same version
UNSETTLED = (-1, -1, -1, -1)  # the stat of a file known by its facts, recorded within the racy window


class Declared(Value):
    """An action as analysis declared it: what the build needs of every action, decoded with the
    package's record (its id, kind, mnemonic and inputs for the walk of the action graph, its
    `Action.definition` and code digest for its key, `action.material`), and the action itself,
    kept in the record as its memo text and decoded only when something asks for it (the scheduler,
    for an action whose key moved). So a package whose record is valid and whose actions' keys did not
    move costs its record's parse, not the construction of its actions."""

    __match_args__ = ("id", "kind", "mnemonic", "inputs", "definition", "code", "text")
    __slots__ = ("id", "kind", "mnemonic", "inputs", "definition", "code", "_text", "_action", "decoded")

    def __init__(self, id: str, kind: str, mnemonic: str, inputs: tuple, definition: str, code: str,
                 text: str | tuple = ""):
        self.id = id
        self.kind = kind  # ActionKind's value
        self.mnemonic = mnemonic
        self.inputs = inputs
        # JSON texts are held as the memo writes them, their quote characters swapped (`_swapped`): inside
        # the record's JSON they then need almost no escapes, and the parser copies a string without
        # escapes instead of unescaping it.
        self.definition = definition  # `Action.definition`, swapped; "" for one analysed now (its action says it)
        self.code = code
        # The action's other fields (`_rest`), swapped; "" for one analysed now; (its package's `_Texts`,
        # its index there) until first read.
        self._text = text
        self._action = None
        self.decoded = False  # from `text`, in this process

    @staticmethod
    def of(action) -> "Declared":
        d = Declared(action.id, action.kind.value, action.mnemonic, action.inputs, "", action.code)
        d._action = action
        return d

    @property
    def text(self) -> str:
        text = self._text
        if text.__class__ is tuple:
            texts, i = text
            self._text = text = texts.at(i)
        return text

    @property
    def action(self):
        """The action, decoded from the record's text on first use."""
        if self._action is None:
            try:
                stored = memo.decode(_json(self.text), action_types())
                self._action = _rebuilt(self.id, self.kind, self.inputs, self.code, _json(self.definition), stored) \
                    if isinstance(stored, list) else stored.replace(inputs=self.inputs)
                self.decoded = True
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                # The record parsed, its text did not: only a hand-edited memo does that.
                raise BuildError(f"the analysis memo's record of {self.id} is damaged ({e}); run `tpbuild clean` "
                                 "and build again") from None
        return self._action

    def upstream(self) -> set[str]:
        return {i.action for _, i in self.inputs if isinstance(i, Artifact)}

    def material(self, input_digests: list[tuple[str, str]], salt: str) -> bytes:
        """Its key material, as `Action.key_material` makes it."""
        if not self.definition:
            return self._action.key_material(input_digests, salt)
        return material(_KINDS.get(self.kind) or ActionKind(self.kind), _json(self.definition), self.code,
                        input_digests, salt)

    def stored_definition(self) -> str:
        """Its definition as the memo holds it (swapped), made from its action for one analysed now."""
        return self.definition or _swapped(self._action.definition())

    def stored_text(self) -> str:
        """Its text as the texts journal holds it (swapped), made from its action for one analysed now."""
        return self.text or _swapped(_rest(self._action, _json(self.stored_definition())))

    def to_json(self) -> list:
        """The record's form (see the module docstring); its text is kept apart (`stored_text`)."""
        flat: list = []
        for dest, inp in self.inputs:
            flat += (dest, inp.action, inp.path) if isinstance(inp, Artifact) else (dest, None, inp.path)
        return [self.id, self.kind, self.mnemonic, flat, self.stored_definition(), self.code]


class _Texts:
    """One record's action texts (`Declared.text`), in the texts journal under its `_text_key`: decoded
    when the first of them is read, and kept, so the actions of a record dropped in this build (a target
    whose analysis is reused in the package's new record) still have theirs."""

    __slots__ = ("journal", "key", "_texts")

    def __init__(self, journal, key: str, texts: list | None = None):
        self.journal = journal
        self.key = key
        self._texts = texts

    def load(self) -> list:
        if self._texts is None:
            texts = self.journal.get(self.key)
            ok = isinstance(texts, list) and all(t.__class__ is str for t in texts)
            self._texts = texts if ok else []
        return self._texts

    def at(self, i: int) -> str:
        texts = self.load()
        if i >= len(texts):
            raise ValueError("its text is missing")
        return texts[i]


def _text_key(package: str, gen: str) -> str:
    """A record's key in the texts journal: its generation is drawn anew each time a package's targets are
    recorded, so a list is found only by the record it was written with (NUL: in no path)."""
    return f"{package}\0{gen}"


def _text_keys(packages: list[str], recs: list[PackageRecord]) -> list[str]:
    """`_text_key` of each package and its record's generation: the key its `_Texts` holds, decoded or put
    (taken in C: a call each was 10,000 calls, twice, in a no-op build at 10,000 models), else made."""
    try:
        return list(map(_TEXTS_KEY, recs))
    except AttributeError:  # a record made without its texts
        return list(map(_text_key, packages, map(attrgetter("gen"), recs)))


_TEXTS_KEY = attrgetter("texts.key")


_KINDS = {k.value: k for k in ActionKind}  # a dict lookup: calling the enum costs 1 us a key (20,000 a no-op)
_SWAP = bytes.maketrans(b"\"'", b"'\"")  # bytes: translated in C, a tenth of what str.translate costs


def _rest(action, definition: bytes) -> str:
    """The memo text of what an action holds besides its inputs and its definition (`Action.definition`,
    which the record keeps for its key): its owner, presentation, code modules and a write's content or a
    run's `local_only`, from which `_rebuilt` makes it again. So the record holds its fields once, not
    a second time in a whole encoding of the action (a third of the memo at 10,000 models). An action
    that the definition and these do not make again exactly (a rule's value of a type JSON changes,
    such as a list for a tuple) is kept whole, as its `memo.encode_text` without its inputs."""
    special = action.content if action.kind is ActionKind.WRITE else \
        action.local_only if action.kind is ActionKind.RUN else None
    rest = [action.owner, action.description, action.log_hint, action.code_modules, special]
    try:
        # Made again from the definition's JSON and these values as they are (the memo gives them back
        # as they are, `memo.decode`): every field equal, those equality passes over too. Equal JSON
        # values are of the same JSON type, and a container JSON changes (a tuple) is unequal.
        again = _rebuilt(action.id, action.kind.value, action.inputs, action.code, definition, rest)
        same = again.__class__ is action.__class__ and _fields(again) == _fields(action)
    except (ValueError, TypeError, KeyError, AttributeError):
        same = False
    return memo.encode_text(rest if same else action.replace(inputs=()), action_types())


def _fields(action) -> list:
    return [getattr(action, name) for name in action.__match_args__]


def _rebuilt(aid: str, kind: str, inputs: tuple, code: str, definition: bytes, rest: list):
    """The action of a declaration whose text holds its fields besides its definition (`_rest`)."""
    from .action import RunAction, TreeAction, WriteAction

    _kind, rule, rule_version, mnemonic, spec, _content, tools = json.loads(b"[" + definition + b"]")
    owner, description, log_hint, code_modules, special = rest
    common = dict(id=aid, owner=owner, mnemonic=mnemonic, rule=rule, rule_version=rule_version, inputs=inputs,
                  tools=tools, description=description, log_hint=log_hint, code=code, code_modules=code_modules)
    if kind == ActionKind.WRITE:
        return WriteAction(out=spec["out"], executable=spec["executable"], content=special, **common)
    if kind == ActionKind.RUN:
        return RunAction(argv=tuple(spec["argv"]), env=tuple(spec["env"].items()), outs=tuple(spec["outs"]),
                         timeout=spec["timeout"], exec_properties=tuple(spec.get("exec_properties", {}).items()),
                         local_only=special, **common)
    if kind == ActionKind.TREE:
        return TreeAction(**common)
    raise ValueError(f"no action of kind {kind!r}")


def _swapped(text: str) -> str:
    """JSON text held with its quotes swapped (UTF-8 never uses their bytes inside a character)."""
    return text.encode().translate(_SWAP).decode()


def _json(swapped: str) -> bytes:
    """The JSON text (as UTF-8) of what `_swapped` holds."""
    return swapped.encode().translate(_SWAP)


class TargetRecord(Value):
    # Slotted, as the records below: the memo makes one of each for every target and package it decodes.
    __slots__ = __match_args__ = ("label", "rule", "refs", "keypath", "manifest", "deps_digest", "actions", "info",
                                  "info_digest", "volatile")

    def __init__(self, label, rule: str, refs: list, keypath: tuple, manifest: str, deps_digest: str, actions: list,
                 info, info_digest: str, volatile: bool):
        self.label = label
        self.rule = rule
        self.refs = refs
        self.keypath = keypath
        self.manifest = manifest  # workspace-relative path of its BUILD.toml
        self.deps_digest = deps_digest
        self.actions = actions  # Declared
        self.info = info
        self.info_digest = info_digest
        self.volatile = volatile  # its rule probes the machine (tool versions): always re-analysed


class PackageRecord(Value):
    __match_args__ = ("observed", "targets", "facts", "gen")
    __slots__ = ("_observed", "targets", "facts", "gen", "texts", "watched")

    def __init__(self, observed: dict | None, targets: list | None = None, facts: dict | None = None, gen: str = "",
                 texts: _Texts | None = None, watched: list | None = None):
        self._observed = observed  # workspace-relative path -> sig; None: still `watched`
        # As the memo holds them (`_watched`), until `observed` is first read: [paths recorded with a `sig`,
        # those sigs as one text, {path: its other state}]. A build of `//...` compares every record's sigs
        # with the stats taken now as one column, and keeps those as `observed` (`AnalysisCache.check_all`).
        self.watched = watched
        self.targets = [] if targets is None else targets
        # Path -> `facts.entry`, for the files known by their facts; read from the memo, as its text (swapped):
        # only a file whose stat moved needs its facts (`_same_facts`), which cost a tenth of a record's parse.
        self.facts = {} if facts is None else facts
        # Drawn at random each time the package's targets are recorded (kept when only its stats are brought
        # up to date): the same generation is the same targets, which is how the target graph knows the
        # closure it recorded (graph.py) is still the one these records make.
        self.gen = gen
        self.texts = texts  # its actions' texts (not compared: they are the generation's)

    @property
    def observed(self) -> dict:
        """Path -> its state (a `sig`, a `kind`, None: not there); raises ValueError for sigs of a
        damaged text."""
        if self._observed is None:
            paths, stats, others = self.watched
            stats = unhexed_sigs(stats)
            if len(stats) != len(paths):
                raise ValueError("a record's watched paths and sigs differ in number")
            observed = dict(zip(paths, stats))
            if others:
                observed.update((p, tuple(s) if s is not None else None) for p, s in others.items())
            self._observed = observed
        return self._observed


def info_digest(info) -> str:
    """Identity of what a target offers dependents; values may hold labels, compared by their text."""
    out = info.output
    body = [info.rule, [out.action, out.path] if out is not None else None, info.values]
    return digest.of_bytes(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode())


def fingerprint(root: Path, workspace_text: bytes) -> str:
    """The engine's code by stat, tpbuild.toml, the key version and the root (the rule sets' code is
    in their identity, `rulesets.RuleSets.identity`, the other half of the memo's meta)."""
    return digest.of_value([KEY_VERSION, code_digest([str(ENGINE_DIR)]), digest.of_bytes(workspace_text),
                            str(root)])


def recorded_identity(path: Path):
    """The rule sets' identity the memo at `path` was made with (None when there is none)."""
    meta = memo.Journal.meta_of(path, KIND, VERSION)
    return meta[1] if isinstance(meta, list) and len(meta) == 2 else None


class AnalysisCache:
    """The memo of one workspace (`memo.Journal`): a record is decoded only when a build loads its
    package, and a save appends only the records this build made or dropped, so an edit of one package
    out of 10,000 encodes and writes one record, not the whole memo."""

    def __init__(self, path: Path, fp: str, identity: dict, root: Path, observed: Observed | None = None,
                 lazy: bool = False):
        """`lazy`: for a build that reads a few packages' records (a delta build's, `memo.Journal`)."""
        self.root = root
        self._base = os.path.join(root, "")
        self._observe = observed.observe if observed is not None else observe  # stats the stamp took (observed.py)
        self._observe_all = observed.observe_all if observed is not None else sigs
        self._checked: dict[str, PackageRecord | None] = {}  # package -> `valid`'s answer, found by `check_all`
        # Directory -> its `sig`, as package discovery took it in this build (`TargetGraph.all_packages`):
        # a record that watches a directory (one a rule listed) compares the same stat, not one taken again.
        self.seen: dict[str, tuple | None] = {}
        # The labels and artifacts of the records decoded, one object each however many records name
        # it (10,000 models name the genrule they ship): made once, and found by identity in a dict.
        self._shared: tuple[dict, dict] = ({}, {})
        self._journal = memo.Journal(path, KIND, VERSION, [fp, identity], path.parent / "tmp", f"the analysis memo {path}",
                                     convert=(self._record, _record_json), convert_all=self._records, lazy=lazy)
        self._texts = memo.Journal(path.with_name(path.name + "-text"), TEXT_KIND, VERSION, [fp, identity],
                                   path.parent / "tmp", f"the analysis memo's texts {path}-text", lazy=lazy)
        self.warnings: list[str] = []  # a save that failed, for the build to show

    def release(self) -> None:
        """Drop what only the analysis reads (the directories' stats, the tables of shared labels and
        artifacts): the build after it holds the records for its whole length, not these."""
        self.seen = {}
        self._shared = ({}, {})

    def _record(self, package: str, v: list) -> PackageRecord:
        return _record(package, v, *self._shared, self._texts)

    def _records(self, packages: list[str], values: list) -> list[PackageRecord]:
        """`_record` of each, for `memo.Journal.preload` (a no-op build decodes every record): one call for
        them all, where the journal's way to `_record` was three Python calls a record (2,000 models: 4.5 M
        of the 240 M instructions of decoding them)."""
        labels, artifacts = self._shared
        return list(map(_record, packages, values, repeat(labels), repeat(artifacts), repeat(self._texts)))

    def record(self, package: str) -> PackageRecord | None:
        """The package's record as it stands (not checked against the files: see `valid`), if its texts
        are there too (a kill between their saves keeps one without the other: then a miss)."""
        rec = self._journal.get(package)
        if rec is not None and not (isinstance(rec, PackageRecord) and _text_key(package, rec.gen) in self._texts):
            self._journal.remove(package)
            return None
        return rec

    def records(self, packages: list[str]) -> list[PackageRecord | None]:
        """`record` of each package, looked up in C while every one is a record whose texts are there (the
        no-op stamp asks of every package a build loaded: 10,000 at 10,000 models)."""
        recs = self._journal.get_all(packages)
        if all(map(isinstance, recs, repeat(PackageRecord))) and self._texts.holds_all(_text_keys(packages, recs)):
            return recs
        return list(map(self.record, packages))

    def _drop(self, package: str, rec: PackageRecord) -> None:
        """Remove the package's record and its texts, which its actions read first (this build may still
        run some: a target whose analysis is reused in the package's next record)."""
        self._journal.remove(package)
        if rec.texts is not None:
            rec.texts.load()
        self._texts.remove(_text_key(package, rec.gen))

    def valid(self, package: str) -> PackageRecord | None:
        checked = self._checked.pop(package, _UNCHECKED) if self._checked else _UNCHECKED
        if checked is not _UNCHECKED:
            return checked
        rec = self.record(package)
        return None if rec is None else self._judged(package, rec, {})

    def check_all(self, packages: list[str]) -> None:
        """Judge the records of `packages` as `valid` would, for a build about to load them all (`//...`):
        decoded in one parse, and every sig they watch compared with the stat taken now as one column, one
        text of them all against the records' texts (`_watched`), where each record's stats were decoded
        from JSON (four numbers a path) and compared apart: 528 M -> 514 M instructions for the analysis
        of an unstamped no-op at 2,000 models. A record whose sigs moved (or that watches another state) is
        judged on its own, from the stats taken here. `valid` answers from what this found."""
        self._journal.preload(packages)
        recs = list(zip(packages, self.records(packages)))  # each looked up in C, while every one is whole
        if any(map(is_, map(itemgetter(1), recs), repeat(None))):
            recs = [(p, r) for p, r in recs if r is not None]
        column = [(p, r) for p, r in recs if r.watched is not None]
        paths = list(chain.from_iterable(r.watched[0] for _, r in column))
        seen = self.seen
        now = list(map(seen.get, paths, repeat(_UNCHECKED)))  # a directory discovery stat'ed in this build
        if _UNCHECKED in now:
            base = self._base
            taken = iter(self._observe_all([base + p for p in compress(paths, map(is_, now, repeat(_UNCHECKED)))]))
            now = [next(taken) if s is _UNCHECKED else s for s in now]
        same = None not in now and hexed_sigs(now) == "".join(r.watched[1] for _, r in column)
        checked = self._checked
        taken = iter(now)
        for p, r in column:
            paths, text, others = r.watched
            if same and not others:
                # Its stats are those taken now: kept as its `observed` (the no-op stamp reads them all),
                # not decoded again from its text.
                r._observed = dict(zip(paths, taken))  # zip stops at its last path: the rest are the next's
                checked[p] = r
            else:
                mine = list(islice(taken, len(paths)))
                if not others and None not in mine and hexed_sigs(mine) == text:
                    r._observed = dict(zip(paths, mine))
                    checked[p] = r
                else:
                    checked[p] = self._judged(p, r, dict(zip(paths, mine)))
        for p, r in recs:
            if r.watched is None:
                checked[p] = self._judged(p, r, {})

    def _judged(self, package: str, rec: PackageRecord, taken: dict) -> PackageRecord | None:
        """The record if it is valid (`taken`: path -> its state as `check_all` took it)."""
        try:
            observed = rec.observed
        except ValueError:  # a damaged text of sigs: a miss
            self._drop(package, rec)
            return None
        base = self._base
        seen = self.seen
        moved = {}
        for p, s in observed.items():
            full = base + p  # os.path.join(root, p): recorded paths are relative to the root
            if p in taken:
                now = taken[p]
            elif p in seen and (s is None or len(s) > 1):
                now = seen[p]  # taken once in this build (and counted there: `Observed.taken`)
            else:
                now = self._observe(full, s)
            if now != s:
                if now is None or p not in rec.facts or not _same_facts(full, rec.facts[p]):
                    self._drop(package, rec)
                    return None
                moved[p] = now
        if moved:
            # Kept with the new stats only once they are settled (see put); until then the facts are
            # derived again on each build, which is what a stat within the racy window needs anyway.
            horizon = time.time_ns() - RACY_WINDOW_NS
            if all(s[1] < horizon for s in moved.values()):
                rec.observed.update(moved)
                self._journal.put(package, rec)
        return rec

    def put(self, package: str, observed: dict, targets: list[TargetRecord], facts: dict | None = None) -> None:
        horizon = time.time_ns() - RACY_WINDOW_NS
        facts = facts or {}
        old = self._journal.get(package)
        if isinstance(old, PackageRecord):
            self._drop(package, old)
        else:
            self._journal.remove(package)
        fresh = {p for p, s in observed.items() if s is not None and len(s) > 1 and s[1] >= horizon}
        if fresh - facts.keys():
            return  # too fresh to trust by stat: analyse again next time
        # A file known by its facts is judged by them, not by a stat that does not vouch for its
        # content yet: recorded with a stat no file has, its facts are derived again on the next build.
        observed = {**observed, **dict.fromkeys(fresh, UNSETTLED)}
        gen = os.urandom(8).hex()
        key = _text_key(package, gen)
        texts = [d.stored_text() for t in targets for d in t.actions]
        try:
            self._journal.put(package, PackageRecord(observed, targets, facts, gen, _Texts(self._texts, key, texts)))
            self._texts.put(key, texts)
        except TypeError as e:  # a rule put a value of its own type into its info: analyse it again next time
            self.warnings.append(f"the analysis memo does not keep {package or 'the root package'}: {e}")

    def save(self) -> None:
        # The texts first: a record is never on disk before its texts (see the module docstring).
        err = self._texts.save() or self._journal.save()
        if err is not None:
            self.warnings.append(err)


_UNCHECKED = object()  # not judged by `check_all`; not stat'ed by it yet


def _same_facts(full: str, recorded: list | str) -> bool:
    """The file (read after its stat was taken) still has the recorded facts (`recorded` as the memo's
    text, `PackageRecord.facts`: one that does not decode is a change)."""
    from .facts import unchanged

    try:
        if isinstance(recorded, str):
            recorded = memo.decode(_json(recorded), memo_types())
        with open(full, "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return False
    return unchanged(recorded, data)


def memo_types() -> tuple[type, ...]:
    """The only types the open-ended parts of a record may hold (besides JSON values, tuples and bytes)."""
    return (Artifact, Source, Label, Pattern, TargetInfo)


def _record_json(_package: str, rec: PackageRecord) -> list:
    """A record in the memo's form (see the module docstring)."""
    return [rec.watched if rec._observed is None else _watched(rec._observed), [_target_json(t) for t in rec.targets],
            {p: entry if entry.__class__ is str else _swapped(memo.encode_text(entry, memo_types()))
             for p, entry in rec.facts.items()}, rec.gen]


def _watched(observed: dict) -> list:
    """What a record watches in the memo's form: [the paths recorded with a `sig`, their sigs as one text
    (`layout.hexed_sigs`), {every other path: its state}]."""
    paths = [p for p, s in observed.items() if s is not None and len(s) == 4]
    others = {p: s for p, s in observed.items() if s is None or len(s) != 4}
    return [paths, hexed_sigs([observed[p] for p in paths]), others]


def _target_json(t: TargetRecord) -> list:
    refs = [[r.package, r.name] if isinstance(r, Label) else [r.package, r.name, r.recursive, r.negative]
            for r in t.refs]
    info = t.info
    if info is not None:
        out = info.output
        info = [info.rule, [out.action, out.path] if out is not None else None, _open(info.values, dict)]
    return [t.label.name, t.rule, refs, t.keypath, t.manifest, t.deps_digest, [d.to_json() for d in t.actions],
            info, t.info_digest, t.volatile]


def _record(package: str, v: list, labels: dict | None = None, artifacts: dict | None = None,
            texts_journal=None) -> PackageRecord:
    """A record from the memo's form; raises (ValueError, TypeError, ...) for one of another shape: a miss.
    `labels`, `artifacts`: the objects already made for records decoded before (`AnalysisCache._shared`),
    by their fields as a tuple: one object of a label or an artifact however many records name it (10,000
    models name the genrule they ship, and most of their actions read its output). `texts_journal`: where
    the actions' texts are (`_Texts`).

    One function, its loops inline: a no-op build of 10,000 models decodes every record (10,000 targets,
    20,000 actions), and a call per target, per action, per label and per artifact was a third of it."""
    watched, targets, facts, gen = v
    if gen.__class__ is not str or facts and not all(map(isinstance, facts.values(), repeat(str))):
        raise TypeError("a record's generation and facts are strings")
    paths, stats, others = watched
    if paths.__class__ is not list or stats.__class__ is not str or len(stats) != 64 * len(paths) \
            or others.__class__ is not dict:
        raise ValueError("a record's watched paths are not as recorded")
    "".join(paths)  # each a string, else a TypeError
    labels = {} if labels is None else labels
    artifacts = {} if artifacts is None else artifacts
    texts = _Texts(texts_journal, _text_key(package, gen))
    n = 0  # the next action's index in the record's texts
    made = []
    for name, rule, refs, keypath, manifest, deps_digest, actions, info, info_digest, volatile in targets:
        label = labels.get((package, name))
        if label is None:
            label = labels[package, name] = Label(package, name)
        if refs:
            named = []
            for r in refs:
                if len(r) == 2:
                    key = tuple(r)
                    ref = labels.get(key)
                    if ref is None:
                        ref = labels[key] = Label(*key)
                else:
                    ref = Pattern(*r)
                named.append(ref)
            refs = named
        if info is not None:
            info_rule, out, values = info
            if out is not None:
                action, path = out
                key = (action, path)
                out = artifacts.get(key)
                if out is None:
                    out = artifacts[key] = Artifact(action, path)
            if values.__class__ is dict:
                info = TargetInfo(info_rule, out, values)
            elif isinstance(values, str):  # tagged text: decoded when something reads it
                info = TargetInfo.deferred(info_rule, out, functools.partial(_values, values, f"{package}:{name}"))
            else:
                raise TypeError(f"not an open-ended value: {type(values).__name__}")
        declared = []
        for aid, kind, mnemonic, flat, definition, code in actions:  # `Declared.to_json`'s form
            inputs = ()
            if flat:  # a write action has none (half of them at 10,000 models)
                if len(flat) % 3:
                    raise ValueError("an action's inputs are triples")
                inputs = []
                it = iter(flat)
                for dest, up, path in zip(it, it, it):
                    if up is None:
                        inputs.append((dest, Source(path)))
                    else:
                        key = (up, path)
                        a = artifacts.get(key)
                        if a is None:
                            a = artifacts[key] = Artifact(up, path)
                        inputs.append((dest, a))
                inputs = tuple(inputs)
            declared.append(Declared(aid, kind, mnemonic, inputs, definition, code, (texts, n)))
            n += 1
        made.append(TargetRecord(label, rule, refs, tuple(keypath), manifest, deps_digest, declared, info,
                                 info_digest, volatile))
    return PackageRecord(None, made, facts, gen, texts, watched)


def _values(text: str, label: str) -> dict:
    """A target's info values the memo holds as tagged text (`_open`)."""
    try:
        return memo.decode(text, memo_types())
    except ValueError as e:  # the record parsed, this text did not: only a hand-edited memo does that
        raise BuildError(f"the analysis memo's record of //{label} is damaged ({e}); run `tpbuild clean` "
                         "and build again") from None


def _open(value, plain: type):
    """An open-ended value (of type `plain`) inline when it is plain JSON, else as its tagged text."""
    encoded = memo.encode(value, memo_types())
    return value if isinstance(value, plain) and encoded == value else memo.encode_text(value, memo_types())


@functools.cache
def action_types() -> tuple[type, ...]:
    """The only types a declared action's text may hold."""
    from .action import RunAction, Source, TreeAction, WriteAction
    from .label import Label

    return (WriteAction, TreeAction, RunAction, Artifact, Source, Label)
