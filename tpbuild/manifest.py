"""BUILD.toml manifests: each `[<rule>.<name>]` table is one target.

Loading a manifest validates every target's attributes against its rule's pydantic model, with
labels resolved relative to the package and source paths checked to exist inside it, so all bad
input is reported before anything is analysed or run, at the line the user must change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from . import tomlsource
from .errors import TpbuildError, UserError, at
from .label import Label, LabelSyntaxError, Pattern, check_name


@dataclass
class Target:
    label: Label
    rule: Any  # plugin.Rule
    attrs: BaseModel
    keypath: tuple
    manifest: str  # its path from the workspace root
    root: Path
    _source: tomlsource.TomlSource | None = field(repr=False)  # until `release`
    deps_digest: str | None = None  # set once analysed in this build

    @property
    def source(self) -> tomlsource.TomlSource:
        """The parsed manifest, for errors at its lines (and `affected`, its tables). Held while the graph
        and the rules may report such errors; once analysis is done with it (`release`), read again when
        asked for, as a target known from the analysis memo's is (`graph.CachedTarget`): at 10,000 models
        the parsed manifests held 42 MB, 15% of a clean build's peak memory, for errors nobody reported."""
        if self._source is None:
            self._source = tomlsource.load(self.root / self.manifest, self.manifest)
        return self._source

    def release(self) -> None:
        self._source = None

    def references(self) -> list[Label | Pattern]:
        """Every label and pattern in the attributes, wherever nested: the graph needs no rule knowledge."""
        found: list = []
        _collect_labels(self.attrs, found)
        return found


def _collect_labels(value: Any, out: list[Label]) -> None:
    if isinstance(value, (Label, Pattern)):
        out.append(value)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect_labels(getattr(value, name), out)
    elif isinstance(value, dict):
        for v in value.values():
            _collect_labels(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect_labels(v, out)


def validation_error(src: tomlsource.TomlSource, base: tuple, e: ValidationError,
                     model: type | None = None) -> UserError:
    """Turn pydantic's complaint into `file:line: attribute: what to do`, in TOML's words."""
    # A value that fits no branch of a union is reported once per branch; the first is enough, since
    # `describe` names every branch from the annotation.
    err = e.errors()[0]
    loc = _clean_loc(err["loc"])
    return UserError(describe(err, model), at(src.path, src.line_of((*base, *loc))))


def _clean_loc(loc) -> tuple:
    """Without pydantic's union-branch and validator tags ('dict[str,str]', 'function-after[...]')."""
    return tuple(p for p in loc if not (isinstance(p, str) and (
        p.startswith(("function-", "union[", "tagged-union[", "lax-", "json-or-python[")) or "[" in p)))


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc).replace(".[", "[")


def describe(err: dict, model: type | None = None) -> str:
    """One pydantic error (an item of `ValidationError.errors()`) as a sentence a user of TOML reads:
    expected types are named as TOML names them ("a table", "an array of strings"), never as Python
    types, and the value is shown as it was written."""
    loc = _clean_loc(err["loc"])
    field = _field_path(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown attribute {field!r}: remove it or check its spelling"
    if kind == "missing":
        return f"missing required attribute {field!r}: add it"
    if kind in ("value_error", "assertion_error"):
        return f"attribute {field!r}: {str(err['msg']).removeprefix('Value error, ').removeprefix('Assertion failed, ')}"
    value = err.get("input")
    expected = _expected(model, loc) if model is not None else None
    if expected is None:
        expected = _EXPECTED_BY_ERROR.get(kind.removesuffix("_parsing").removesuffix("_type"))
    if kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        limit = next(iter((err.get("ctx") or {}).values()), "")
        words = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<", "less_than_equal": "<="}[kind]
        return f"attribute {field!r}: must be {words} {limit}, got {toml_value(value)}"
    if kind == "literal_error":
        return f"attribute {field!r}: expected {err.get('ctx', {}).get('expected', '')}, got {toml_value(value)}"
    hint = ""
    if isinstance(value, str) and expected and expected.startswith("an array"):
        hint = f": write {loc[-1] if loc and isinstance(loc[-1], str) else field} = [{toml_value(value)}]"
    what = f"expected {expected}" if expected else "this value is not accepted"
    return f"attribute {field!r}: {what}, got {toml_kind(value)} {toml_value(value)}{hint}"


_EXPECTED_BY_ERROR = {
    "dict": "a table", "model": "a table", "list": "an array", "tuple": "an array", "string": "a string",
    "int": "an integer", "float": "a number", "bool": "true or false", "frozen_set": "an array", "set": "an array",
}


def toml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "the boolean"
    if isinstance(value, int):
        return "the integer"
    if isinstance(value, float):
        return "the number"
    if isinstance(value, str):
        return "the string"
    if isinstance(value, dict):
        return "the table"
    if isinstance(value, (list, tuple)):
        return "the array"
    return "the value"


def toml_value(value: Any) -> str:
    """How the value looks in TOML (so `[1]`, `"x"`, `{ a = 1 }`, `true`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def _expected(model: type, loc: tuple) -> str | None:
    """The TOML type the annotation at `loc` takes ("a table of strings or an array of strings")."""
    ann: Any = model
    for part in loc:
        ann = _strip(ann)
        if get_origin(ann) in (Union, types.UnionType):  # follow the branch the key or index belongs to
            kinds = (tuple, list) if isinstance(part, int) else (dict,)
            branch = [a for a in get_args(ann) if get_origin(_strip(a)) in kinds or
                      (isinstance(part, str) and isinstance(_strip(a), type) and issubclass(_strip(a), BaseModel))]
            if len(branch) != 1:
                break
            ann = _strip(branch[0])
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(part, str):
            f = ann.model_fields.get(part)
            if f is None:
                return None
            ann = f.annotation
        elif isinstance(part, int) and get_origin(ann) in (tuple, list):
            ann = get_args(ann)[0]
        elif get_origin(ann) is dict:
            ann = get_args(ann)[1]
        else:
            break
    return toml_type(ann)


def _strip(ann: Any) -> Any:
    """Annotated[X, ...] -> X; Optional[X] -> X."""
    while get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return _strip(args[0])
    return ann


_SINGULAR = {"a string": "strings", "an integer": "integers", "a number": "numbers", "a table": "tables",
             "true or false": "booleans", "a path": "paths", "a label": "labels", "a path or a label": "paths or labels",
             "a label or a pattern": "labels or patterns"}


def toml_type(ann: Any) -> str:
    ann = _strip(ann)
    origin = get_origin(ann)
    if origin in (Union, types.UnionType):
        names = [toml_type(a) for a in get_args(ann) if a is not type(None)]
        return " or ".join(dict.fromkeys(names))
    if origin is Literal:
        return "one of " + ", ".join(toml_value(a) for a in get_args(ann))
    if origin in (tuple, list):
        item = toml_type(get_args(ann)[0]) if get_args(ann) else None
        return f"an array of {_SINGULAR.get(item, 'values')}" if item else "an array"
    if origin is dict:
        item = toml_type(get_args(ann)[1])
        return f"a table of {_SINGULAR[item]}" if item in _SINGULAR and item != "a table" else "a table"
    if ann is dict:
        return "a table"
    if ann is str:
        return "a string"
    if ann is bool:
        return "true or false"
    if ann is int:
        return "an integer"
    if ann is float:
        return "a number"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "a table"
    name = getattr(ann, "__name__", "")
    return {"Label": "a label", "SourcePath": "a path", "Pattern": "a pattern"}.get(name, "a value")


def load_package(root: Path, package: str, rules: dict, make_context,
                 errors: list[tuple[Label | None, TpbuildError]] | None = None) -> list[Target]:
    """Parse and validate one package's BUILD.toml. `make_context(label, rule, src, keypath)` gives
    the validation context (the analysis context holding the package's filesystem checks).

    With `errors`, a target whose table is wrong is left out and (its label, its error) appended, and the other
    targets are still returned (so one run reports every bad target); without, the first error raises.
    """
    rel = f"{package}/BUILD.toml" if package else "BUILD.toml"
    src = tomlsource.load(root / rel, rel)
    targets: list[Target] = []
    seen: dict[str, str] = {}

    def fail(e: TpbuildError, label: Label | None = None) -> None:
        if errors is None:
            raise e
        errors.append((label, e))

    for rule_name, table in src.data.items():
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            fail(src.error((rule_name,), f"expected tables [{rule_name}.<name>], one per target"))
            continue
        rule = rules.get(rule_name)
        if rule is None:
            known = ", ".join(sorted(rules))
            fail(src.error((rule_name,), f"unknown rule {rule_name!r}: use one of {known}"))
            continue
        for name, raw in table.items():
            keypath = (rule_name, name)
            try:
                check_name(name)
            except LabelSyntaxError as e:
                fail(src.error(keypath, str(e)))
                continue
            if name in seen:
                fail(src.error(keypath, f"duplicate target name {name!r}: already declared as "
                                        f"[{seen[name]}.{name}]; rename one of them"))
                continue
            seen[name] = rule_name
            label = Label(package, name)
            ctx = make_context(label, rule, src, keypath)
            try:
                attrs = rule.attrs.model_validate(raw, context={"analysis": ctx})
            except ValidationError as e:
                fail(validation_error(src, keypath, e, rule.attrs), label)
                continue
            targets.append(Target(label, rule, attrs, keypath, rel, root, src))
    return targets
