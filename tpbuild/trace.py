"""A build's timeline, as Chrome trace events (`--profile FILE`), which Perfetto and chrome://tracing open.

The format is the Trace Event Format's JSON object form: `{"traceEvents": [...]}` of complete events
(`"ph": "X"`, `ts` and `dur` in microseconds) on lanes (`pid`, `tid`), plus metadata events
(`"ph": "M"`) naming the lanes. A lane is a thread: the analysis phases and the in-process actions
on the main lane, each action that waits on a process or the network on the lane of the worker that
ran it, cache lookups and remote transfers nested in the span of the action they belong to.

Tracing is off unless asked for: `NULL` is a `Trace` that records nothing, and its `span` hands out one
shared context manager, so an unprofiled build pays an attribute read and a `with` per cache call.
Times are the clock's seconds (the scheduler's `time.monotonic`, so an action's span is exactly the
`seconds` the report gives it), made relative to the moment the recording started.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from collections.abc import Callable

PID = 1
_NOTHING = nullcontext()


class Trace:
    """Records nothing: the default of every build."""

    enabled = False

    def span(self, name: str, cat: str, **args):
        """A context manager timing what runs inside it as one span on the caller's lane."""
        return _NOTHING

    def complete(self, name: str, cat: str, start: float, end: float, args: dict | None = None,
                 lane: int | None = None) -> None:
        """A span already timed (clock seconds), on the caller's lane or on `lane` (made by `lane`)."""


NULL = Trace()


class Recorder(Trace):
    """Records every span in memory; `write` saves them with the lanes named."""

    enabled = True

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.origin = clock()
        self.events: list[dict] = []
        self._lanes: dict[int, int] = {}  # thread ident -> tid
        self._names: dict[int, str] = {}  # tid -> lane name
        self._lock = threading.Lock()
        self._thread_lane()  # the thread that records (the main one) is lane 0

    def _thread_lane(self) -> int:
        tid = self._lanes.get(threading.get_ident())
        if tid is None:
            t = threading.current_thread()
            tid = self.lane("main" if t is threading.main_thread() else t.name)
            self._lanes[threading.get_ident()] = tid
        return tid

    def lane(self, name: str) -> int:
        """A new lane; threads get theirs on their first span, others (the critical path) are asked for."""
        with self._lock:
            tid = len(self._names)
            self._names[tid] = name
        return tid

    def complete(self, name: str, cat: str, start: float, end: float, args: dict | None = None,
                 lane: int | None = None) -> None:
        ev = {"name": name, "cat": cat, "ph": "X", "ts": self._us(start), "dur": round((end - start) * 1e6, 1),
              "pid": PID, "tid": self._thread_lane() if lane is None else lane, "args": args or {}}
        with self._lock:
            self.events.append(ev)

    @contextmanager
    def _span(self, name: str, cat: str, args: dict):
        t0 = self.clock()
        try:
            yield
        finally:
            self.complete(name, cat, t0, self.clock(), args)

    def span(self, name: str, cat: str, **args):
        return self._span(name, cat, args)

    def again(self, events: list[dict], lane: int, cat: str) -> None:
        """Draw recorded spans a second time on `lane` under `cat` (the critical path, on its own lane)."""
        with self._lock:
            self.events.extend({**e, "cat": cat, "tid": lane} for e in events)

    def _us(self, t: float) -> float:
        return round((t - self.origin) * 1e6, 1)

    def document(self, other: dict | None = None) -> dict:
        meta = [{"name": "process_name", "ph": "M", "pid": PID, "tid": 0, "args": {"name": "tpbuild"}}]
        meta += [{"name": "thread_name", "ph": "M", "pid": PID, "tid": tid, "args": {"name": name}}
                 for tid, name in sorted(self._names.items())]
        meta += [{"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid, "args": {"sort_index": tid}}
                 for tid in sorted(self._names)]
        events = sorted(self.events, key=lambda e: (e["ts"], -e["dur"]))
        return {"traceEvents": meta + events, "displayTimeUnit": "ms", "otherData": other or {}}

    def write(self, path: Path, other: dict | None = None) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.document(other), separators=(",", ":")) + "\n")
        os.replace(tmp, path)
