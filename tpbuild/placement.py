"""The placement lane: a helper process that assembles output trees in tpbuild-out while the build runs.

A clean build of a thousand models places thousands of files (`outputs.assemble`: a temp directory,
a hardlink and an `lstat` per file, a rename per tree). That work is system calls driven by Python,
so on a second thread it would only contend for the GIL with the scheduler's in-process actions
(each call releases the GIL and must wait to get it back); in a process of its own it runs on
another core. With `-j N` above 1 the build hands each tree the state has no record of (a first
build, or one after tpbuild-out was deleted) to this lane as soon as its target's actions are done,
and records what the lane placed once the actions are over; anything the lane did not place (never
sent, a failure there, the lane gone) is placed by the ordinary path, which then reports errors as
it always does. At `-j 1` there is no lane.

The lane runs `outputs.assemble` itself, so a tree is assembled exactly as the build would: aside in
the lane's own locked temp directory, renamed into place whole. It holds the workspace lock with its
parent (the descriptor is passed on), so a build killed with its lane still at work makes the next
build wait for the lane rather than race it. Messages are `marshal`led plain values over pipes: the
build sends (workspace root, cache root), then batches of (rel, entries as `to_json`), each answered
by one byte, a credit for the next batch (so the lane is never far behind, and what it was not sent
is the build's to place); at the end of its input the lane answers once with (rel, {path: (kind,
digest, stat)}, {directory: stat}) per tree placed, or (rel, None, None) for one it could not place.
"""

from __future__ import annotations

import marshal
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .action import Entry, OutputEntry, tree_digest
from .cas import Cas
from . import outputs

BATCH = 16  # trees per message
AHEAD = 2  # batches the lane may have queued
CREDIT = b"+"  # the lane's word that it finished a batch; its answer, a marshalled list, starts otherwise
WORTH = 4 * BATCH  # trees a build must have to start a lane: fewer are placed sooner than it starts


class Lane:
    """The build's side of the lane. `place` may be called from any thread."""

    def __init__(self, root: Path, cache_root: Path, lock_fd: int):
        import subprocess  # here: only a build with many trees to place starts a lane

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen([sys.executable, "-c", "from tpbuild.placement import serve; serve()"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      pass_fds=(lock_fd,), env=env)
        self._answer = self._proc.stdout.fileno()
        os.set_blocking(self._answer, False)  # read for credits while the build runs, never waited on
        self._lock = threading.Lock()
        self._results: dict[str, tuple[dict, dict]] | None = None
        self._queued: list = []
        self._credits = AHEAD
        self._read: list[bytes] = []
        self.sent: set[str] = set()  # the trees the lane was given
        self.placed = 0  # trees the build took as the lane placed them
        self._send((str(root), str(cache_root)))

    def _send(self, value) -> bool:
        try:
            marshal.dump(value, self._proc.stdin)
            self._proc.stdin.flush()
            return True
        except (BrokenPipeError, ValueError):  # the lane is gone (or closed): the ordinary path places it
            return False

    def place(self, rel: str, entries: tuple[OutputEntry, ...]) -> None:
        """Queue a tree. The lane is sent a batch of `BATCH` trees whenever it has a credit: it starts
        with `AHEAD` and earns one per batch done, so it is never more than `AHEAD` batches behind.
        What was never sent (the trees queued when the lane was busy, and the last ones, among them a
        repository over every model, the largest tree, which finishes last) stays with the build,
        which places it itself (`materialize`) while the lane finishes its last batches."""
        with self._lock:
            if self._results is not None:
                return
            self._queued.append((rel, [e.to_json() for e in entries]))
            self._credits += self._earned()
            while self._credits and len(self._queued) >= BATCH:
                batch, self._queued = self._queued[:BATCH], self._queued[BATCH:]
                if not self._send(batch):
                    break
                self.sent.update(rel for rel, _ in batch)
                self._credits -= 1

    def _earned(self) -> int:
        try:
            data = os.read(self._answer, 1 << 16)
        except BlockingIOError:
            return 0
        self._read.append(data)
        return data.count(CREDIT)

    def close(self) -> dict[str, tuple[dict, dict]]:
        """Ends the lane's input and waits for what it placed: rel -> (placed files, directory stats)."""
        with self._lock:
            if self._results is not None:
                return self._results
            self._results = {}
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
            os.set_blocking(self._answer, True)
            self._read.append(self._proc.stdout.read())
            self._proc.stdout.close()
            self._proc.wait()
            # The answer (at 10,000 models, every tree's files and directories) is decoded from one copy
            # of its bytes, past the credits, which are dropped before its records are taken as they
            # are (kinds as their letters, as the state's records read from its file hold them): the
            # bytes, a stripped copy, the decoded list and a converted copy of it were held at once,
            # 26 MB at the peak of a clean build.
            data = self._read[0] if len(self._read) == 1 else b"".join(self._read)
            self._read = []
            start = 0
            while data[start:start + 1] == CREDIT:  # a credit per batch: hundreds at most
                start += 1
            try:
                answer = marshal.loads(memoryview(data)[start:])
            except (EOFError, ValueError, TypeError):  # it died: nothing it did is recorded
                answer = []
            del data
            for rel, placed, dirs in answer:
                if placed is not None:
                    self._results[rel] = (placed, dirs)
            return self._results

    def materialize(self, state: outputs.BuildState, root: Path, rel: str, entries: Sequence[OutputEntry],
                    cas: Cas, proven=None) -> tuple[bool, int]:
        """`outputs.materialize`, taking what the lane placed at `rel` when it placed exactly `entries`
        (a flat tree: a composed one is never sent, see `build._lane`)."""
        done = self.close().pop(rel, None) if rel in self.sent else None
        if done is None:
            return outputs.materialize(state, root, rel, entries, cas, proven)
        placed, dirs = done
        state.place(rel, (tree_digest(entries), placed, dirs))
        self.placed += 1
        return True, 0


def serve() -> None:
    """The lane's process: place every tree sent, answer when the input ends."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    root, cache_root = marshal.load(inp)
    root = Path(root)
    cas = Cas(Path(cache_root))
    answer = []
    while True:
        try:
            batch = marshal.load(inp)
        except EOFError:
            break
        for rel, raw in batch:
            entries = tuple(Entry.from_json(e) for e in raw)
            try:
                placed, dirs = outputs.assemble(root, rel, entries, cas)
            except OSError:
                answer.append((rel, None, None))
                continue
            answer.append((rel, {p: (k.value, d, s) for p, (k, d, s) in placed.items()}, dirs))
        try:
            out.write(CREDIT)
            out.flush()
        except BrokenPipeError:
            return
    try:
        marshal.dump(answer, out)
        out.flush()
    except BrokenPipeError:  # the build was killed: what was placed is found unrecorded and placed again
        pass
