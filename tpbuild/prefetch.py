"""The placed trees' directories lstat'ed by a helper process while the build settles and runs its
actions, for the ordinary path's check of tpbuild-out (`build._Linked.vouch`): at 10,000 models that
check lstats 40,000 directories, a quarter of a no-op build's 100,000 stat calls, which a thread could
not overlap with the build's Python (each stat gives up the GIL and waits for it back) but a process on
another core can.

The helper is a Python of its own (spawned, not forked: a fork of the build, a few hundred megabytes by
then, cost the build more in copied page tables and pages written after it than the stats saved). It
reads the build state's file for the directories of each placed tree's record (`Journal` lines, parsed
only as far as that) and lstats exactly the strings the check will (`{root}/{rel}/{directory}`). What
it names decides nothing: a path the check asks about is answered with the helper's lstat of that very
string, or stat'ed here when the helper did not take it; any failure (no helper, one that died or wrote
nothing whole) is every path stat'ed here, as without it.

Why a stat taken earlier decides as the later one would:
- Nothing a build writes into tpbuild-out comes before the check: the workspace lock keeps other
  tpbuild builds out; the actions run in the store's temp directories; the placement lane (which places
  while actions run) runs only when no tree is recorded, when nothing is prefetched. `prune`, which
  removes the trees of targets that are gone, does write before it: a build that pruned anything drops
  the helper's stats (`close`) before the check.
- Each stat answers the check's first question about its path only (`lstat_sigs` takes it out), and
  only the check's: placing, which follows, writes into the directories it asks about again
  (`build._materialize` drops the rest once the check is done).
- The racy window is applied to these stats as to any (`_Linked.vouch`, the same tuples): a directory
  changed within it is not vouched for.
- A directory the user changes after the helper's stat is one the build did not see changing, as one
  changed right after the check: the no-op stamp records the stats placement recorded, so the next
  build's check finds it moved and takes the ordinary path.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from array import array
from itertools import chain, repeat
from pathlib import Path

from .layout import sig, stat_sig

# Placed trees' records a build must have to start the helper: it is done in time, before the check asks
# (it is never waited for), from about 4,000 models on (8,000 records: each model's tree and its part of
# the repository); below, it was not, or not always (3,000), and its start cost the build (1,000).
WORTH = 8_000
_NONE = object()  # a path the helper did not stat
# What the helper writes: how many paths, the length of their text; their text (UTF-8, NUL between
# them); a byte each (`_TAKEN`, `_ABSENT`, or neither: a stat that is no 64-bit integers, left to the
# build); four 64-bit integers each (`stat_sig`, zeros when not taken), in this machine's order.
_HEADER = struct.Struct("=qq")
_TAKEN, _ABSENT = 1, 0
_ZEROS = (0, 0, 0, 0)
_OUTPUT = '"o:'  # the start of a placed tree's line in the build state's journal (`outputs.BuildState`)
# The helper's command: an isolated Python (no site, no environment, no bytecode written) importing this module.
_HELPER = "import sys; sys.path.insert(0, sys.argv[1]); from tpbuild.prefetch import main; main(*sys.argv[2:])"


class Prefetch:
    """A helper's lstats of the placed directories (`start`)."""

    def __init__(self, proc, out):
        self._proc = proc  # a subprocess.Popen, until read or stopped
        self._out = out  # the file it writes, nameless (a build killed leaves none)
        self._stats: dict[str, tuple | None] | None = None  # path -> its lstat, None: absent; once read

    def lstat_sigs(self, base: str, paths: list[str]) -> list[tuple]:
        """`stat_sig(os.lstat(base + path))` of each path (`base`: the workspace's root, with its
        trailing slash), raising OSError when one is not there, as stat'ing them would; from the helper
        where it stat'ed the path, each path's stat handed over once."""
        stats = self._read()
        if not stats:
            return lstat_sigs(base, paths)
        found = list(map(stats.pop, paths, repeat(_NONE)))
        if None in found:
            raise FileNotFoundError(2, "No such file or directory", base + paths[found.index(None)])
        if _NONE in found:
            found = [stat_sig(os.lstat(base + p)) if s is _NONE else s for p, s in zip(paths, found)]
        return found

    def _read(self) -> dict:
        """The helper's stats if it is done (never waited for: stat'ing here is no slower than waiting)."""
        if self._stats is None:
            try:
                if self._proc.poll() == 0:
                    self._out.seek(0)
                    self._stats = _unpacked(self._out.read())
            except Exception:  # a helper that wrote nothing whole: every path stat'ed here
                pass
            stats = self._stats
            self.close()
            self._stats = stats or {}
        return self._stats

    def close(self) -> None:
        """Drop the helper's stats, unread ones too (stopping it if it still runs): from here the build
        writes into tpbuild-out, and a stat is taken when asked."""
        proc, self._proc = self._proc, None
        self._stats = {}
        if proc is not None:
            if proc.returncode is None:
                proc.kill()
            proc.wait()
            self._out.close()

    def __del__(self):
        self.close()


def lstat_sigs(base: str, paths: list[str]) -> list[tuple]:
    """`Prefetch.lstat_sigs` without a helper: each path lstat'ed here, in C (OSError for one not there)."""
    return list(map(stat_sig, map(os.lstat, map(base.__add__, paths))))


def start(root: str, state: Path, tmp: Path) -> Prefetch | None:
    """A helper lstat'ing the directories the build state's file `state` records of placed trees under
    `root` (with its trailing slash), writing into a nameless file in `tmp` (tpbuild's own temp
    directory: nothing of it outside tpbuild's directories, nor left by a kill); None where it cannot
    be started."""
    import subprocess  # here: a build that checks no placed tree (a delta build's) imports neither
    import tempfile

    if not sys.executable:  # an embedded Python: no helper to start
        return None
    try:
        # a file, not a pipe: the helper writes its few megabytes and exits, not a pipe's 64 KB at a time
        # as the build reads them
        tmp.mkdir(parents=True, exist_ok=True)
        out = tempfile.TemporaryFile(dir=tmp)
    except OSError:
        return None
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", "-c", _HELPER, str(Path(__file__).parent.parent),
                                 str(state), root], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL)
    except OSError:
        out.close()
        return None
    return Prefetch(proc, out)


def main(state: str, root: str) -> None:
    """The helper: the lstats of the directories (below `root`) of each placed tree's record in
    `state`, to stdout (`_HEADER`)."""
    paths: list[str] = []
    with open(state, encoding="utf-8") as f:
        for line in f:
            if line.startswith(_OUTPUT):
                try:
                    key, text = line.rstrip("\n").split("\t", 1)
                    at = f"{json.loads(key)[len(_OUTPUT) - 1:]}/"
                    paths.extend(map(at.__add__, json.loads(text[text.rindex("},{") + 2:-1])))
                except ValueError:  # not a record as `_Shape` writes it: left to the build
                    continue
    text = "\0".join(paths).encode("utf-8", "surrogatepass")
    try:
        stats = lstat_sigs(root, paths)
        flat, kinds = struct.pack(f"={4 * len(stats)}q", *chain.from_iterable(stats)), bytes([_TAKEN]) * len(stats)
    except (OSError, struct.error):  # one not there, or not 64-bit integers: a path at a time
        stats = list(map(sig, map(root.__add__, paths), repeat(False)))
        kinds = bytes(_TAKEN if s is not None and _fits(s) else _ABSENT if s is None else 2 for s in stats)
        flat = struct.pack(f"={4 * len(stats)}q", *chain.from_iterable(s if k == _TAKEN else _ZEROS
                                                                      for s, k in zip(stats, kinds)))
    out = sys.stdout.buffer
    out.write(_HEADER.pack(len(paths), len(text)))
    out.writelines((text, kinds, flat))


def _unpacked(data: bytes) -> dict[str, tuple | None]:
    """The helper's stats (`main`) as the path of each to its stat, None for one absent; a path left
    to the build is not there."""
    n, size = _HEADER.unpack_from(data)
    at = _HEADER.size
    paths = data[at:at + size].decode("utf-8", "surrogatepass").split("\0") if n else []
    kinds = data[at + size:at + size + n]
    flat = array("q", data[at + size + n:])
    if len(paths) != n or len(kinds) != n or len(flat) != 4 * n:
        raise ValueError("the helper's stats are not whole")
    it = iter(flat)
    stats = zip(it, it, it, it)
    if kinds.count(_TAKEN) == n:  # every one taken: no loop
        return dict(zip(paths, stats))
    return {p: s if k == _TAKEN else None for p, s, k in zip(paths, stats, kinds) if k in (_TAKEN, _ABSENT)}


def _fits(s: tuple) -> bool:
    return all(-(1 << 63) <= v < 1 << 63 for v in s)
