"""A build's stats taken by a helper process on another core while the build's Python does the rest,
in the order the ordinary path (no valid no-op stamp) asks for them: at 10,000 models, package
discovery's 20,000 directories (`discovery._unchanged`), the 20,000 sources the analysis memo watches
(each `BUILD.toml` and `model.py`: `Observed.observe`), the 20,000 blobs the settle memo names
(`cas.Cas.whole_at`, through `Observed.sigs`), and the placed trees' 40,000 directories
(`build._Linked.vouch`): a no-op build's 100,000 stat calls, which a thread could not overlap with the
build's Python (each stat gives up the GIL and waits for it back) but a process on another core can.
Discovery asks first, 60 ms into the build, when the helper has just begun: so the helper stats its
directories from the last while discovery stats them from the first, in parts (`PART`) that discovery
takes as it goes (`Observed.dir_sigs`), until it reaches what the helper did and says so (`enough`).

The helper is a Python of its own (spawned, not forked: a fork of the build costs it in copied page
tables and pages written after it), started as soon as the build is known to take the ordinary path
with nothing handed over by a stamp's check (`Session.run_build`, before analysis). It reads the names
from the memos (the packages memo's directories and the build state's placed trees' directories,
found by a search of their text; the analysis memo's watched files; the settle memo's blobs), and
stats exactly the strings the build will ask about (`os.stat` of discovery's directories, the sources
and blobs, as `layout.sig`/`sigs`; `os.lstat` of the placed directories).
What it names decides nothing: a path the build asks about is answered with the helper's stat of that
very string, or stat'ed here when the helper did not take it; any failure (no helper, one that died or
is late) is every path stat'ed here, as without it. Each kind is a section of its own (discovery's
directories a section a part), which the build takes when it first needs it if the helper has written
it whole by then (it is told so through a pipe, after the section is written): the helper is waited
for only by the placed memo's check (`placedmemo.py`) for the placed directories, and only once it has
written the blobs (`Prefetch._wait`, at most `WAIT`): what it has left then is those directories, which
the build would otherwise stat itself while the helper stats them too.

Why a stat taken earlier decides as the later one would:
- Discovery's directories: as sources (below), a stat taken during this build, before discovery would
  have taken it. Discovery compares each directory's stat with the packages memo's record of it
  (recorded only out of the racy window of its listing), and asks about each once, before anything
  else asks about a directory (`_unchanged`): the helper's stat of a path answers that question only,
  and only when discovery had not stat'ed the path itself (it goes from the first, taking the parts
  written by then for what it has not reached). A directory changed after the helper's stat is one
  changed right after discovery: the stamp records the stat discovery used (`walked`), and the next
  build finds it moved; one changed during the check and seen by some stat, the helper's or the
  build's, makes discovery walk the tree again, every directory stat'ed anew. Those it did not ask
  about (the helper's last part, taken after it had reached them) are dropped.
- Sources: the user may edit them at any time, and analysis reads them without the workspace lock; a
  stat the helper took is one taken during this build, after its start (after `Observed`'s horizon
  was fixed), as the one `Observed.observe` would take is. It is handed over once, to the first
  question about that path, and only if no stat of the path was taken here before (one taken here is
  later, and wins); the racy window applies to it as to that stat (`Observed.observe`: the same tuple,
  the same horizon, before it answers the stat memo). An edit after the helper's stat is one this
  build did not see, as an edit right after analysis: the memos record the stat it used, and the next
  build sees the file moved.
- Blobs and placed directories are stat'ed only once the build holds the workspace lock (`go`, sent
  from `build.run`): the lock keeps other tpbuild builds of this workspace out (builds of other
  workspaces sharing the store never were: a blob is named by its content and published whole by a
  rename, and one evicted after its stat is one evicted after the check, as eviction.py allows for).
  Until the check of tpbuild-out nothing writes there: the actions run in the store's temp
  directories; the placement lane runs only when no tree is recorded, when nothing is prefetched;
  `prune`, which does write before it, drops the helper's stats (`close`) when it removed anything.
  A blob the helper found absent is not handed over (the build may store it again, as `Observed` says
  of a stamp's check); a blob is asked about before any action runs, and what is left unasked is
  dropped when the actions are done (`Observed.forget`).
- Each placed directory's stat answers the check's first question about its path only (`lstat_sigs`
  takes it out), and only the check's: placing, which follows, writes into the directories it asks
  about again (`build._materialize` drops the rest once the check is done). The racy window is applied
  to these stats as to any (`_Linked.vouch`, the same tuples); a directory changed after the helper's
  stat is one changed right after the check: the no-op stamp records the stats placement recorded, so
  the next build's check finds it moved and takes the ordinary path.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from itertools import chain, repeat
from stat import S_ISDIR

from .layout import STATE_DIR, sig, stat_sig, unhexed_sigs

# json and re are imported where used, and pathlib (which imports re) not at all: the helper starts by
# stat'ing discovery's directories, which needs none of them, and each ms of its start is about half a
# ms more of those stats the build takes itself (its imports: 14-20 -> 3.7 ms on a loaded machine).
TYPE_CHECKING = False  # as `typing` has it
if TYPE_CHECKING:
    from pathlib import Path

# What a build must have for the helper: its analysis memo this large (bytes: 4,000 models' is 5.6 MB)
# for it to start before analysis, or else this many placed trees' records to start it at the lock (for
# those alone); below, the helper was not done in time, or not always (3,000 models), and its start cost
# the build (1,000).
WORTH_MEMO = 5_000_000
WORTH = 8_000
DIRS, SOURCES, BLOBS, PLACED = range(4)  # the sections, in the order the helper writes them
# Discovery's directories the helper writes as one section (DIRS), 2.5 ms of its stats: a poll and a
# read for the build, which takes those written by each of its slices (`discovery._SLICE`); at most one
# of them stat'ed again by the helper where the two meet.
PART = 1024
_NONE = object()  # a path the helper did not stat
WAIT = 0.5  # seconds the placed memo's check waits for the helper's placed directories at most (`Prefetch._wait`)
# A section: how many paths, the length of their text; their text (UTF-8, NUL between them); a byte
# each (`_TAKEN`, `_ABSENT`, or neither: a stat that is no 64-bit integers, left to the build); four
# 64-bit integers each (`stat_sig`, zeros when not taken), in this machine's order. Through the pipe,
# after each section is written: its kind and the file's length with it.
_HEADER = struct.Struct("=qq")
_TOLD = struct.Struct("=qq")
_TAKEN, _ABSENT = 1, 0
_ZEROS = (0, 0, 0, 0)
_GO = b"g"  # the build's word to stat what needs the workspace lock
_ENOUGH = b"d"  # the build's word that discovery is done with its directories
_WATCHED = '\t[[['  # the start of an analysis memo's record: [[paths, their sigs as hex, others], ...] (`analysiscache`)
# The helper's command: an isolated Python (no site, no environment, no bytecode written) importing this module.
_HELPER = "import sys; sys.path.insert(0, sys.argv[1]); from tpbuild.prefetch import main; main(*sys.argv[2:])"


class Prefetch:
    """A helper's stats (`start`), a section at a time."""

    def __init__(self, proc, out):
        self._proc = proc  # a subprocess.Popen, until it ended or was stopped
        self._out = out  # the file it writes, nameless (a build killed leaves none)
        self._spans: dict[int, tuple[int, int]] = {}  # where each section written whole is in it
        self._parts: list[tuple[int, int]] = []  # where each part of DIRS written whole is, until read
        self._dirs: dict[str, tuple] = {}  # DIRS: path -> the helper's stat of it, until asked or enough
        self._end = 0  # where the last section written ends
        self._taken: set[int] = set()  # sections handed over, or given up
        self.handed = dict.fromkeys(range(PLACED + 1), 0)  # stats handed over, by section (for tests)
        self._placed: dict[str, tuple | None] | None = None  # PLACED: path -> its lstat, None: absent; once read

    def go(self) -> None:
        """The build holds the workspace lock: the helper may stat the blobs and the placed directories."""
        self._say(_GO, last=True)

    def dir_sigs(self, fulls: list[str]) -> list[tuple | None]:
        """The helper's stat of each of discovery's directories `fulls` (DIRS) in the parts it wrote by
        now, each handed over once; None for a path it has not stat'ed (or found absent)."""
        self._listen()
        dirs = self._dirs
        for start, end in self._parts:
            try:
                dirs.update(_found(*_unpacked(os.pread(self._out.fileno(), end - start, start))))
            except (OSError, ValueError):  # not whole after all: its paths stat'ed by the build
                continue
        self._parts = []
        if not dirs:
            return [None] * len(fulls)
        found = list(map(dirs.pop, fulls, repeat(None)))
        self.handed[DIRS] += len(found) - found.count(None)
        return found

    def enough(self) -> None:
        """Discovery is done with its directories: the helper goes on to the sources, the stats of those
        it was not asked about dropped."""
        self._dirs = {}
        self._parts = []
        self._say(_ENOUGH, last=False)

    def _say(self, word: bytes, last: bool) -> None:
        """`word` to the helper, now (its stdin is buffered), its stdin closed after the `last` one."""
        try:
            stdin = self._proc.stdin
            stdin.write(word)
            if last:
                stdin.close()
            else:
                stdin.flush()
        except (AttributeError, OSError, ValueError):  # a helper gone: nothing more from it
            pass

    def stats(self, k: int) -> dict[str, tuple] | None:
        """The stats of the paths of section `k` the helper found there, once; None while it is still to
        come, {} when it never will (the helper is gone, or it was handed over or given up)."""
        got = self._section(k)
        if not got:
            return got
        got = _found(*got)
        self.handed[k] += len(got)
        return got

    def _section(self, k: int) -> tuple | dict | None:
        """Section `k` as the helper wrote it (paths, stats, kinds), once (see `stats`)."""
        if k in self._taken:
            return {}
        if k not in self._spans:
            self._listen()
            if k not in self._spans:
                return None if self._proc is not None else {}
        self._taken.add(k)
        try:
            start, end = self._spans[k]
            return _unpacked(os.pread(self._out.fileno(), end - start, start))
        except (OSError, ValueError):  # not whole after all: every path stat'ed here
            return {}

    def _wait(self, k: int, after: int) -> None:
        """Until the helper has written section `k`, if it has written section `after` by now; at most
        `WAIT` seconds, and not once it ended."""
        import select
        import time

        self._listen()
        until = time.monotonic() + WAIT
        while after in self._spans and k not in self._spans and self._proc is not None and time.monotonic() < until:
            select.select([self._proc.stdout], [], [], max(0.0, until - time.monotonic()))
            self._listen()

    def _listen(self) -> None:
        """What the helper said of the sections it wrote since, never waiting for it."""
        try:
            told = os.read(self._proc.stdout.fileno(), 4096) if self._proc is not None else None
        except BlockingIOError:
            return
        except OSError:
            told = b""
        if told:
            for k, end in _TOLD.iter_unpack(told):
                if k == DIRS:
                    self._parts.append((self._end, end))
                else:
                    self._spans[k] = (self._end, end)
                self._end = end
        elif told is not None:  # it ended: what it wrote stays readable
            self._stop()

    def lstat_sigs(self, base: str, paths: list[str], wait: bool = False) -> list[tuple]:
        """`stat_sig(os.lstat(base + path))` of each path (`base`: the workspace's root, with its
        trailing slash), raising OSError when one is not there, as stat'ing them would; from the helper
        where it stat'ed the path, each path's stat handed over once. `wait`: for the placed directories
        when the helper has written the blobs by now (it is stat'ing those directories: what it has left
        is no more than stat'ing them all here, `placedmemo.PlacedMemo`), up to `WAIT` seconds."""
        if self._placed is None:
            if wait:
                self._wait(PLACED, BLOBS)
            got = self._section(PLACED)
            if not got:
                self.close()  # not done: stat'ing here is no slower than waiting
            self._placed = dict(zip(got[0], _or_none(*got))) if got else {}
        stats = self._placed
        if not stats:
            return lstat_sigs(base, paths)
        found = list(map(stats.pop, paths, repeat(_NONE)))
        if None in found:
            raise FileNotFoundError(2, "No such file or directory", base + paths[found.index(None)])
        left = found.count(_NONE)
        self.handed[PLACED] += len(found) - left
        if left:
            found = [stat_sig(os.lstat(base + p)) if s is _NONE else s for p, s in zip(paths, found)]
        return found

    def close(self) -> None:
        """Drop the helper's stats, unread ones too (stopping it if it still runs): from here the build
        writes into tpbuild-out, and a stat is taken when asked."""
        self._placed = {}
        self._dirs = {}
        self._parts = []
        self._taken.update(range(PLACED + 1))
        self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except OSError:  # the helper stopped before reading its word
                    pass

    def __del__(self):
        self.close()
        self._out.close()


def lstat_sigs(base: str, paths: list[str]) -> list[tuple]:
    """`Prefetch.lstat_sigs` without a helper: each path lstat'ed here, in C (OSError for one not there)."""
    return list(map(stat_sig, map(os.lstat, map(base.__add__, paths))))


def _found(paths: list[str], stats: list, kinds: bytes | None) -> dict[str, tuple]:
    """A section's paths the helper found there, with their stats."""
    if kinds is None:  # every one taken: no loop
        return dict(zip(paths, stats))
    return {p: s for p, s, kind in zip(paths, stats, kinds) if kind == _TAKEN}


def _or_none(paths: list[str], stats: list, kinds: bytes | None) -> list:
    """A `section`'s stats, None for a path it found absent and `_NONE` for one it left to the build."""
    if kinds is None:
        return stats
    return [s if k == _TAKEN else None if k == _ABSENT else _NONE for s, k in zip(stats, kinds)]


def large(memo: Path) -> bool:
    """Whether the analysis memo in `memo` (`workspace.memo_dir`) is of a build large enough for a
    helper (`WORTH_MEMO`)."""
    try:
        return os.stat(memo / "analysis").st_size >= WORTH_MEMO
    except OSError:
        return False


def ahead(root: Path, memo: Path, observed) -> Prefetch | None:
    """A helper started before analysis, its sources' and blobs' stats for `observed` (`Observed.helped`),
    when no check handed any over and the analysis memo in `memo` (`workspace.memo_dir`) is worth it;
    its temp file in that directory's (tpbuild-out may not be there yet)."""
    if observed.checked or not large(memo):
        return None
    from . import discovery

    state = root / STATE_DIR
    p = start(f"{root}/", memo / "analysis", state / "settled", state / "state", memo / "tmp", state / discovery.KIND)
    if p is not None:
        observed.helped(p, [SOURCES, BLOBS], dirs=True)
    return p


def at_lock(root: Path, early: Prefetch | None, observed, worth: bool) -> Prefetch | None:
    """Once the build holds the workspace lock: the helper (`early`, or one started now when `worth`:
    its blobs' stats for `observed`) told to stat the blobs and the placed directories; `early`
    stopped when not `worth` (a delta build, or few placed trees: then tpbuild-out was deleted, and
    the placement lane may write there)."""
    if not worth:
        if early is not None:
            early.close()
        return None
    p = early
    if p is None:
        state = root / STATE_DIR
        p = start(f"{root}/", None, state / "settled", state / "state", state / "tmp")
        if p is None:
            return None
        observed.helped(p, [BLOBS])
    p.go()
    return p


def start(base: str, analysis: Path | None, settled: Path, state: Path, tmp: Path,
          packages: Path | None = None) -> Prefetch | None:
    """A helper stat'ing (`main`) the directories the packages memo `packages` (`discovery.py`) lists
    and the files the analysis memo `analysis` watches below `base` (the workspace's root, with its
    trailing slash), then, once told to (`go`), the blobs the settle memo
    `settled` names and the directories of the placed trees the build state `state` records, writing
    into a nameless file in `tmp` (tpbuild's own temp directory: nothing of it outside tpbuild's
    directories, nor left by a kill); None where it cannot be started."""
    import subprocess  # here: a build that checks no placed tree (a delta build's) does not import it

    if not sys.executable:  # an embedded Python: no helper to start
        return None
    try:
        # a file, not a pipe: the helper writes its few megabytes and exits, not a pipe's 64 KB at a time
        # as the build reads them
        tmp.mkdir(parents=True, exist_ok=True)
        out = _nameless(tmp)
    except OSError:
        return None
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", "-c", _HELPER, os.path.dirname(os.path.dirname(__file__)),
                                 str(out.fileno()), base, str(analysis or ""), str(settled), str(state), str(packages or ""),
                                 *_headers()],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                pass_fds=(out.fileno(),))
    except OSError:
        out.close()
        return None
    os.set_blocking(proc.stdout.fileno(), False)
    return Prefetch(proc, out)


def _nameless(tmp: Path):
    """A new file in the directory `tmp` without a name there: by O_TMPFILE, which
    `tempfile.TemporaryFile` tries first, taken here where there is one (tempfile imports shutil, bz2,
    lzma and random, which no other part of such a build does: 3 ms before the helper starts)."""
    try:
        return open(os.open(tmp, os.O_TMPFILE | os.O_RDWR, 0o600), "rb", buffering=0)
    except (AttributeError, OSError):  # not Linux, or a file system without it
        import tempfile

        return tempfile.TemporaryFile(dir=tmp)


def _headers() -> list[str]:
    """The first line of each memo the helper reads (the analysis memo, the settle memo, the build state,
    the packages memo): their kinds and versions, which the helper, parsing them by hand, checks before
    it reads on: a memo of another format is one it finds nothing in, not one it misreads. Named by their
    modules, which the build has imported by now, and the helper never does (their graph of modules
    would delay its start)."""
    from . import analysiscache, delta, discovery, outputs
    from .memo import header

    return [header(m.KIND, m.VERSION).decode() for m in (analysiscache, delta, outputs, discovery)]


def main(out: str, base: str, analysis: str, settled: str, state: str, packages: str, *headers: str) -> None:
    """The helper: the sections (`_HEADER`) to the file `out` (a descriptor), each one's kind and end to
    stdout once it is written. Discovery's directories until stdin says `_ENOUGH`, from the last; the
    blobs and the placed directories only once it says `_GO` (see the module's docstring), their names
    read before. `headers`: the memos' first lines (`_headers`)."""
    out = os.fdopen(int(out), "wb")
    told = sys.stdout.buffer
    words = _Words()
    analysis_head, settled_head, state_head, packages_head = headers
    if packages:
        paths = _package_dirs(packages, packages_head, base)
        for end in range(len(paths), 0, -PART):
            if words.said(_ENOUGH) or words.said(_GO) or words.ended:  # past discovery (or one that never ran)
                break
            _section(out, told, paths[max(0, end - PART):end], "", True, DIRS)
    if analysis:
        _section(out, told, _watched(analysis, analysis_head, base), "", True, SOURCES)
    blobs = _blobs(settled, settled_head)
    # the directories' names read while the build analyses, unless it holds the lock already: the blobs first then
    dirs = _placed(state, state_head) if not (words.said(_GO) or words.ended) else None
    if not words.said(_GO, wait=True):
        return
    _section(out, told, blobs, "", True, BLOBS)
    _section(out, told, _placed(state, state_head) if dirs is None else dirs, base, False, PLACED)


class _Words:
    """What the build said on the helper's stdin (`_ENOUGH`, then `_GO` and its end)."""

    def __init__(self):
        self.heard = b""
        self.ended = False  # the build closed it: after `_GO`, or gone

    def said(self, word: bytes, wait: bool = False) -> bool:
        """Whether the build said `word` by now (or, if `wait`, before its end)."""
        while word not in self.heard and not self.ended:
            os.set_blocking(0, wait)
            try:
                got = os.read(0, 64)
            except BlockingIOError:
                return False
            except OSError:
                got = b""
            self.heard += got
            self.ended = not got
        return word in self.heard


def _text(memo: str, head: str) -> str:
    """The text of the memo at `memo`, "" when it is not there or its first line is not `head`."""
    try:
        with open(memo, encoding="utf-8") as f:
            text = f.read()
    except (OSError, ValueError):
        return ""
    return text if text.startswith(head) else ""


def _package_dirs(packages: str, head: str, base: str) -> list[str]:
    """The directories the packages memo lists, each as discovery asks about it (`base + dir`, the root
    without its slash), found by a search of its text (`"dirs":["", ...]`): none when a name holds an
    escape, or when its first line is not `head`."""
    text = _text(packages, head)
    at = text.find('"dirs":[""')
    end = text.find('"]', at + 9)
    if at == -1 or end == -1 or "\\" in text[at:end]:
        return []
    paths = list(map(base.__add__, text[at + 9:end].split('","')))
    paths[0] = base[:-1]
    return paths


def _watched(analysis: str, head: str, base: str) -> list[str]:
    """The files (not directories: discovery's stats answer those) the analysis memo's records watch,
    each as the memo checks it (`base + path`); none from a memo whose first line is not `head`."""
    import json

    paths: list[str] = []
    decode = json.JSONDecoder().raw_decode
    try:
        with open(analysis, encoding="utf-8") as f:
            if f.readline() != head:
                return []
            for line in f:
                at = line.find(_WATCHED)
                if at != -1:
                    try:
                        watched, text, _ = decode(line, at + 2)[0]
                        modes = [s[3] for s in unhexed_sigs(text)]
                        if len(modes) == len(watched):
                            paths += (base + p for p, m in zip(watched, modes) if not S_ISDIR(m))
                    except (ValueError, TypeError, AttributeError):  # not a record as `analysiscache` writes it
                        continue
    except (OSError, ValueError):
        pass
    return list(dict.fromkeys(paths))


def _blobs(settled: str, head: str) -> list[str]:
    """Where each blob the settle memo names is (`cas.Cas.paths_of`, `delta.Premise`'s format); none when
    its first line is not `head`."""
    import json

    try:
        with open(settled, encoding="utf-8") as f:
            if f.readline() != head:
                return []
            value = json.loads(f.read())
        root, names = value[4], value[3]
        return list(map(f"{root}/".__add__, names)) if root.__class__ is str and names.__class__ is list and \
            {*map(type, names)} <= {str} else []
    except (OSError, ValueError, TypeError, IndexError, KeyError):
        return []


def _placed(state: str, head: str) -> list[str]:
    """The directories of each placed tree's record in the build state (below the workspace's root),
    found by a search of its text (a third less than decoding each record's key and directories): a
    record whose key or directories' names hold an escape is left to the build; none from a state
    whose first line is not `head`."""
    import re

    # A placed tree's line in the build state's journal (`outputs.BuildState`, `outputs._Shape`): its
    # key, then its digest, files and, last, its directories.
    record = re.compile(r'^"o:([^"\\\n]*)"\t[^\n]*\},(\{[^{}\n]*\})\]$', re.M)
    name = re.compile(r'"([^"]*)":\[')
    text = _text(state, head)
    paths: list[str] = []
    for m in record.finditer(text):
        if "\\" not in m.group(2):
            at = m.group(1) + "/"
            paths += map(at.__add__, name.findall(m.group(2)))
    return paths


def _section(out, told, paths: list[str], base: str, follow: bool, k: int) -> None:
    """The stats of `base + path` for each of `paths` (`os.stat` if `follow`, else `os.lstat`), as a
    section of `out` (of kind `k`); its kind and end then to `told`."""
    text = "\0".join(paths).encode("utf-8", "surrogatepass")
    take = os.stat if follow else os.lstat
    try:
        stats = list(map(stat_sig, map(take, map(base.__add__, paths))))
        flat, kinds = struct.pack(f"={4 * len(stats)}q", *chain.from_iterable(stats)), bytes([_TAKEN]) * len(stats)
    except (OSError, struct.error):  # one not there, or not 64-bit integers: a path at a time
        stats = list(map(sig, map(base.__add__, paths), repeat(follow)))
        kinds = bytes(_TAKEN if s is not None and _fits(s) else _ABSENT if s is None else 2 for s in stats)
        flat = struct.pack(f"={4 * len(stats)}q", *chain.from_iterable(s if k == _TAKEN else _ZEROS
                                                                      for s, k in zip(stats, kinds)))
    out.write(_HEADER.pack(len(paths), len(text)))
    out.writelines((text, kinds, flat))
    out.flush()
    told.write(_TOLD.pack(k, out.tell()))
    told.flush()


def _unpacked(data: bytes) -> tuple[list[str], list, bytes | None]:
    """A section (`_section`) as its paths, their stats and each one's kind (None when every one is
    `_TAKEN`: then `_found` and `_or_none` hand them over without a loop)."""
    n, size = _HEADER.unpack_from(data)
    at = _HEADER.size
    paths = data[at:at + size].decode("utf-8", "surrogatepass").split("\0") if n else []
    kinds = data[at + size:at + size + n]
    flat = array("q", data[at + size + n:])
    if len(paths) != n or len(kinds) != n or len(flat) != 4 * n:
        raise ValueError("the helper's stats are not whole")
    it = iter(flat)
    return paths, list(zip(it, it, it, it)), None if kinds.count(_TAKEN) == n else kinds


def _fits(s: tuple) -> bool:
    return all(-(1 << 63) <= v < 1 << 63 for v in s)
