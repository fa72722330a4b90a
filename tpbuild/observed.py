"""What this build has seen of the workspace's files: the stats the no-op stamp's check took, handed
to the ordinary path, so a build after an edit stats each file once, not once for the stamp and again
for each memo that checks it (package discovery, the analysis memo, the stat memo, the blob check).

The check stats everything the last build depended on; when it finds a difference, it goes on and
collects the stats (`noop.Stamp.replay`) instead of giving up at the first one. Each memo then
compares the stat handed over with its own record exactly as it compares a stat it would have taken,
so what decides validity does not change, only when the stat was taken: a build that checked its
files a moment earlier. What keeps that exact:
- Only stats that follow symlinks (`layout.sig`) are handed over, and only to a memo asking for such a
  stat: an lstat is always taken by the one asking (the placed outputs in tpbuild-out, whose 100,000
  lstats at 10,000 models cost as much to hand over, in time and memory, as they saved).
- The racy window (statcache.py): a stat whose mtime is within `RACY_WINDOW_NS` of the check's start
  does not vouch for the content read after it (a same-size rewrite within the timestamp granularity
  keeps it), so it is not handed over; the memo stats that path itself and applies its own racy rule.
- A path the check found absent is not handed over either: the build itself may make it (a blob
  evicted is stored again by the action that makes it), so it is stat'ed when asked.
A path the stamp did not cover (a new source, a new blob) is stat'ed when asked for, as without a
stamp. Without a stamp (missing, of another command line, damaged) nothing is handed over from a
check; what is handed over then is the build's own stats: the stat the analysis memo took of a file
it watches (`observe`) answers the next memo that asks for it (`sig`), once, under the same rules
(only a stat that follows symlinks, of a path that was there, not within the racy window of this
object's making). A source an action reads is mostly a file the analysis memo watches (every
model.py of 10,000 models), so the stat memo's check of the sources (`delta.settle`) takes 10,000
stats fewer; a build that asks the second time is one that stat'ed a moment earlier, as with a stamp.

A helper process may take the build's stats of the sources and blobs ahead of it (`prefetch.py`), when
no check handed any over: each is handed to the first question about its path (`observe`, `sigs`) as
the stat that question would have taken, under the same rules (one taken here before it is later and
wins; one of a path absent is not handed over). Package discovery's directories, which it stats from
the other end while discovery asks (`dir_sigs`), answer discovery's one question about each only.

It also carries what package discovery did (`discovery.py`), for `--report`.
"""

from __future__ import annotations

import time
from collections import deque
from itertools import compress, repeat
from operator import is_
from stat import S_ISDIR

from .layout import RACY_WINDOW_NS, kind, sig, sigs, stat_at


_POLL = 256  # `observe` calls between two looks at what the helper wrote (a system call each)


class Observed:
    def __init__(self, horizon: int | None = None):
        """`horizon`: stats with an mtime from here on are not handed over (the racy window); by
        default, the window before now (a build without a stamp, which hands over its own stats)."""
        self.horizon = time.time_ns() - RACY_WINDOW_NS if horizon is None else horizon
        # The check's groups as it took them: (base, paths, flat stats, the index of paths, made on the
        # first question about that base). A table of full path -> stat built for every one cost a delta
        # build, which asks about a few paths, 0.06 s at 10,000 models.
        self._groups: list[list] = []
        self._kinds: dict[str, tuple | None] = {}  # full path -> layout.kind
        self._own: dict[str, tuple] = {}  # without a stamp: full path -> the stat `observe` took, until asked again
        self._helper = None  # a `prefetch.Prefetch` whose sections `_wanted` are still to come
        self._dirs_of = None  # a `prefetch.Prefetch` stat'ing discovery's directories, until it is done
        self._wanted: list[int] = []
        self._pre: dict[str, tuple] = {}  # full path -> the helper's stat of it, until asked
        # While a section is still to come, the paths stat'ed here: the helper's stats of them are older.
        self._asked: list[str] | None = None
        self._until = 0  # `observe` calls until the helper is asked again
        self.reused = 0  # stats answered from the check
        self.taken = 0  # stats taken again by a memo (not covered by the check, or too fresh)
        self.discovery = "walked"  # how package discovery found the packages (discovery.py)
        self.scanned = 0  # directories whose entries discovery listed

    @property
    def checked(self) -> bool:
        """Whether this holds a stamp's check's stats (which cover what a helper would take)."""
        return bool(self._groups or self._kinds)

    def helped(self, helper, sections: list[int], dirs: bool = False) -> None:
        """Take the `sections` of a helper's stats (`prefetch.Prefetch.stats`) as they come, and if `dirs`
        its stats of discovery's directories (`dir_sigs`), unless this holds a check's stats."""
        if self.checked:
            return
        import threading  # here: a no-op build answered from its stamp has no helper (5M instructions, 2%)

        self._helper, self._wanted, self._asked = helper, list(sections), []
        self._dirs_of = helper if dirs else None
        self._polling = threading.Lock()
        # only now the questions look at the helper's stats: a build without one asks as it did
        self.observe, self.sigs, self.sig = self._observe_helped, self._sigs_helped, self._sig_helped

    def _poll(self) -> None:
        """The helper's sections written since, in their order, less the paths stat'ed here meanwhile
        (under a lock: a section late for settling may come while the actions' threads ask)."""
        with self._polling:
            while self._wanted:
                got = self._helper.stats(self._wanted[0])
                if got is None:
                    return
                del self._wanted[0]
                if got:
                    deque(map(got.pop, self._asked, repeat(None)), 0)
                    self._pre.update(got)
            self._helper = self._asked = None

    def _observe_helped(self, full: str, recorded: tuple | None) -> tuple | None:
        """`observe` with a helper's stats."""
        if self._helper is not None:
            self._until -= 1
            if self._until <= 0:
                self._until = _POLL
                self._poll()
        if recorded is not None and len(recorded) == 1 or full not in self._pre:
            if self._asked is not None:
                self._asked.append(full)
            return Observed.observe(self, full, recorded)
        self.taken += 1
        s = self._pre.pop(full)
        if s[1] < self.horizon:
            self._own[full] = s  # as `observe` keeps its own
        return s

    def _sig_helped(self, full: str) -> tuple | None:
        """`sig` with a helper's stats (those written by the last look: few paths are asked about alone)."""
        s = self._pre.pop(full, None) if self._pre else None
        if s is not None:
            self.taken += 1
            return s
        if self._asked is not None:
            self._asked.append(full)
        return Observed.sig(self, full)

    def _sigs_helped(self, fulls: list[str]) -> list[tuple | None]:
        """`sigs` with a helper's stats."""
        if self._helper is not None:
            self._poll()
        if not self._pre:
            return self._sigs_here(fulls)
        return self._completed(*_popped(self._pre, fulls), self._sigs_here)

    def _sigs_here(self, fulls: list[str]) -> list[tuple | None]:
        """`sigs` taken here while a helper's sections are to come (they are older): each path noted
        before it is stat'ed, so a section read meanwhile does not hand over its older stat."""
        if self._asked is not None:
            self._asked += fulls
        return Observed.sigs(self, fulls)

    def _completed(self, found: list, missing: list[str], sigs) -> list[tuple | None]:
        """A helper's stats (`found`: None for a path it has none of, `missing`), the rest from `sigs`."""
        self.taken += len(found) - len(missing)
        if not missing:
            return found
        if len(missing) == len(found):
            return sigs(missing)
        return _filled(found, sigs(missing))

    def dir_sigs(self, fulls: list[str]) -> list[tuple | None]:
        """`sigs` of package discovery's directories, a slice at a time in its walk's order
        (`discovery._unchanged`: its one question about each, before anything else asks about a
        directory), with a helper's stats of those it took by now (from the last: `prefetch.DIRS`)."""
        if self._dirs_of is None:
            return self.sigs(fulls)
        found = self._dirs_of.dir_sigs(fulls)
        return self._completed(found, _missing(fulls, found), self.sigs)

    def dirs_done(self) -> None:
        """Discovery asks about no more directories: the helper stops stat'ing them."""
        if self._dirs_of is not None:
            self._dirs_of.enough()
            self._dirs_of = None

    def add(self, base: str, paths: list[str], stats: list[int]) -> None:
        """The stats the check took of `base + path` for each of `paths`, four integers a path
        (`layout.stat_sig`) in one flat list or `layout.packed` array, kept as they are."""
        self._groups.append([base, paths, stats, None])

    def _found(self, full: str) -> tuple | None:
        """The stat the check took of `full`, if any, and not too fresh (see above)."""
        for group in reversed(self._groups):  # a later stat of a path wins, as it would in a table
            base = group[0]
            if not full.startswith(base):
                continue
            index = group[3]
            if index is None:
                index = group[3] = dict(zip(group[1], range(len(group[1]))))
            i = index.get(full[len(base):])
            if i is not None:
                s = stat_at(group[2], i)
                return s if s[1] < self.horizon else None
        return None

    def add_kind(self, full: str, k: tuple | None) -> None:
        self._kinds[full] = k

    def sig(self, full: str) -> tuple | None:
        """`layout.sig(full)`, from the check when it took that stat."""
        if self._groups:  # else nothing to look in (no stamp): 80,000 stats of an ordinary no-op at 10,000 models
            s = self._found(full)
            if s is not None:
                self.reused += 1
                return s
            # A directory as the stamp or a memo names it, `dir/` or `dir`: the same stat if `dir` is a
            # directory; for `dir/`, none if `dir` is anything else.
            s = self._found(full[:-1] if full.endswith("/") else full + "/")
            if s is not None:
                self.reused += 1
                return s if S_ISDIR(s[3]) else None
        if self._own:
            s = self._own.pop(full, None)  # taken by `observe` in this build (counted there)
            if s is not None:
                return s
        self.taken += 1
        return sig(full)

    def sigs(self, fulls: list[str]) -> list[tuple | None]:
        """`sig` of each path; without the check's stats, in C (`layout.sigs`): package discovery's
        20,000 directories at 10,000 models, a Python call chain each before; the stat memo's check of
        an ordinary build's 30,000 sources and blobs, but for the sources' stats `observe` took."""
        if self._groups:
            return list(map(self.sig, fulls))
        if self._own:
            found, missing = _popped(self._own, fulls)  # taken by `observe` (counted there)
            self.taken += len(missing)
            if len(missing) == len(fulls):  # none taken by `observe` (the blobs, 20,000 at 10,000 models): no loop
                return sigs(fulls)
            return _filled(found, sigs(missing)) if missing else found
        self.taken += len(fulls)
        return sigs(fulls)

    def stat(self, full: str) -> tuple:
        """As `sig`, raising FileNotFoundError for a path that is not there (as `os.stat` would)."""
        s = self.sig(full)
        if s is None:
            raise FileNotFoundError(2, "No such file or directory", full)
        return s

    def observe(self, full: str, recorded: tuple | None) -> tuple | None:
        """`layout.observe`: the path's state in the form `recorded` was taken in."""
        if recorded is not None and len(recorded) == 1:
            if full in self._kinds:
                self.reused += 1
                return self._kinds[full]
            self.taken += 1
            return kind(full)
        if not self._groups:  # nothing handed over (no stamp): the stat, one call fewer (20,000 at 10,000 models)
            self.taken += 1
            s = sig(full)
            if s is not None and s[1] < self.horizon:
                self._own[full] = s  # for the next memo that asks (see the module docstring)
            return s
        return self.sig(full)

    def observe_all(self, fulls: list[str]) -> list[tuple | None]:
        """`observe` of each path, each recorded as a `sig` (the analysis memo's check of every record,
        `AnalysisCache.check_all`): without a check's stats, a helper's or stat'ed in C (`sigs`)."""
        if self._groups:
            return list(map(self.sig, fulls))
        found = self.sigs(fulls)  # counted there
        horizon, own = self.horizon, self._own
        for full, s in zip(fulls, found):
            if s is not None and s[1] < horizon:
                own[full] = s  # for the next memo that asks (see the module docstring)
        return found

    def forget(self) -> None:
        """Drop the tables once the memos have checked their records and the actions have run
        (`build.run`): at 10,000 models they hold 35 MB, which placing the outputs, the build's peak
        of memory, does not read. A path asked for later is stat'ed, as without a stamp."""
        self._groups = []
        self._kinds = {}
        self._own = {}
        self._pre = {}
        self._helper = self._asked = self._dirs_of = None
        self._wanted = []

    def counters(self) -> dict:
        return {"discovery": self.discovery, "dirs_scanned": self.scanned,
                "stats": {"reused": self.reused, "taken": self.taken}}


def _popped(table: dict, fulls: list[str]) -> tuple[list, list[str]]:
    """The stats `table` holds of `fulls`, taken out of it (None for a path it has none of), and the
    paths it has none of: one pass in C when it has them all."""
    found = list(map(table.pop, fulls, repeat(None)))
    return found, _missing(fulls, found)


def _missing(fulls: list[str], found: list) -> list[str]:
    """The paths of `fulls` that `found` (their stats, None where there is none) has no stat of."""
    return [] if None not in found else list(compress(fulls, map(is_, found, repeat(None))))


def _filled(found: list, stats: list) -> list:
    """`found` (`_popped`) with the stats of its missing paths, `stats`, in their order."""
    taken = iter(stats)
    return [s if s is not None else next(taken) for s in found]
