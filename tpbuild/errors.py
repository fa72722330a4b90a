"""Errors as values with a location and a tier.

Every failure a user can cause or meet is raised as a `TpbuildError` carrying where it came from
(file and line, when there is one) and a tier that decides the exit code. Only the CLI renders them,
once, so no module prints or exits, and no logic ever depends on the text of a message.

Tiers follow buck2: the user's input (exit 2), the build or its environment (exit 1).
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_BUILD = 1
EXIT_USAGE = 2


class Location:
    """A place in a workspace file; `path` is relative to the workspace root where possible. A plain
    value class, not a dataclass: the CLI imports this module before the no-op stamp answers, and
    `dataclasses` (with `inspect`) would be most of what that answer costs to import."""

    __slots__ = ("path", "line", "col")

    def __init__(self, path: str, line: int | None = None, col: int | None = None):
        self.path = path
        self.line = line
        self.col = col  # 1-based, where a tool gives one (a Python syntax error)

    def _key(self) -> tuple:
        return (self.path, self.line, self.col)

    def __eq__(self, other) -> bool:
        return type(other) is Location and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Location(path={self.path!r}, line={self.line!r}, col={self.col!r})"

    def __str__(self) -> str:
        if not self.line:
            return self.path
        return f"{self.path}:{self.line}:{self.col}" if self.col else f"{self.path}:{self.line}"


class TpbuildError(Exception):
    """Base of all expected failures; `exit_code` is the tier."""

    exit_code = EXIT_BUILD
    warnings: tuple[str, ...] = ()  # found on the way to this error, for the CLI to show with it

    def __init__(self, message: str, location: Location | None = None, *, detail: str = ""):
        super().__init__(message)
        self.message = message
        self.location = location
        self.detail = detail

    def render(self) -> str:
        head = f"{self.location}: {self.message}" if self.location else self.message
        return f"{head}\n{self.detail.rstrip()}" if self.detail else head


class UserError(TpbuildError):
    """Bad input: a manifest, a label, a flag, a config. Nothing was built."""

    exit_code = EXIT_USAGE


class BuildError(TpbuildError):
    """An action failed, or the environment lacks something an action needs."""

    exit_code = EXIT_BUILD


def at(path: str | Path, line: int | None = None, col: int | None = None) -> Location:
    return Location(str(path), line, col)


# How many errors one run shows; the rest are counted, so a workspace with hundreds of broken
# manifests still gives a readable answer that says how much is left.
SHOWN_ERRORS = 50


class ErrorList(UserError):
    """Several independent errors found in one pass (analysis goes on past the first), shown sorted by
    file and line, each once. The tier is the worst of theirs."""

    def __init__(self, errors: list[TpbuildError]):
        unique: dict[str, TpbuildError] = {}
        for e in flatten(errors):
            unique.setdefault(e.render(), e)
        self.errors = sorted(unique.values(), key=_order)
        super().__init__(f"{len(self.errors)} errors", None)
        self.exit_code = max(e.exit_code for e in self.errors) if self.errors else EXIT_USAGE

    def render(self) -> str:
        shown = [e.render() for e in self.errors[:SHOWN_ERRORS]]
        more = len(self.errors) - len(shown)
        # The CLI prefixes the first line with "error: "; each further error gets its own prefix.
        return "\nerror: ".join(shown) + (f"\n... and {more} more error{'s' if more > 1 else ''}" if more else "")


def flatten(errors) -> list[TpbuildError]:
    out: list[TpbuildError] = []
    for e in errors:
        out.extend(e.errors if isinstance(e, ErrorList) else [e])
    return out


def collected(errors: list[TpbuildError]) -> TpbuildError:
    """One error as itself, several as an ErrorList."""
    flat = flatten(errors)
    return flat[0] if len(flat) == 1 else ErrorList(flat)


def _order(e: TpbuildError) -> tuple:
    loc = e.location
    return (loc is None, loc.path if loc else "", (loc.line or 0) if loc else 0, (loc.col or 0) if loc else 0, e.message)
