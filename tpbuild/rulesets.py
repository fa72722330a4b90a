"""The installed rule sets, by rule name, imported only when a rule must run.

Importing a rule set is most of what an edit or a no-op would otherwise cost in analysis (the Triton
rules bring pydantic and protobuf machinery; finding them reads every installed distribution's
metadata). A build whose packages all come from the analysis memo needs of them only what the memo
recorded when they were last imported, their `identity`: the rule names, the tpbuild.toml tables they
claim, and the directories of their code with its digest (by stat, as the memo's fingerprint). The
identity is reused while
- the entry points are the same: their list is re-read (`importlib.metadata`) whenever the path
  itself, or the distributions' metadata in a directory on it, moved, which installing, upgrading or
  removing a distribution does, or an entry point's module would be found elsewhere; otherwise the
  list recorded beside the memo (`ENTRY_POINTS`) stands (a directory's stat is asked first, its
  listing only when that moved), and
- the code in their directories has the same stats.
Anything else imports them and records the identity again, which (being part of the analysis memo's
meta) makes the whole memo a miss: new rule code means fresh analysis.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from . import digest, memo
from .errors import BuildError, UserError
from .layout import sig

GROUP = "tpbuild.rules"
ENTRY_POINTS = "rulesets"  # in the memo directory: the entry points, with the sys.path they were read from
KIND, VERSION = "rulesets", 2
ENGINE_DIR = Path(__file__).parent


class RuleSets(Mapping):
    """Rule name -> rule instance; names, membership, claimed sections and code directories come from
    the identity, and only looking a rule up imports the rule sets."""

    def __init__(self, identity: dict, rules: dict | None = None):
        self.identity = identity
        self._rules = rules
        self._names = frozenset(identity["names"])

    @property
    def claimed(self) -> set[str]:
        """The tpbuild.toml tables the rule sets take."""
        return set(self.identity["sections"])

    @property
    def code_dirs(self) -> list[Path]:
        """The directories holding the engine's and every rule set's modules."""
        return [Path(d) for d in self.identity["dirs"]]

    def __getitem__(self, name: str):
        if self._rules is None:
            self._rules = load_rules()
        return self._rules[name]

    def __contains__(self, name) -> bool:
        return name in self._names

    def __iter__(self):
        return iter(sorted(self._names))

    def __len__(self) -> int:
        return len(self._names)


def rule_sets(memo_dir: Path, recorded) -> RuleSets:
    """The installed rule sets, lazily if `recorded` (the identity in the analysis memo) still holds."""
    eps = _entry_points(memo_dir)
    if isinstance(recorded, dict) and recorded.get("eps") == eps and isinstance(recorded.get("dirs"), list) \
            and recorded.get("code") == code_digest(recorded["dirs"]):
        return RuleSets(recorded)
    rules = load_rules()
    dirs = {str(ENGINE_DIR)}
    for name in {type(r).__module__ for r in rules.values()} | {e[1].partition(":")[0] for e in eps}:
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "__file__", None):
            dirs.add(str(Path(mod.__file__).parent))
    dirs = sorted(dirs)
    identity = {"eps": eps, "names": sorted(rules), "dirs": dirs, "code": code_digest(dirs),
                "sections": sorted({s for r in rules.values() for s in r.sections})}
    return RuleSets(identity, rules)


def code_digest(dirs: list[str]) -> str:
    """The modules in `dirs`, by stat (listed with os.listdir: Path.glob took twice as long, 0.9 ms of
    every build for the engine's and the Triton rules' 76 modules)."""
    stats = []
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:  # gone (a rule set removed): no modules, as the memo's identity will not have
            names = []
        for name in sorted(n for n in names if n.endswith(".py")):
            f = os.path.join(d, name)
            stats.append([f, sig(f)])
    return digest.of_value(stats)


def load_rules() -> dict:
    import importlib.metadata

    rules: dict = {}
    for ep in sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name):
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


def _entry_points(memo_dir: Path) -> list:
    """[name, value, distribution, version, where its top module is] of each entry point, by name;
    read from the distributions only when the import path or what they are read from moved since."""
    path = [[p, list(sig(p))] for p in sys.path if p and os.path.isdir(p)]
    saved = memo.load(memo_dir / ENTRY_POINTS, KIND, VERSION)
    if isinstance(saved, dict) and saved.get("path") == path:
        return saved["eps"]
    if isinstance(saved, dict) and _same_sources(saved, path):
        _save(memo_dir, {**saved, "path": path})  # so that the next build's stats answer
        return saved["eps"]
    import importlib.metadata
    import importlib.util

    eps = []
    for ep in sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name):
        try:
            spec = importlib.util.find_spec(ep.value.partition(":")[0].split(".")[0])
        except (ImportError, ValueError):
            spec = None
        dist = ep.dist
        eps.append([ep.name, ep.value, dist.name if dist else "", dist.version if dist else "",
                    spec.origin if spec is not None and spec.origin else ""])
    _save(memo_dir, {"path": path, "metadata": {p: _metadata(p) for p, _ in path}, "eps": eps})
    return eps


def _save(memo_dir: Path, value: dict) -> None:
    # Not saved (a full disk): read again next time.
    memo.save(memo_dir / ENTRY_POINTS, KIND, VERSION, value, memo_dir / "tmp", "the rule sets' entry points")


def _metadata(directory: str) -> list:
    """The distributions' metadata in a directory of the import path (what importlib.metadata reads
    entry points from), by name, each with its stat: a distribution installed, upgraded or removed."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [[n, _listed(sig(os.path.join(directory, n)))] for n in sorted(names)
            if n.lower().endswith((".dist-info", ".egg-info")) or n.lower() == "egg-info"]


def _listed(stat_sig) -> list | None:
    return list(stat_sig) if stat_sig is not None else None  # as JSON gives it back


def _same_sources(saved: dict, path: list) -> bool:
    """Whether the entry points are those `saved` though a directory's stat moved: the same directories
    on the path, the same distributions' metadata in each that moved, and each entry point's module
    found where it was (not shadowed by a new module of its name). Under `python -m tpbuild` the
    workspace root is on the path, and any file made or removed there (tpbuild-out deleted, an
    editor's swap file) moved its stat: reading the distributions again took 30 ms."""
    import importlib.util

    before = {p: s for p, s in saved.get("path", [])}
    metadata = saved.get("metadata")
    if [p for p, _ in path] != list(before) or not isinstance(metadata, dict):
        return False
    if any(s != before[p] and _metadata(p) != metadata.get(p) for p, s in path):
        return False
    for _name, value, _dist, _version, origin in saved["eps"]:
        try:
            spec = importlib.util.find_spec(value.partition(":")[0].split(".")[0])
        except (ImportError, ValueError):
            return False
        if (spec.origin if spec is not None and spec.origin else "") != origin:
            return False
    return True
