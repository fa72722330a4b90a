"""What the Triton rules offer the targets that depend on them, as typed values.

A rule states its facts as one of these and stores them in its `TargetInfo.values` (`values()`); a
dependent reads them back with `of(info)` instead of indexing a dict by string, so a renamed or
missing fact is an error at the one place that reads it. The stored form stays a plain dict: it is
what the analysis memo keeps and what a target's identity hashes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from tpbuild.plugin import TargetInfo


@dataclass(frozen=True)
class Provider:
    @classmethod
    def of(cls, info: TargetInfo):
        return cls(**{f.name: info.values[f.name] for f in fields(cls)})

    def values(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EnvProvider(Provider):
    """A python_env: the Python it runs, and its file (`<name>.tar.gz`) or directory (`format = "dir"`)."""

    python: str
    file_name: str
    format: str


@dataclass(frozen=True)
class StubProvider(Provider):
    """A python_stub: the Python it embeds and the name of the stub binary in its output."""

    python: str
    file_name: str
