"""A run action as a REAPI `Command` and `Action`: what another machine needs to run it, and nothing
that differs between the machines that ask.

- `{python}` (the interpreter running tpbuild) becomes `python3`, resolved on the worker's PATH: a
  `tpbuild worker` puts its own interpreter's directory first, a container image names its own. So
  the platform must carry tpbuild for `{python}` actions (env and stub builds run tpbuild_triton).
- `{tool_log}` becomes `TOOL_LOG` in the working directory, declared as an output, and is brought
  back beside the action's local log.
- The environment holds the action's own variables plus what the local executor fixes for
  reproducibility (`LANG`, `SOURCE_DATE_EPOCH`); PATH, HOME and TMPDIR are the worker's.
- Outputs are `output_paths` below `out/`: a path may come back as a file, symlink or directory.
- The platform is the action's `exec_properties` over the `[remote] exec_properties` defaults, in
  both `Command.platform` (REAPI < 2.2 servers) and `Action.platform`.
- `Action.salt` is the SHA-256 of the action's tpbuild key material, so everything that decides the
  local key (rule version, tool fingerprints, the cache salt, `KEY_VERSION`) also decides the REAPI
  action digest: a worker can never answer for a stale rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from google.protobuf import duration_pb2

from ..action import PYTHON, TOOL_LOG, RunAction, wire_key_of
from .wire import digest_of, re_pb2

OUT_PREFIX = "out/"
TOOL_LOG_FILE = ".tpbuild-tool.log"
REMOTE_PYTHON = "python3"
FIXED_ENV = {"LANG": "C.UTF-8", "SOURCE_DATE_EPOCH": "0"}


@dataclass(frozen=True)
class Wire:
    """An action on the wire: the digests that name it and the two messages behind them."""

    action: re_pb2.Action
    action_digest: re_pb2.Digest
    action_bytes: bytes
    command: re_pb2.Command
    command_bytes: bytes
    uses_tool_log: bool


def _expand(s: str) -> str:
    return s.replace(PYTHON, REMOTE_PYTHON).replace(TOOL_LOG, TOOL_LOG_FILE)


def platform_of(action: RunAction, defaults: dict[str, str]) -> dict[str, str]:
    return {**defaults, **dict(action.exec_properties)}


def build(action: RunAction, root: re_pb2.Digest, material: bytes, platform: dict[str, str]) -> Wire:
    argv = [_expand(a) for a in action.argv]
    uses_tool_log = any(TOOL_LOG in a for a in action.argv)
    env = {**FIXED_ENV, **{k: _expand(v) for k, v in action.env}}
    outs = sorted(OUT_PREFIX + o for o in action.outs) + ([TOOL_LOG_FILE] if uses_tool_log else [])
    plat = re_pb2.Platform(properties=[re_pb2.Platform.Property(name=k, value=platform[k]) for k in sorted(platform)])
    command = re_pb2.Command(
        arguments=argv,
        environment_variables=[re_pb2.Command.EnvironmentVariable(name=k, value=env[k]) for k in sorted(env)],
        output_paths=outs,
        platform=plat,
    )
    command_bytes = command.SerializeToString(deterministic=True)
    msg = re_pb2.Action(command_digest=digest_of(command_bytes), input_root_digest=root, platform=plat,
                        salt=wire_key_of(material).encode())
    if action.timeout:
        msg.timeout.CopyFrom(duration_pb2.Duration(seconds=math.ceil(action.timeout)))
    action_bytes = msg.SerializeToString(deterministic=True)
    return Wire(msg, digest_of(action_bytes), action_bytes, command, command_bytes, uses_tool_log)
