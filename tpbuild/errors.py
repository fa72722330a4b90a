"""Errors as values with a location and a tier.

Every failure a user can cause or meet is raised as a `TpbuildError` carrying where it came from
(file and line, when there is one) and a tier that decides the exit code. Only the CLI renders them,
once, so no module prints or exits, and no logic ever depends on the text of a message.

Tiers follow buck2: the user's input (exit 2), the build or its environment (exit 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_BUILD = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class Location:
    """A place in a workspace file; `path` is relative to the workspace root where possible."""

    path: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


class TpbuildError(Exception):
    """Base of all expected failures; `exit_code` is the tier."""

    exit_code = EXIT_BUILD

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


def at(path: str | Path, line: int | None = None) -> Location:
    return Location(str(path), line)
