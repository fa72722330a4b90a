"""What the rule set's build workers share: `envbuild` and `stubbuild` run as `run` actions, in a
subprocess of their own (`python -m tpbuild_triton.<worker> --spec spec.json --out ... --log ...`).

Both drive external tools whose output is long and whose failures must name a log; both look for a
Python on the machine and ask it about itself; both must keep the caller's active env and user-level
config out of the tools they start. Those pieces live here so the two workers stay about their tool.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tpbuild.plugin import BuildError, TpbuildError, UserError

LOG_TAIL_LINES = 30

# The active env of the caller: a tool would otherwise act on it or read its config.
_DROPPED = {"VIRTUAL_ENV", "__PYVENV_LAUNCHER__", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_SHLVL",
            "CONDA_PROMPT_MODIFIER", "HOME", "XDG_CONFIG_HOME"}


def scrubbed_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in _DROPPED and not k.startswith("PIP_") and not k.startswith("PYTHON")}


def which_all(name: str) -> list[str]:
    """Every executable `name` on PATH, in order: the first may be a pyenv shim that refuses to run."""
    found: list[str] = []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        p = os.path.abspath(os.path.join(d or ".", name))
        if p not in found and os.path.isfile(p) and os.access(p, os.X_OK):
            found.append(p)
    return found


def python_candidates(python: str, interpreter: str | None, missing_hint: str) -> list[str]:
    """The executables to try for a Python `python`: `interpreter` (a path or a command on PATH) if
    given, else every `python3.X` on PATH. An `interpreter` that is not there is exit 2."""
    if not interpreter:
        return which_all(f"python{python}")
    if os.sep in interpreter:
        if not os.path.isabs(interpreter):
            raise UserError(f"interpreter {interpreter!r} must be an absolute path or a command name found on PATH")
        found = [interpreter] if os.path.isfile(interpreter) else []
    else:
        found = which_all(interpreter)
    if not found:
        raise UserError(f"interpreter {interpreter!r} not found: give the path of a Python {python} executable"
                        + (f" ({missing_hint})" if missing_hint else ""))
    return found


def probe(path: str, code: str) -> dict | str:
    """What `path -c code` printed as JSON, or why it could not tell (with stderr's last line)."""
    try:
        r = subprocess.run([path, "-c", code], capture_output=True, text=True, timeout=60,
                           env=scrubbed_env(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"does not run ({e})"
    if r.returncode != 0:
        return f"does not run: {(r.stderr.strip().splitlines() or ['no output'])[-1]}"
    return json.loads(r.stdout)


def minor(version: str) -> str:
    """'3.10.13' -> '3.10'."""
    return ".".join(version.split(".")[:2])


class StepLog:
    """Every tool's output goes to one log file, streamed as it runs; failures name it. `== step` lines
    mark the steps, which the engine shows as live progress."""

    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab", buffering=0)

    def close(self) -> None:
        self._file.close()

    def note(self, text: str) -> None:
        self._file.write(f"== {text}\n".encode())

    def run(self, step: str, argv: list[str], *, env: dict[str, str], cwd: Path, check: bool = True) -> int:
        self.note(f"{step}: {' '.join(argv)}")
        try:
            rc = subprocess.run(argv, stdout=self._file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd).returncode
        except OSError as e:
            raise BuildError(f"{step} could not start {argv[0]}: {e}; log: {self.path}") from None
        self.note(f"{step}: exit {rc}")
        if check and rc != 0:
            raise BuildError(f"{step} failed (exit {rc}); full log: {self.path}", detail=self.tail())
        return rc

    def text(self) -> str:
        with open(self.path, "rb") as f:
            return f.read().decode(errors="replace")

    def tail(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 64 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])


def main(argv: list[str] | None, *, prog: str, description: str, out_help: str,
         load_spec: Callable[[Path], object], build: Callable[..., None]) -> int:
    """The command line every worker has; errors are rendered here, once, for the action's log."""
    ap = argparse.ArgumentParser(prog=f"python -m tpbuild_triton.{prog}", description=description)
    ap.add_argument("--spec", required=True, type=Path, help="the spec as JSON")
    ap.add_argument("--out", required=True, type=Path, help=out_help)
    ap.add_argument("--log", required=True, type=Path, help="where the tools' output goes")
    args = ap.parse_args(argv)
    try:
        build(load_spec(args.spec), args.out, args.log, Path.cwd())
    except TpbuildError as e:
        print(e.render(), file=sys.stderr)
        return e.exit_code
    return 0
