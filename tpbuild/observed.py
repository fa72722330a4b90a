"""What this build has seen of the workspace's files: the stats the no-op stamp's check took, handed
to the ordinary path, so a build after an edit stats each file once, not once for the stamp and again
for each memo that checks it (discovery, the analysis memo, the stat memo, the placed outputs).

The check stats everything the last build depended on; when it finds a difference, it goes on and
collects every stat (`noop.Stamp.replay`) instead of giving up at the first one. Each memo then
compares the stat handed over with its own record exactly as it compares a stat it would have taken
(the same `layout.sig`, following symlinks or not, as the memo would), so what decides validity does
not change, only when the stat was taken: a build that checked its files a moment earlier.

Two rules keep that exact:
- A stat is handed over only for the kind of stat it is (`follow`): an lstat never answers a stat.
- The racy window (statcache.py): a stat whose mtime is within `RACY_WINDOW_NS` of the check's start
  does not vouch for the file's content (a same-size rewrite within the timestamp granularity keeps
  it), so it is not handed over; the memo stats that path itself, as it always did, and applies its
  own racy rule.
  An lstat, which the stamp takes only of what tpbuild placed in tpbuild-out, is handed over at any
  age: it is compared with the stat recorded at placing and nothing read after it is kept with it
  (a file replaced since is re-placed, one placed again keeps its own new stat).
A path the check found absent is not handed over either: the build itself may make it (a blob
evicted is stored again by the action that makes it, and read by the next), so it is stat'ed when asked.
A path the stamp did not cover (a new source, a new blob) is stat'ed when asked for, as without a
stamp. Without a stamp (missing, of another command line, damaged) nothing is handed over and the
ordinary path is exactly what it was; this object then only counts.

It also carries what package discovery did (`discovery.py`), for `--report`.
"""

from __future__ import annotations

from stat import S_ISDIR

from .layout import kind, sig


class Observed:
    def __init__(self, horizon: int = 0):
        self.horizon = horizon  # stats with an mtime from here on are not handed over (the racy window)
        self._follow: dict[str, tuple] = {}
        self._nofollow: dict[str, tuple] = {}
        self._kinds: dict[str, tuple | None] = {}
        self.reused = 0  # stats answered from the check
        self.taken = 0  # stats taken again by a memo (not covered by the check, or too fresh)
        self.discovery = "walked"  # how package discovery found the packages (discovery.py)
        self.scanned = 0  # directories whose entries discovery listed

    def add(self, base: str, follow: bool, paths: list[str], stats: list[int]) -> None:
        """The stats the check took of `base + path` for each of `paths`, as one flat list of four
        integers a path (`layout.stat_sig`): made into a table in one go, as the check takes them."""
        it = iter(stats)
        pairs = zip(map(base.__add__, paths), zip(it, it, it, it))
        if follow:
            horizon = self.horizon
            self._follow.update([(full, s) for full, s in pairs if s[1] < horizon])  # too fresh: see above
        else:
            self._nofollow.update(pairs)

    def add_kind(self, full: str, k: tuple | None) -> None:
        self._kinds[full] = k

    def sig(self, full: str, follow: bool = True) -> tuple | None:
        """`layout.sig(full, follow)`, from the check when it took that stat."""
        table = self._follow if follow else self._nofollow
        if full in table:
            self.reused += 1
            return table[full]
        if full + "/" in table and S_ISDIR(table[full + "/"][3]):  # the workspace root, named `root/`
            self.reused += 1
            return table[full + "/"]
        if full.endswith("/") and full[:-1] in table:
            # `dir/` as the memos name a directory they listed: the same stat as `dir` if that is a
            # directory (followed, else an lstat of `dir/` would follow a link), and for a stat
            # that follows, nothing if `dir` is anything else.
            s = table[full[:-1]]
            if S_ISDIR(s[3]):
                self.reused += 1
                return s
            if follow:
                self.reused += 1
                return None
        self.taken += 1
        return sig(full, follow)

    def stat(self, full: str, follow: bool = True) -> tuple:
        """As `sig`, raising FileNotFoundError for a path that is not there (as `os.stat` would)."""
        s = self.sig(full, follow)
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
        return self.sig(full)

    def counters(self) -> dict:
        return {"discovery": self.discovery, "dirs_scanned": self.scanned,
                "stats": {"reused": self.reused, "taken": self.taken}}
