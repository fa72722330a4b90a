"""Labels (`//pkg/sub:name`) and command-line patterns (`//pkg/...`, `//pkg:all`, `-//pkg/...`).

A label names one target. Packages are paths from the workspace root; the root package is "".
Parsing is strict because a label that silently means something else is worse than an error.
"""

from __future__ import annotations

import functools
import re

from .value import Frozen

NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_PKG_PART_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class LabelSyntaxError(ValueError):
    """A malformed label or pattern; callers attach the location."""


@functools.total_ordering
class Label:
    """A target: its package and its name there. Immutable, equal, hashed and ordered by (package, name),
    as a frozen, ordered dataclass would be; a plain class, as the dataclass's nine generated methods
    were compiled on every start (a millisecond of an edit's). `__match_args__` names the fields a
    memo records (memo.py). Its hash is taken once, when it is made: a no-op build of 10,000 models
    hashes labels 150,000 times (the graph's dicts and sets), each a tuple made and hashed again."""

    __slots__ = ("package", "name", "_hash")
    __match_args__ = ("package", "name")

    def __init__(self, package: str, name: str):
        _set_package(self, package)  # past __setattr__, by the slots' own setters: a third faster than
        _set_name(self, name)  # object.__setattr__ (a label is made for each target the memo decodes)
        _set_hash(self, hash((package, name)))

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a Label")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a Label")

    def __eq__(self, other) -> bool:
        if other.__class__ is Label:
            return self.package == other.package and self.name == other.name
        return NotImplemented

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other) -> bool:
        if other.__class__ is Label:
            return (self.package, self.name) < (other.package, other.name)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Label(package={self.package!r}, name={self.name!r})"

    def __reduce__(self):
        return Label, (self.package, self.name)

    def __str__(self) -> str:
        return f"//{self.package}:{self.name}"

    @property
    def path(self) -> str:
        """Where this target's outputs live below tpbuild-out/."""
        return f"{self.package}/{self.name}" if self.package else self.name


_set_package, _set_name, _set_hash = Label.package.__set__, Label.name.__set__, Label._hash.__set__


def check_name(name: str) -> str:
    if not NAME_RE.match(name) or name in (".", ".."):
        raise LabelSyntaxError(
            f"invalid target name {name!r}: use letters, digits, '_', '-' and '.'"
        )
    return name


def check_package(package: str) -> str:
    if package == "":
        return package
    for part in package.split("/"):
        if not _PKG_PART_RE.match(part) or part in (".", ".."):
            raise LabelSyntaxError(f"invalid package path {package!r}")
    return package


def parse_label(text: str, current_package: str | None = None) -> Label:
    """Parse `//pkg:name`, `//pkg` (= `//pkg:<last part>`), or `:name` relative to `current_package`."""
    if text.startswith(":"):
        if current_package is None:
            raise LabelSyntaxError(f"relative label {text!r} needs a package: write //pkg{text}")
        return Label(current_package, check_name(text[1:]))
    if not text.startswith("//"):
        hint = ""
        if ":" in text and not text.startswith("/"):
            try:
                parse_label("//" + text)
                hint = f": did you mean '//{text}'?"
            except LabelSyntaxError:
                pass
        raise LabelSyntaxError(f"invalid label {text!r}: labels start with '//' (or ':' inside a BUILD.toml){hint}")
    body = text[2:]
    if ":" in body:
        package, _, name = body.partition(":")
    else:
        package = body
        name = body.rsplit("/", 1)[-1]
        if not name:
            raise LabelSyntaxError(f"invalid label {text!r}: the root package needs an explicit name, //:name")
    package = package.rstrip("/") if package != "" else package
    return Label(check_package(package), check_name(name))


class Pattern(Frozen):
    """One command-line pattern. `recursive` covers `pkg/...`; `all_in_package` covers `pkg:all`."""

    __slots__ = __match_args__ = ("package", "name", "recursive", "negative")

    def __init__(self, package: str, name: str | None = None, recursive: bool = False, negative: bool = False):
        object.__setattr__(self, "package", package)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "recursive", recursive)
        object.__setattr__(self, "negative", negative)

    def covers(self, package: str) -> bool:
        """A recursive pattern's test of a package: it or a package below it."""
        return self.package == "" or package == self.package or package.startswith(self.package + "/")

    def matches(self, label: Label) -> bool:
        if self.recursive:
            return self.covers(label.package)
        if self.name is None:
            return label.package == self.package
        return label == Label(self.package, self.name)

    def __str__(self) -> str:
        sign = "-" if self.negative else ""
        if self.recursive:
            return f"{sign}//{self.package + '/' if self.package else ''}..."
        if self.name is None:
            return f"{sign}//{self.package}:all"
        return f"{sign}{Label(self.package, self.name)}"


def parse_pattern(text: str) -> Pattern:
    negative = text.startswith("-")
    body = text[1:] if negative else text
    if not body.startswith("//"):
        raise LabelSyntaxError(
            f"invalid pattern {text!r}: use //pkg:name, //pkg:all, //pkg/... or -//pkg/..."
        )
    if body == "//..." or body.endswith("/..."):
        package = body[2:-3].rstrip("/")
        return Pattern(check_package(package), recursive=True, negative=negative)
    if body.endswith(":all") or body.endswith(":*"):
        package = body[2:].rpartition(":")[0]
        return Pattern(check_package(package), negative=negative)
    label = parse_label(body)
    return Pattern(label.package, label.name, negative=negative)
