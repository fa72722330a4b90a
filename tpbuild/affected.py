"""Which targets a change affects: target identities computed by analysis alone, compared across two trees.

A file-path heuristic misses what CI most needs to see (an env's requirements, a rule attribute, the
cache salt, a tool version), so the comparison is made on what the build itself would key on. An
action's *static identity* is its key material (`Action.key_material`: key version, salt, kind, rule
and version, mnemonic, spec, write content, tools) with each input named by the content digest of a
source, or by the static identity of the upstream action whose artifact it reads. A target's identity
hashes its actions' identities, the `TargetInfo` it offers dependents (a changed test case reaches no
key, but a test run must see it) and its dependencies' identities, so anything depending on an
affected target is affected too.

The identity is never smaller than the build key: an upstream action whose output would come out
byte-identical (early cutoff) still changes the identities below it, because nothing is executed to
find that out. So the affected set holds every target whose action keys change, and more only there.

The other side is analysed from `git worktree add --detach` in a temporary directory, with its own
temporary analysis memo: the user's tree, index and memo are never touched, and the worktree is removed
(and pruned) whatever happens.
"""

from __future__ import annotations

import os
import shutil
import stat as statmod
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import digest
from .action import Entry, Source, input_digest
from .analysis import analyze
from .analysiscache import info_digest
from .errors import BuildError, ErrorList, TpbuildError, UserError, at
from .label import Label, LabelSyntaxError, Pattern, parse_pattern
from .statcache import StatCache
from .workspace import WORKSPACE_FILE, Workspace, load


@dataclass(frozen=True)
class TargetFacts:
    """One target on one side: its identity, and what the reasons for a difference are read from."""

    identity: str
    attrs: dict                 # its manifest table as written
    sources: dict[str, str]     # path from the root -> content digest, for every source its actions read
    named_files: dict[str, str]  # package files its attributes name (a config.pbtxt read at analysis)
    deps: tuple[Label, ...]
    actions: dict[str, str]     # action id -> static identity
    tools: dict[str, object]


@dataclass(frozen=True)
class Snapshot:
    targets: dict[Label, TargetFacts]
    salt: str
    config: dict  # tpbuild.toml as parsed (comments do not count)


@dataclass(frozen=True)
class Change:
    label: Label
    reasons: list[str]


@dataclass(frozen=True)
class Diff:
    since: str  # the resolved commit
    affected: list[Change]
    added: list[Label]
    removed: list[Label]

    def buildable(self) -> set[Label]:
        return {c.label for c in self.affected} | set(self.added)

    def to_json(self) -> dict:
        return {"since": self.since,
                "affected": [{"label": str(c.label), "reasons": c.reasons} for c in self.affected],
                "added": [str(l) for l in self.added], "removed": [str(l) for l in self.removed]}


def snapshot(ws: Workspace, memo: Path) -> Snapshot:
    """Identities of every target of the workspace. Analysis only: nothing is executed."""
    a = analyze(ws, ["//..."], memo)
    salt = ws.cache.salt
    # The build's stat memo: an unchanged source is not read again (it is not saved here: builds own it).
    stats = StatCache(memo / "statcache")
    file_digests: dict[str, str] = {}

    def source_digest(path: str) -> str:
        if path not in file_digests:
            full = os.path.join(ws.root, path)
            try:
                exe = bool(os.stat(full).st_mode & statmod.S_IXUSR)
                d, sig = stats.digest(path, full)
                file_digests[path] = input_digest((Entry.file(path, d, sig[0], exe),), whole_tree=False)
            except OSError as e:
                raise BuildError(f"cannot read source {path}: {e.strerror}") from None
        return file_digests[path]

    action_ids: dict[str, str] = {}
    targets: dict[Label, TargetFacts] = {}
    for label in a.order:  # dependencies first, and a rule declares an action before reading its output
        sources: dict[str, str] = {}
        own: dict[str, str] = {}
        tools: dict[str, object] = {}
        for act in a.actions_of(label):
            named = []
            for dest, inp in act.inputs:
                if isinstance(inp, Source):
                    sources[inp.path] = source_digest(inp.path)
                    named.append([dest, sources[inp.path]])
                else:
                    named.append([dest, action_ids[inp.action], inp.path])
            own[act.id] = action_ids[act.id] = digest.of_bytes(act.key_material(named, salt))
            tools.update({f"{act.mnemonic}.{k}": v for k, v in act.tools.items()})
        t = a.graph.targets[label]
        attrs = _table(t.source.data, t.keypath)
        deps = tuple(a.graph.edges[label])
        identity = digest.of_value([t.rule.name, sorted(own.items()), info_digest(a.infos[label]),
                                    [[str(d), targets[d].identity] for d in deps]])
        targets[label] = TargetFacts(identity, attrs, sources, _named_files(ws.root, label.package, attrs),
                                     deps, own, tools)
    return Snapshot(targets, salt, ws.source.data)


def _table(data: dict, keypath: tuple) -> dict:
    for k in keypath:
        data = data.get(k, {})
    return data


def _named_files(root: Path, package: str, attrs: dict) -> dict[str, str]:
    """Digests of package files that string attributes name: their content may enter an action's
    content rather than its inputs (a config.pbtxt shipped as written), and a reason should name them."""
    out: dict[str, str] = {}
    for value in _leaves(attrs):
        if isinstance(value, str) and value and not value.startswith((":", "/", "~")) and ".." not in value:
            path = f"{package}/{value}" if package else value
            try:
                out[path] = digest.of_file(root / path)
            except OSError:  # not a file (most strings are not paths at all)
                pass
    return out


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _attr_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted paths of attributes that differ; tables are compared key by key, arrays as a whole."""
    out = []
    for k in sorted(set(old) | set(new)):
        o, n = old.get(k), new.get(k)
        if isinstance(o, dict) and isinstance(n, dict):
            out.extend(_attr_diff(o, n, f"{prefix}{k}."))
        elif o != n:
            out.append(f"{prefix}{k}")
    return out


def diff(old: Snapshot, new: Snapshot, since: str, patterns: list[Pattern]) -> Diff:
    changed = {l for l, f in new.targets.items() if l in old.targets and old.targets[l].identity != f.identity}
    affected = [Change(l, _reasons(old, new, l, changed)) for l in sorted(changed) if _selected(l, patterns)]
    added = sorted(l for l in new.targets if l not in old.targets and _selected(l, patterns))
    removed = sorted(l for l in old.targets if l not in new.targets and _selected(l, patterns))
    return Diff(since, affected, added, removed)


def _reasons(old_snap: Snapshot, new_snap: Snapshot, label: Label, changed: set[Label]) -> list[str]:
    old, new = old_snap.targets[label], new_snap.targets[label]
    out = []
    if old_snap.salt != new_snap.salt:
        out.append("workspace config changed")
    out += _file_reasons(old.sources, new.sources)
    out += [r for r in _file_reasons(old.named_files, new.named_files) if r not in out]
    out += [f"attribute changed: {p}" for p in _attr_diff(old.attrs, new.attrs)]
    out += [f"dependency added: {d}" for d in new.deps if d not in old.deps]
    out += [f"dependency removed: {d}" for d in old.deps if d not in new.deps]
    out += [f"dependency affected: {d}" for d in new.deps if d in old.deps and d in changed]
    out += [f"tool changed: {k}" for k in sorted(set(old.tools) | set(new.tools))
            if old.tools.get(k) != new.tools.get(k)]
    if not out and old_snap.config != new_snap.config:
        out.append("workspace config changed")
    if not out:  # what remains is how a rule turns unchanged input into actions (its code, or the machine)
        out += [f"action changed: {a.split('%', 1)[1]}" for a in sorted(set(old.actions) | set(new.actions))
                if old.actions.get(a) != new.actions.get(a)] or ["provided values changed"]
    return out


def _file_reasons(old: dict[str, str], new: dict[str, str]) -> list[str]:
    out = []
    for p in sorted(set(old) | set(new)):
        if p not in old:
            out.append(f"source added: {p}")
        elif p not in new:
            out.append(f"source removed: {p}")
        elif old[p] != new[p]:
            out.append(f"source changed: {p}")
    return out


def parse_patterns(texts: list[str]) -> list[Pattern]:
    try:
        return [parse_pattern(t) for t in texts]
    except LabelSyntaxError as e:
        raise UserError(str(e)) from None


def _selected(label: Label, patterns: list[Pattern]) -> bool:
    """As on the command line: matched by a positive pattern and by no negative one."""
    return any(p.matches(label) for p in patterns if not p.negative) and \
        not any(p.matches(label) for p in patterns if p.negative)


def since(ws: Workspace, ref: str, memo: Path, patterns: list[Pattern]) -> Diff:
    """Targets (of those `patterns` name) whose identity differs between commit `ref` and the tree on disk."""
    current = snapshot(ws, memo)
    with _worktree(ws.root, ref) as (sha, ref_root, ref_memo, rel):
        if not (ref_root / WORKSPACE_FILE).is_file():
            raise UserError(f"at {ref}: {rel / WORKSPACE_FILE} does not exist, so there is nothing to compare "
                            "with; pick a commit where the workspace exists")
        try:
            before = snapshot(load(ref_root), ref_memo)
        except TpbuildError as e:
            raise _at_ref(e, ref, ref_root, rel) from None
    return diff(before, current, sha, patterns)


def _at_ref(e: TpbuildError, ref: str, ref_root: Path, rel: Path) -> TpbuildError:
    """The same error, naming files as `REF:path` (git's own notation) instead of the temporary worktree."""
    if isinstance(e, ErrorList):
        return ErrorList([_at_ref(x, ref, ref_root, rel) for x in e.errors])
    shown = f"{ref}:{rel.as_posix() + '/' if str(rel) != '.' else ''}"
    loc = at(f"{shown}{e.location.path}", e.location.line) if e.location else None
    message = e.message.replace(f"{ref_root}/", shown).replace(str(ref_root), shown)
    return type(e)(f"{message} (in the tree at {ref})", loc, detail=e.detail)


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-c", "core.hooksPath=/dev/null", *args], cwd=cwd, capture_output=True,
                              text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise UserError("git is not installed: comparing with another revision needs git") from None


@contextmanager
def _worktree(root: Path, ref: str):
    top = _git(root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise UserError(f"{root} is not in a git repository: --since/--changed-since compare with a git "
                        "revision; run it in a clone")
    rel = root.resolve().relative_to(Path(top.stdout.strip()).resolve())
    res = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if res.returncode != 0 or not ref:
        raise UserError(f"{ref!r} is not a commit of this repository: give a branch, tag or commit "
                        "(in CI, fetch it first, e.g. git fetch origin main)")
    sha = res.stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="tpbuild-affected-"))
    tree = tmp / "tree"
    try:
        res = _git(root, "worktree", "add", "--detach", "--quiet", str(tree), sha)
        if res.returncode != 0:
            raise BuildError(f"git worktree add failed for {ref}: {res.stderr.strip()}")
        yield sha, tree / rel, tmp / "memo", rel
    finally:
        if tree.exists():
            _git(root, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)
        _git(root, "worktree", "prune")
