"""The one API rule sets import: `Rule`, attribute types, the analysis context, and for rule-set
commands the `Session` they get; with the errors and path conventions rules need, re-exported.

A rule turns validated attributes into declared actions and a `TargetInfo` for the targets that depend
on it. It never runs anything and never sees the cache or the scheduler. Rule sets register through
the `tpbuild.rules` entry-point group (a list of `Rule` classes), so the engine's own `genrule` and the
Triton rules plug in exactly as a third-party rule set would. That rule sets import nothing else of
the engine is checked (tests/test_imports.py), so anything they need must be offered here.
"""

from __future__ import annotations

import os
import stat as statmod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Mapping, Protocol, Union, runtime_checkable

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo

from .action import OUT, PYTHON, TOOL_LOG, Action, Artifact, Input, RunAction, Source, TreeAction, WriteAction
from .errors import BuildError, TpbuildError, UserError, at, collected
from .manifest import describe as describe_validation_error
from .label import Label, LabelSyntaxError, Pattern, parse_label, parse_pattern
from .atomic import process_dir, sweep
from .layout import BUILD_FILE, OUT_DIR, STATE_DIR, WORKSPACE_FILE, find_root
from .targetinfo import TargetInfo

__all__ = [
    "BUILD_FILE", "OUT", "OUT_DIR", "PYTHON", "STATE_DIR", "TOOL_LOG", "WORKSPACE_FILE", "Action", "AnalysisContext",
    "Analysed", "Artifact", "Attrs", "BuildError", "Built", "Command", "Input", "Label", "LabelAttr",
    "LabelOrPattern", "Pattern", "Rule", "Session", "Source", "SourceAttr", "SourceOrLabel", "SourcePath",
    "TargetInfo", "TpbuildError", "UserError", "at", "collected", "describe_validation_error", "find_root", "process_dir",
    "sweep",
]


@dataclass(frozen=True)
class SourcePath:
    """A source file or directory named in a manifest: `rel` from its package, `path` from the root."""

    rel: str
    path: str
    is_dir: bool


def _ctx(info: ValidationInfo) -> "AnalysisContext":
    return info.context["analysis"]


def _to_label(value: Any, info: ValidationInfo) -> Label:
    if isinstance(value, Label):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a label string such as '//pkg:name' or ':name'")
    try:
        return parse_label(value, _ctx(info).label.package)
    except LabelSyntaxError as e:
        raise ValueError(str(e)) from None


def _to_source(value: Any, info: ValidationInfo) -> SourcePath:
    if isinstance(value, SourcePath):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a path relative to the package")
    return _ctx(info).source_path(value)


def _to_source_or_label(value: Any, info: ValidationInfo) -> Union[Label, SourcePath]:
    if isinstance(value, str) and (value.startswith("//") or value.startswith(":")):
        return _to_label(value, info)
    try:
        return _to_source(value, info)
    except ValueError as e:
        if isinstance(value, str) and ":" in value:  # 'envs:tabulate': a label without its '//'
            try:
                parse_label("//" + value)
            except LabelSyntaxError:
                raise e from None
            raise ValueError(f"{e}; did you mean the label '//{value}'? Labels start with '//' "
                             "(or ':' for a target of the same package)") from None
        raise


def _to_label_or_pattern(value: Any, info: ValidationInfo) -> Union[Label, Pattern]:
    if isinstance(value, str) and value.startswith("//") and (value.endswith("...") or value.endswith(":all")):
        try:
            return parse_pattern(value)
        except LabelSyntaxError as e:
            raise ValueError(str(e)) from None
    return _to_label(value, info)


LabelAttr = Annotated[Label, BeforeValidator(_to_label)]
# A label, or a pattern (`//models/...`, `//pkg:all`) that the graph expands; see AnalysisContext.expand.
LabelOrPattern = Annotated[Union[Label, Pattern], BeforeValidator(_to_label_or_pattern)]
SourceAttr = Annotated[SourcePath, BeforeValidator(_to_source)]
SourceOrLabel = Annotated[Union[Label, SourcePath], BeforeValidator(_to_source_or_label)]


class Attrs(BaseModel):
    """Base of every rule's attribute model: unknown attributes are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Rule:
    name: ClassVar[str]
    version: ClassVar[str]
    attrs: ClassVar[type[Attrs]]
    # tpbuild.toml tables this rule reads (`[triton]`); a table no installed rule claims is an error,
    # so a misspelt `[tritn]` does not pass silently.
    sections: ClassVar[tuple[str, ...]] = ()

    def analyze(self, ctx: "AnalysisContext", attrs: Any) -> TargetInfo:
        raise NotImplementedError


@dataclass(frozen=True)
class Analysed:
    """Targets as analysis sees them: those the patterns named, and the infos of those and their
    dependencies."""

    requested: tuple[Label, ...]
    infos: Mapping[Label, TargetInfo]


@dataclass(frozen=True)
class Built(Analysed):
    """A finished build: `success` when every target built (the CLI has reported any failure)."""

    success: bool
    # Every target that built and has an output -> the digest of the tree placed for it: what changed
    # between two builds, for commands that act on changed outputs (`tpbuild dev` reloads those).
    outputs: Mapping[Label, str] = field(default_factory=dict)


@runtime_checkable
class Session(Protocol):
    """What a rule-set command works with (the CLI provides it): the workspace, and builds that
    report progress, a summary and `--report` exactly as `tpbuild build` does."""

    @property
    def root(self) -> Path: ...

    @property
    def cache_dir(self) -> Path:
        """The local cache directory (a watcher leaves it alone, as it does tpbuild-out)."""

    def section(self, name: str) -> dict:
        """A rule-set table of tpbuild.toml such as `[triton]` (empty if absent)."""

    def analyse(self, patterns: list[str]) -> Analysed:
        """Analysis only: nothing is built."""

    def build(self, patterns: list[str], *, jobs: int, keep_going: bool = False, report_path: str | None = None,
              changed_since: str | None = None, summary_path: str | None = None) -> Built | None:
        """None when `changed_since` leaves nothing to build (a success: the CLI said so)."""

    def output(self, label: Label) -> Path:
        """Where a target's default output is placed by a build (`tpbuild-out/<package>/<name>`)."""

    def summarize_tests(self, rows: list[tuple[str, str, bool, str]]) -> None:
        """Append test results (target, case, passed, message) to the --summary file, if one was given."""


class Command:
    """A subcommand a rule set adds to the CLI (`tpbuild test`), registered in the `tpbuild.commands`
    entry-point group. `run` gets a `Session` and returns the exit code."""

    name: ClassVar[str]
    help: ClassVar[str]
    # A command that builds through `session.build` gets the CLI's `--changed-since` and `--summary`,
    # to pass on as `changed_since=args.changed_since, summary_path=args.summary`.
    builds: ClassVar[bool] = False
    # False: the command runs without a workspace (`tpbuild import` may create one) and gets session None.
    needs_workspace: ClassVar[bool] = True

    def configure(self, parser) -> None:
        raise NotImplementedError

    def run(self, session: Session, args) -> int:
        raise NotImplementedError


class AnalysisContext:
    """Everything a rule may touch while declaring actions for one target."""

    def __init__(self, *, root: Path, label: Label, rule: Rule, source, deps: dict[Label, TargetInfo],
                 sections: dict, keypath: tuple, workspace_source=None):
        self.root = root
        self.label = label
        self.rule = rule
        self._source = source  # the manifest's TomlSource, for error lines
        self._deps = deps
        self._sections = sections
        self._ws_source = workspace_source
        self._keypath = keypath  # where this target's table is in the manifest
        self.actions: list[Action] = []
        # Everything analysis looked at (path from the root -> stat), so its result can be reused
        # while none of it changes; see analysiscache.
        self.observed: dict[str, tuple | None] = {}
        # Files analysis knows only through `file_facts` (path -> facts.entry): an edit keeping their
        # facts keeps the analysis. A file also `read` whole (`read_whole`) is not among them.
        self.facts: dict[str, list] = {}
        self.read_whole: set[str] = set()
        self.volatile = False
        self.warnings: list[str] = []
        self.expanded: dict[Pattern, list[Label]] = {}  # filled by the graph
        self._package_real: str | None = None  # the package directory, its symlinks resolved

    @property
    def package(self) -> str:
        return self.label.package

    @property
    def package_dir(self) -> Path:
        return self.root / self.label.package

    def section(self, name: str) -> dict:
        """A rule-set table of tpbuild.toml such as `[triton]` (empty if absent)."""
        return self._sections.get(name, {})

    def section_error(self, keypath: tuple, message: str) -> UserError:
        """An error about a tpbuild.toml setting, at its line."""
        return self._ws_source.error(keypath, message)

    def error(self, attr_path: tuple, message: str) -> UserError:
        return UserError(message, at(self._source.path, self._source.line_of((*self._keypath, *attr_path))))

    def dep(self, label: Label) -> TargetInfo:
        return self._deps[label]

    def expand(self, pattern: Pattern) -> list[Label]:
        """The targets a pattern attribute matched (never this target itself), sorted."""
        return self.expanded[pattern]

    # -- sources ----------------------------------------------------------------------------

    def source_path(self, rel: str) -> SourcePath:
        """Check that a package-relative path exists and stays inside the package."""
        if not rel or os.path.isabs(rel) or rel.startswith("~"):
            raise ValueError(f"{rel!r} must be a path relative to the package directory")
        parts = Path(rel).parts
        if ".." in parts:
            raise ValueError(f"{rel!r} leaves the package: '..' is not allowed in source paths")
        norm = "/".join(parts)
        try:
            inside, is_dir = self._inside(norm, strict=True)
        except OSError:  # missing, a file where a directory should be, a symlink loop
            raise ValueError(f"source {rel!r} not found in {self.package or 'the root package'}: "
                             "create it or fix the path") from None
        if not inside:
            raise ValueError(f"{rel!r} is a symlink leading out of the package: sources must live inside it")
        path = f"{self.package}/{norm}" if self.package else norm
        self._observe(path, content=False)
        return SourcePath(norm, path, is_dir)

    def _inside(self, rel: str, strict: bool) -> tuple[bool, bool]:
        """Whether the package-relative path `rel` (normalized), its symlinks resolved, stays inside
        the package, and whether it is a directory. Only its own components are looked at while none
        is a symlink (one `lstat` each; `realpath` took one per component from the root, twice per
        source, and a clean build of 1,000 models spent a tenth of its time there)."""
        if self._package_real is None:
            self._package_real = os.path.realpath(self.package_dir, strict=True)
        full = str(self.package_dir)
        for part in rel.split("/"):
            full = f"{full}/{part}"
            try:
                mode = os.lstat(full).st_mode
            except FileNotFoundError:
                if strict:
                    raise
                break  # realpath below resolves what it can, as it did
            if statmod.S_ISLNK(mode):
                break
        else:
            return True, statmod.S_ISDIR(mode)
        real = os.path.realpath(f"{self.package_dir}/{rel}", strict=strict)
        return real == self._package_real or real.startswith(self._package_real + "/"), os.path.isdir(real)

    def _observe(self, path: str, content: bool = True) -> None:
        """`content=False`: only that the path exists as a file or directory matters to analysis (the
        file's bytes enter action keys at build time), so editing it needs no re-analysis."""
        from .layout import kind, sig

        full = os.path.join(self.root, path)
        if content:
            self.observed[path] = sig(full)
        elif self.observed.get(path) is None or len(self.observed[path]) == 1:  # never weaker than a stat
            self.observed[path] = kind(full)

    def read(self, src: SourcePath | str) -> bytes:
        """Read a source while analysing (a config to validate, a module to scan); recorded as an input
        of analysis, so the target is analysed again when the file changes."""
        path = src.path if isinstance(src, SourcePath) else src
        self._observe(path)
        self.read_whole.add(path)
        self.facts.pop(path, None)
        return (self.root / path).read_bytes()

    def file_facts(self, src: SourcePath | str, fn, *args):
        """`fn(data, *args)` for the source's bytes: what this rule needs of the file (its grammar, the
        names it defines, its imports), as a JSON value. `fn` is a pure module-level function in a module
        that imports nothing heavy: when the file changes, the analysis memo re-runs `fn` alone and
        keeps this target's analysis if the facts are the same (see tpbuild.facts), so an edit of the
        file's body costs no rule. `args` (JSON values) are recorded with it."""
        from .facts import entry

        path = src.path if isinstance(src, SourcePath) else src
        self._observe(path)
        result = fn((self.root / path).read_bytes(), *args)
        if path not in self.read_whole:
            self.facts[path] = entry(fn, args, result)
        return result

    def warn(self, message: str) -> None:
        """One line shown with the build and kept in its report. Given again only when the target is
        analysed again: a warning that must show on every build belongs to an `uncacheable` target."""
        self.warnings.append(f"{self.label}: {message}")

    def uncacheable(self) -> None:
        """This target's analysis probes the machine (tool versions): redo it on every build."""
        self.volatile = True

    def files_under(self, src: SourcePath, exclude: tuple[str, ...] = ()) -> list[str]:
        """Files below a source directory, relative to it, sorted; directories named in `exclude`
        and files matching its globs are skipped. The listing is recorded: it is an input of analysis."""
        import fnmatch

        base = self.root / src.path
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, base)
            self._observe(os.path.join(src.path, rel_dir) if rel_dir != "." else src.path)
            dirnames[:] = sorted(d for d in dirnames if not any(fnmatch.fnmatchcase(d, g) for g in exclude))
            for name in filenames:
                if any(fnmatch.fnmatchcase(name, g) for g in exclude):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), base).replace(os.sep, "/")
                in_pkg = f"{src.rel}/{rel}" if src.rel not in ("", ".") else rel
                if not self._inside(in_pkg, strict=False)[0]:
                    raise ValueError(f"{in_pkg} is a symlink leading out of the package")
                out.append(rel)
        out.sort()
        return out

    # -- declaring actions -----------------------------------------------------------------------

    def _declare(self, variant: type[Action], mnemonic: str, **kw) -> Artifact:
        n = sum(1 for a in self.actions if a.mnemonic == mnemonic)
        action_id = f"{self.label}%{mnemonic}" + (f"#{n}" if n else "")
        self.actions.append(variant(id=action_id, owner=self.label, mnemonic=mnemonic, rule=self.rule.name,
                                    rule_version=self.rule.version, **kw))
        return Artifact(action_id)

    def write(self, mnemonic: str, out: str, content: bytes, *, executable: bool = False) -> Artifact:
        art = self._declare(WriteAction, mnemonic, out=out, content=content, executable=executable,
                            description=f"{mnemonic} {self.label}")
        return Artifact(art.action, out)

    def tree(self, mnemonic: str, entries: list[tuple[str, Input]]) -> Artifact:
        """A directory made of (destination, input) pairs: a source file, an artifact file, or a whole
        tree merged below the destination ("" for the root; several trees may merge there)."""
        return self._declare(TreeAction, mnemonic, inputs=tuple(sorted(entries, key=lambda kv: kv[0])),
                             description=f"{mnemonic} {self.label}")

    def run(self, mnemonic: str, argv: list[str], *, inputs: dict[str, Input], outs: list[str],
            env: dict[str, str] | None = None, tools: dict | None = None, timeout: float | None = None,
            exec_properties: dict[str, str] | None = None, local_only: bool = False,
            description: str = "", log_hint: str = "", code: list[str] | tuple[str, ...] = ()) -> Artifact:
        """A command run in a scratch directory holding `inputs`; `outs` are collected from it.

        `timeout` (seconds) fails the action when it runs longer. `exec_properties` name the platform
        it must run on (REAPI platform properties: `container-image`, `OSFamily`, a pool); they enter
        its key. `local_only` declares it too small to be worth shipping to a remote executor.
        `code` names the modules the command runs (`["tpbuild_triton.envbuild"]` for `{python} -m
        tpbuild_triton.envbuild`): their source, and that of the modules of their package they
        import, enters the key, so editing the worker rebuilds what it made (see tpbuild.code)."""
        from .code import digest_of

        return self._declare(
            RunAction, mnemonic, inputs=tuple(sorted(inputs.items(), key=lambda kv: kv[0])),
            argv=tuple(argv), env=tuple(sorted((env or {}).items())), outs=tuple(sorted(outs)), timeout=timeout,
            exec_properties=tuple(sorted((exec_properties or {}).items())), local_only=local_only,
            tools=dict(tools or {}), description=description or f"{mnemonic} {self.label}", log_hint=log_hint,
            code=digest_of(tuple(sorted(code))) if code else "", code_modules=tuple(sorted(code)),
        )

    def source(self, src: SourcePath) -> Source:
        return Source(src.path)
