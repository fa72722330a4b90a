"""What a person (or a CI log) sees while a build runs.

A terminal gets one live status line that is rewritten in place; anything else gets plain,
append-only lines, one per action that actually ran, so a CI log stays readable at a thousand targets.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Collection

from .action import Action
from .runner import Where
from .scheduler import Outcome, Settled, Status


class Console:
    def __init__(self, total: int, stream=None, step_of=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total = total
        self.done = 0
        self.running: dict[str, tuple[float, Action]] = {}
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._step_of = step_of  # callable(Action) -> the step a long action is at
        self._stop = threading.Event()
        if self.tty:
            threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        """Long actions (an env build takes minutes) get their elapsed time and current step refreshed."""
        while not self._stop.wait(0.5):
            with self._lock:
                if not self.running:
                    continue
                started, a = min(self.running.values(), key=lambda v: v[0])
                step = self._step_of(a) if self._step_of else ""
                self._status(f"{a.description} [{time.monotonic() - started:.0f}s{': ' + step if step else ''}]")

    def started(self, a: Action) -> None:
        with self._lock:
            self.running[a.id] = (time.monotonic(), a)
            if self.tty:
                self._status(a.description)

    def settled(self, outcomes: Collection[Outcome]) -> None:
        """Outcomes settled before the run: done, never started or shown (`scheduler.Hooks.settled`)."""
        with self._lock:
            self.done += len(outcomes)

    def finished(self, o: Outcome) -> None:
        with self._lock:
            self.done += 1
            if isinstance(o, Settled):
                return  # known before the run, never started: naming it would decode its action
            self.running.pop(o.action.id, None)
            if o.status is Status.EXECUTED and not self.tty:
                self._line(f"[{self.done}/{self.total}] {o.action.description} ({o.seconds:.2f}s{_where(o)})")
            elif o.status is Status.FAILED:
                self._line(f"FAILED {o.action.description}")
            elif self.tty:
                self._status(o.action.description)

    def warn(self, msg: str) -> None:
        with self._lock:
            self._line(f"warning: {msg}")

    def _status(self, what: str) -> None:
        import shutil  # only a terminal shows a status line

        width = shutil.get_terminal_size((80, 20)).columns
        elapsed = time.monotonic() - self._t0
        extra = f" (+{len(self.running) - 1} more)" if len(self.running) > 1 else ""
        text = f"[{self.done}/{self.total}] {elapsed:5.1f}s {what}{extra}"
        self.stream.write("\r\x1b[K" + text[: width - 1])
        self.stream.flush()

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _where(o: Outcome) -> str:
    by = o.executed_by
    if by is None or by.where is Where.LOCAL:
        return ""
    return f", remote{' on ' + by.worker if by.worker else ''}"
