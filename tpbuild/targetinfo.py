"""What a target offers the targets that depend on it, apart from the plugin API (which re-exports
it) so that the analysis memo decodes it without importing pydantic and the attribute types."""

from __future__ import annotations

from collections.abc import Callable

from .action import Artifact
from .value import Frozen


class TargetInfo(Frozen):
    """What a target offers the targets that depend on it (buck2's providers, kept to one value).

    `output` is the target's default output, materialized at `tpbuild-out/<package>/<name>`.
    `values` carries rule-specific facts (a model's name, an env's Python) for dependents to read.
    """

    __match_args__ = ("rule", "output", "values")  # no slots: a deferred one holds `_values` until read

    def __init__(self, rule: str, output: Artifact | None, values: dict | None = None):
        # Its fields written into its dict, past __setattr__ (value.Frozen refuses assignment): the analysis
        # memo makes one for every target it decodes, and three object.__setattr__ calls took twice as long.
        fields = self.__dict__
        fields["rule"] = rule
        fields["output"] = output
        fields["values"] = {} if values is None else values

    @classmethod
    def deferred(cls, rule: str, output: Artifact | None, values: Callable[[], dict]) -> "TargetInfo":
        """One whose `values` are made by `values()` when first read: the analysis memo's, of a value
        that is not plain JSON (a repository's models by name: 10,000 labels at 10,000 models), which a
        build whose targets' analyses are all reused never reads."""
        info = object.__new__(cls)
        object.__setattr__(info, "rule", rule)
        object.__setattr__(info, "output", output)
        object.__setattr__(info, "_values", values)
        return info

    def __getattr__(self, name: str):
        # Only for an attribute the instance lacks: `values` of a deferred one, not read yet.
        make = self.__dict__.get("_values")
        if name != "values" or make is None:
            raise AttributeError(name)
        values = make()
        object.__setattr__(self, "values", values)
        del self.__dict__["_values"]
        return values
