"""BUILD.toml manifests: each `[<rule>.<name>]` table is one target.

Loading a manifest validates every target's attributes against its rule's pydantic model, with
labels resolved relative to the package and source paths checked to exist inside it, so all bad
input is reported before anything is analysed or run, at the line the user must change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from . import tomlsource
from .errors import UserError, at
from .label import Label, LabelSyntaxError, Pattern, check_name


@dataclass
class Target:
    label: Label
    rule: Any  # plugin.Rule
    attrs: BaseModel
    keypath: tuple
    source: tomlsource.TomlSource
    deps_digest: str | None = None  # set once analysed in this build

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


def validation_error(src: tomlsource.TomlSource, base: tuple, e: ValidationError) -> UserError:
    """Turn pydantic's first complaint into `file:line: attribute: what to do`."""
    err = e.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "union["))))
    field = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc).replace(".[", "[")
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = f"unknown attribute {field!r}: remove it or check its spelling"
    elif kind == "missing":
        msg = f"missing required attribute {field!r}: add it"
    elif kind == "value_error":
        msg = f"attribute {field!r}: {str(err['msg']).removeprefix('Value error, ')}"
    else:
        msg = f"attribute {field!r}: {err['msg'].lower()} (got {err.get('input')!r})"
    return UserError(msg, at(src.path, src.line_of((*base, *loc))))


def load_package(root: Path, package: str, rules: dict, make_context) -> list[Target]:
    """Parse and validate one package's BUILD.toml. `make_context(label, rule, src, keypath)` gives
    the validation context (the analysis context holding the package's filesystem checks)."""
    rel = f"{package}/BUILD.toml" if package else "BUILD.toml"
    src = tomlsource.load(root / rel, rel)
    targets: list[Target] = []
    seen: dict[str, str] = {}
    for rule_name, table in src.data.items():
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise src.error((rule_name,), f"expected tables [{rule_name}.<name>], one per target")
        rule = rules.get(rule_name)
        if rule is None:
            known = ", ".join(sorted(rules))
            raise src.error((rule_name,), f"unknown rule {rule_name!r}: use one of {known}")
        for name, raw in table.items():
            keypath = (rule_name, name)
            try:
                check_name(name)
            except LabelSyntaxError as e:
                raise src.error(keypath, str(e)) from None
            if name in seen:
                raise src.error(keypath, f"duplicate target name {name!r}: already declared as "
                                         f"[{seen[name]}.{name}]; rename one of them")
            seen[name] = rule_name
            label = Label(package, name)
            ctx = make_context(label, rule, src, keypath)
            try:
                attrs = rule.attrs.model_validate(raw, context={"analysis": ctx})
            except ValidationError as e:
                raise validation_error(src, keypath, e) from None
            targets.append(Target(label, rule, attrs, keypath, src))
    return targets
