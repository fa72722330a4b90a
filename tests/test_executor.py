"""The executor in-process, on a real blob store in a temp dir: what a run action's process leaves behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tpbuild.action import RunAction
from tpbuild.cas import Cas
from tpbuild.errors import BuildError
from tpbuild.executor import Executor
from tpbuild.label import Label


def state(pid: int) -> str:
    """A process's state letter, or "gone" ("Z": dead, its new parent has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def run(tmp_path: Path, script: str, timeout: float | None = None):
    action = RunAction(id="//p:t%Genrule", owner=Label("p", "t"), mnemonic="Genrule", rule="genrule",
                       rule_version="1", inputs=(), argv=("bash", "-c", script), outs=("o",), timeout=timeout)
    return Executor(tmp_path, Cas(tmp_path / "cas"), tmp_path / "logs").execute(action, [])


@pytest.mark.parametrize("timeout", [0.5, None])
def test_a_command_s_children_die_with_it_on_timeout_and_on_exit(tmp_path, timeout):
    """`sleep &` would outlive the shell killed at its timeout (or exiting normally) and go on running
    from a scratch directory that is gone."""
    pid_file = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pid_file}; " + ("wait" if timeout else "echo o > out/o")
    if timeout:
        with pytest.raises(BuildError, match="timed out"):
            run(tmp_path, script, timeout)
    else:
        assert [e.path for e in run(tmp_path, script)] == ["o"]
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while state(child) not in ("gone", "Z") and time.monotonic() < deadline:  # SIGKILL is delivered, not awaited
        time.sleep(0.01)
    assert state(child) in ("gone", "Z")
