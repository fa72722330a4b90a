"""Actions: the closed set of things a build does, and the key that names each one's result.

Rules never run anything; they declare actions. There are three kinds, after buck2's small set:
- `write`: a file whose content is known at analysis (a rendered config). Its content is its key.
- `tree`: a directory assembled from files and other trees (a model directory, a model repository).
  It copies nothing: its result is a list of (path, digest) entries pointing into the blob store.
- `run`: a subprocess in a scratch directory, with declared inputs placed in it and declared outputs
  collected from it (a genrule, an env build, a stub build).

An action's key hashes what can change its result: the kind and its spec, the rule and its version,
the *content* digests of its inputs (so a rebuilt input that comes out byte-identical changes no key
downstream: early cutoff), fingerprints of external tools, the code that shapes the result (the
modules a `run` action runs, and the engine's own, see `code`), the environment a `run` action gets
(`RUN_ENV` and `PATH`), the cache salt and `KEY_VERSION`, which retires every old entry when the
meaning of a key changes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from . import code, digest
from .label import Label

KEY_VERSION = 2

# A placeholder in `run` argv/env for the interpreter running tpbuild: its path differs between
# machines, so it must not enter keys verbatim (keys are shared through the remote cache).
PYTHON = "{python}"
# Likewise, in `run` argv: a file beside the action's own log for a tool's detailed log, which the
# failure message names and which outlives the scratch directory.
TOOL_LOG = "{tool_log}"
# The environment of every `run` action besides its own `env`: fixed by tpbuild, so no caller's
# variable reaches a command unseen. The placeholders stand for places on this machine whose paths
# must not enter keys: the scratch directory (HOME and TMPDIR are in it, so no user config is read),
# and the user's download cache (pip's; a cache changes how fast, never what). `PATH` is the caller's,
# because it decides which tools a command finds: it enters the key of every `run` action.
SCRATCH = "{scratch}"
USER_CACHE = "{user_cache}"
RUN_ENV = {"HOME": f"{SCRATCH}/home", "TMPDIR": f"{SCRATCH}/tmp", "LANG": "C.UTF-8", "SOURCE_DATE_EPOCH": "0",
           "XDG_CACHE_HOME": USER_CACHE}


def run_path() -> str:
    return os.environ.get("PATH", "/usr/bin:/bin")


@dataclass(frozen=True)
class Source:
    """A file of the workspace, by its path from the root."""

    path: str


@dataclass(frozen=True)
class Artifact:
    """An output of an action: one file of its tree, or the whole tree when `path` is empty."""

    action: str
    path: str = ""


Input = Source | Artifact


@dataclass(frozen=True)
class Entry:
    """One file of an output tree. `kind` is 'f' (file), 'x' (executable) or 'l' (symlink, `digest` is its target)."""

    path: str
    kind: str
    digest: str
    size: int

    def to_json(self) -> list:
        return [self.path, self.kind, self.digest, self.size]

    @staticmethod
    def from_json(v: list) -> "Entry":
        return Entry(v[0], v[1], v[2], v[3])


def tree_digest(entries: tuple[Entry, ...]) -> str:
    return digest.of_value([[e.path, e.kind, e.digest] for e in entries])


@dataclass(frozen=True)
class Action:
    id: str
    owner: Label
    mnemonic: str
    kind: str  # write | tree | run
    rule: str
    rule_version: str
    # (destination, input): for `tree`, where the input lands in the output; for `run`, where it is
    # placed in the scratch directory before the command runs.
    inputs: tuple[tuple[str, Input], ...] = ()
    # write: {"out", "executable"}; tree: {}; run: {"argv", "env", "outs", "timeout"}
    spec: dict = field(default_factory=dict, hash=False, compare=False)
    content: bytes = b""  # write actions only
    tools: dict = field(default_factory=dict, hash=False, compare=False)
    description: str = field(default="", hash=False, compare=False)  # presentation, not identity
    log_hint: str = field(default="", hash=False, compare=False)
    code: str = ""  # run actions: digest of the modules the command runs (code.digest_of)

    def upstream(self) -> set[str]:
        return {i.action for _, i in self.inputs if isinstance(i, Artifact)}

    def key_material(self, input_digests: list[tuple[str, str]], salt: str) -> bytes:
        env = [RUN_ENV, run_path()] if self.kind == "run" else []
        return digest.canonical_json([
            KEY_VERSION, salt, self.kind, self.rule, self.rule_version, self.mnemonic,
            self.spec, digest.of_bytes(self.content) if self.kind == "write" else "",
            self.tools, input_digests, code.engine(), self.code, env,
        ])


def key_of(material: bytes) -> str:
    """The local key; the remote cache names the same material by its SHA-256."""
    return digest.of_bytes(material)


def wire_key_of(material: bytes) -> str:
    return hashlib.sha256(material).hexdigest()
