"""What a target offers the targets that depend on it, apart from the plugin API (which re-exports
it) so that the analysis memo decodes it without importing pydantic and the attribute types."""

from __future__ import annotations

from dataclasses import dataclass, field

from .action import Artifact


@dataclass(frozen=True)
class TargetInfo:
    """What a target offers the targets that depend on it (buck2's providers, kept to one value).

    `output` is the target's default output, materialized at `tpbuild-out/<package>/<name>`.
    `values` carries rule-specific facts (a model's name, an env's Python) for dependents to read.
    """

    rule: str
    output: Artifact | None
    values: dict = field(default_factory=dict)
