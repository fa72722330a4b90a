"""Runs one action whose inputs are resolved, and stores what it produced in the blob store.

The executor knows actions and blobs, nothing of rules, keys or caching: the scheduler resolves
inputs and decides whether to run at all. `write` and `tree` actions run in-process (no process per
file: that is where a clean build of a thousand models spends its time in other tools); `run`
actions get a fresh scratch directory holding exactly their declared inputs, and only their declared
outputs are kept. Inputs are copies (or reflinks), never hardlinks of blobs: a command that writes
to its input (as root, read-only modes do not stop it) must not write into the blob store. The
environment is `action.RUN_ENV` and the caller's PATH, both in the key; a `{python}` command also
gets this process's import path, so a worker module runs exactly the code its key hashed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import atomic
from .action import (OUT, PYTHON, RUN_ENV, SCRATCH, TOOL_LOG, USER_CACHE, Action, Artifact, Entry, OutputEntry,
                     RunAction, Source, Symlink, Tree, TreeAction, WriteAction, run_path)
from .cas import Cas
from .errors import BuildError

class Resolved:
    """An input with what the key needs (`digest`) and what execution needs (`entries` or `path`). (A
    plain class, not a dataclass: its generated methods were compiled at every start, and nothing
    compares these.)"""

    __slots__ = ("dest", "input", "digest", "entries", "full_path", "executable")

    def __init__(self, dest: str, input: Source | Artifact, digest: str, entries: Sequence[OutputEntry] = (),
                 full_path: str = "", executable: bool = False):
        self.dest = dest
        self.input = input
        self.digest = digest
        # Artifact inputs: the file, or the whole tree (a `Tree` read only as far as the action needs it).
        self.entries = entries
        self.full_path = full_path  # source inputs: where to read it
        self.executable = executable


class Executor:
    def __init__(self, root: Path, cas: Cas, logs_dir: Path):
        self.root = root
        self.cas = cas
        self.logs_dir = logs_dir

    def execute(self, action: Action, inputs: list[Resolved]) -> tuple[OutputEntry, ...]:
        match action:
            case WriteAction():
                return self._write(action)
            case TreeAction():
                return self._tree(action, inputs)
            case RunAction():
                return self._run(action, inputs)
        raise TypeError(f"not an action variant: {type(action).__name__}")

    def _write(self, action: WriteAction) -> tuple[OutputEntry, ...]:
        d = self.cas.put_bytes(action.content, action.executable)
        return (Entry.file(action.out, d, len(action.content), action.executable),)

    def _tree(self, action: TreeAction, inputs: list[Resolved]) -> tuple[OutputEntry, ...] | Tree:
        """Its own entries, and, as a composed `Tree`, the whole upstream trees it takes as parts: a
        repository of a thousand model directories copies no entry of theirs."""
        parts = action.parts_of((r.dest, r.digest, r.entries) for r in inputs if isinstance(r.input, Artifact))
        at = {p.prefix for p in parts}
        out: dict[str, OutputEntry] = {}

        def add(e: OutputEntry) -> None:
            prev = out.get(e.path)
            if prev is not None and prev != e:
                raise BuildError(f"{action.owner}: two inputs want the same output path {e.path!r}; "
                                 "rename one of them")
            out[e.path] = e

        for r in inputs:
            if isinstance(r.input, Source):
                d, size = self.cas.put_file(Path(r.full_path), executable=r.executable, move=False)
                add(Entry.file(r.dest, d, size, r.executable))
            elif r.input.path:
                add(r.entries[0].moved(r.dest))
            elif r.dest not in at:
                for e in r.entries:
                    add(e.moved(f"{r.dest}/{e.path}" if r.dest else e.path))
        own = tuple(out[p] for p in sorted(out))
        return Tree(own, parts) if parts else own

    def log_path(self, action: Action) -> Path:
        return log_path(self.logs_dir, action)

    def _run(self, action: RunAction, inputs: list[Resolved]) -> tuple[OutputEntry, ...]:
        scratch = self.cas.temp_path("run")
        try:
            return self._run_in(action, inputs, scratch)
        finally:
            atomic.remove(scratch)

    def _run_in(self, action: RunAction, inputs: list[Resolved], scratch: Path) -> tuple[OutputEntry, ...]:
        import shutil  # here, as subprocess: a build that runs no command (an edit of a model) needs neither

        (scratch / "tmp").mkdir(parents=True)
        (scratch / "home").mkdir()
        (scratch / OUT).mkdir()
        for r in inputs:
            if isinstance(r.input, Source):
                dest = scratch / r.dest
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(r.full_path, dest)
                if r.executable:
                    os.chmod(dest, 0o755)
            else:
                for e in r.entries:
                    rel = r.dest if r.input.path else (f"{r.dest}/{e.path}" if r.dest else e.path)
                    dest = scratch / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if isinstance(e, Symlink):
                        os.symlink(e.target, dest)
                    else:
                        self.cas.link(e.digest, e.executable, dest, share=False)
        log = self.log_path(action)
        tool_log = log.with_suffix(".tool.log")
        argv = [_expand(a).replace(TOOL_LOG, str(tool_log)) for a in action.argv]
        user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        env = {k: v.replace(SCRATCH, str(scratch)).replace(USER_CACHE, user_cache) for k, v in RUN_ENV.items()}
        env["PATH"] = run_path()
        if action.argv[:1] == (PYTHON,):
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.update({k: _expand(v) for k, v in action.env})
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as logf:
            try:
                code = run_in_group(argv, cwd=scratch, env=env, stdout=logf, timeout=action.timeout)
            except OSError as e:
                raise BuildError(f"{action.owner}: {action.mnemonic} could not start {argv[0]!r}: {e.strerror}") from None
        if code != 0:
            what = "timed out" if code is None else f"exited with code {code}"
            raise BuildError(
                f"{action.owner}: {action.mnemonic} {what}",
                detail=f"command: {' '.join(argv)}\nlog: {log}\n"
                       + (f"tool log: {tool_log}\n" if tool_log.exists() else "") + _tail(log),
            )
        return self._collect(action, scratch, log)

    def _collect(self, action: RunAction, scratch: Path, log: Path) -> tuple[OutputEntry, ...]:
        entries: list[OutputEntry] = []
        base = scratch / OUT
        for out in action.outs:
            p = base / out
            if not os.path.lexists(p):
                raise BuildError(f"{action.owner}: {action.mnemonic} did not create its declared output {out!r}",
                                 detail=f"log: {log}\n{_tail(log)}")
            if p.is_dir() and not p.is_symlink():
                for dirpath, dirnames, filenames in os.walk(p):
                    dirnames.sort()
                    for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                        f = Path(dirpath) / name
                        entries.append(self._take(f, f.relative_to(base).as_posix()))
            else:
                entries.append(self._take(p, out))
        entries.sort(key=lambda e: e.path)
        return tuple(entries)

    def _take(self, f: Path, rel: str) -> OutputEntry:
        if f.is_symlink():
            return Symlink(rel, os.readlink(f))
        exe = os.access(f, os.X_OK)
        d, size = self.cas.put_file(f, executable=exe, move=True)
        return Entry.file(rel, d, size, exe)


_running: set[int] = set()  # the process groups of the commands running now
_running_lock = threading.Lock()
# The signal forwarded, once the user interrupted: a command that registers after it (started in the
# moment between the Ctrl-C and the scheduler's stop) gets it at once rather than running on unseen.
_forwarded: int | None = None


def run_in_group(argv: list[str], *, cwd: Path, env: dict, stdout, timeout: float | None) -> int | None:
    """Runs a command in a process group of its own and returns its exit code, or None after `timeout`
    seconds. The group is what dies then: a command's children (a shell's `sleep &`, a compiler's
    jobs) would otherwise outlive it and keep writing into a scratch directory that is being removed.
    Whatever the command leaves running when it exits dies with it too. A group of its own is out of
    the terminal's reach, so `forward_signal` passes the user's Ctrl-C on to it."""
    import subprocess

    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.STDOUT, start_new_session=True)
    with _running_lock:
        _running.add(proc.pid)
        if _forwarded is not None:
            _signal_group(proc.pid, _forwarded)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with _running_lock:
            _running.discard(proc.pid)
        kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILLs the process group `proc` leads (started with start_new_session) and reaps `proc`."""
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def forward_signal(signum: int) -> None:
    """Sends `signum` to every running command's group, as the terminal would have if they were in its
    foreground group (the CLI's SIGINT handler calls this)."""
    global _forwarded
    with _running_lock:
        _forwarded = signum
        groups = list(_running)
    for pgid in groups:
        _signal_group(pgid, signum)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def log_path(logs_dir: Path, action: Action) -> Path:
    safe = action.id.lstrip("/").replace("/", "_").replace(":", "__").replace("%", ".")
    return logs_dir / f"{safe}.log"


def current_step(logs_dir: Path, action: Action) -> str:
    """The last `== step` line a tool wrote to its log (the env builder does), for live progress."""
    try:
        with open(log_path(logs_dir, action).with_suffix(".tool.log"), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            lines = [l for l in f.read().decode(errors="replace").splitlines() if l.startswith("== ")]
    except OSError:
        return ""
    return lines[-1][3:].split(": ", 1)[0] if lines else ""


def _expand(s: str) -> str:
    return s.replace(PYTHON, sys.executable)


def _tail(log: Path, lines: int = 40) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])

