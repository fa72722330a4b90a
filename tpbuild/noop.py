"""The no-op stamp: answer a build with nothing to do from stats alone, before loading any rule.

A no-op build of 1,000 models spends most of its time importing the rule sets and their schema
machinery and walking the action graph, only to conclude that every file is as it was. Like ninja,
which answers a no-op from its log and the stat of every file, a successful build leaves here the
stat of everything its result depends on; the next build with the same command line first compares
them and, when every one is unchanged, prints the same summary without importing or analysing anything.

What is recorded (each with `layout.sig`, or `layout.kind` for paths whose analysis checked existence
only): tpbuild.toml; every directory package discovery looked into (a new BUILD.toml moves a
directory's mtime); everything the analysis memo records per package (manifests, the files and
directories rules looked at); every source an action reads; every cached blob the build's results
name; every file and directory placed in tpbuild-out (hardlinks of blobs, lstat); the engine's and
rule sets' code and the interpreter's import path (a rule set installed or upgraded). A placed file that
is a hardlink of a blob, in a placed directory older than the racy window, is recorded *linked*: proven
by the stats of its directory and its blob, not by one of its own (`_Linked`). The command line's
patterns, the cache location settings, PATH (it enters run actions' keys), the interpreter, the engine's
directory and the import path are the stamp's key.

A stamp is written only when it can be trusted to be complete, else the file is removed: the build
succeeded without warnings and without a remote cache; every package came from (or went into) the
analysis memo and no rule probes the machine (`volatile`). Each entry is recorded as the build used it,
not stat'ed again: a source or blob at the stat its digest was taken at (the stat memo's entry), a
placed file or directory at the lstat placement recorded (the build state's), so a file that changed
during the build differs at the next check. An entry the stamp cannot vouch for by its stat is recorded
*unproven* (`UNPROVEN`, a stat no path has, like the analysis memo's `UNSETTLED`): a stat younger than
the racy window (a same-size rewrite within the timestamp granularity would keep it: a source just
edited, a blob just written, an output just placed), and a source or blob whose digest the stat memo did
not keep (hashed within the racy window). The next check sees an unproven entry as
a difference, so that build takes the ordinary path, whose memos prove the entry again by their own
racy rules (the stat memo re-hashes a source, the blob check re-verifies a blob, placement re-checks a
tree) and, executing nothing, leaves a stamp without one. So every successful build leaves a stamp:
the one before an edit too, whose check then hands its stats to the build after the edit (below).
A difference in the sources actions read alone (with files the analysis memo knows by their facts, and
blobs and placed files recorded unproven) makes a delta build on the last build's graph
(`incremental.py`, `DELTA_ROLES`); any other, the ordinary path, which is always correct.

On a miss the check does not stop at the first difference: it goes on through the stats that follow
symlinks (the workspace's directories and files, the blobs) and hands them to the ordinary path
(`observed.py`), which then takes none of them again (package discovery, the analysis memo, the stat
memo, the blob check). The lstats of tpbuild-out are taken after a difference only while a delta
build may answer it (which relies on them); the ordinary path checks the placed outputs itself (handing
100,000 of them over at 10,000 models cost as much time and memory as it saved). A build with
`--report`, `--summary` or `--profile` uses a stamp the same way and leaves it as it is, but for the
patch of a delta build.

Format: `tpbuild-out/.tpbuild/noop`, a memo (`memo.py`) of kind `noop`: {"key", "gen", "roles",
"groups", "summary", "tmp"}. `tmp` lists the temp directories the build wrote in (`workspace.temp_dirs`),
which a hit sweeps of dead builds' leftovers, as every build that reads its memos does: a build killed
after it saved its stamp, before its exit removed its own, is followed by hits alone. `gen` is a random generation, which the delta build's graph memo beside it
(`noop-graph`; a stamp of the same content as the one it was saved with keeps it and its generation,
`incremental.remembered`) and the patch of delta builds since (`noop-patch`: {"gen", "groups": {index: [paths,
stats, indices]}, "trees": {record: tree digest}}, applied to the groups it names before they are compared, see
`Stamp.patch_with`; its trees amend the graph memo's, `incremental.Checked.holds`) carry too: another
one is not of this stamp. `roles` names what each group holds (`Stamp._groups`; "kinds" for
the kind groups). A group is `[base, follow, paths, stats]`: `follow` says stat (true) or lstat (false), and `stats` is
the `layout.stat_sig` of each path, four integers a path, packed into one text (`layout.packed_text`:
64-bit integers in base64), which a check decodes into one array and compares with the one it took in
one go (at 10,000 models, 400,000 JSON numbers decoded were an object each); or, for the paths
analysis only checked the kind of, and those that must stay absent, `[base, null, [[path, kind or null],
...]]`; or, for the linked files, `[base, "linked", ...]` (`_Linked`), checked after the blobs and the
placed directories.
Another version or key is a miss; so is a stamp that does not decode into these shapes.
A stamp whose stats are all proven also leaves its three placed groups beside it (`placedmemo.py`), for
the ordinary path's check of tpbuild-out when this stamp is gone, and takes them from there, unsorted,
when that check found them all to hold and the build placed nothing.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from array import array
from itertools import chain, compress, repeat
from operator import and_, attrgetter, eq, is_, itemgetter, length_hint, lt, ne, not_
from pathlib import Path

from . import memo as memofile
from .errors import UserError
from .layout import OUT_DIR, RACY_WINDOW_NS, STATE_DIR, WORKSPACE_FILE, find_root, observe, packed, packed_sigs, packed_text, \
    positions, shared_device, sig, stat_at, stat_sig, unpacked
from .observed import Observed

KIND, VERSION = "noop", 14
PATCH, PATCH_KIND = "noop-patch", "noop-patch"  # beside the stamp: what delta builds amended (`Stamp.patch_with`)
# The groups whose differences a delta build can answer (`incremental.py`): a source, a file the
# analysis memo knows by its facts, a blob or a placed file recorded unproven. Any other difference
# (the workspace's directories, manifests, code, the import path, a placed directory) is the ordinary path's.
DELTA_ROLES = {"sources", "watched", "blobs", "placed"}
UNPROVEN = (-1, -1, -1, -1)  # the stat of an entry recorded unproven: no path has it (see above)
# Options that do not change what a successful build produces; any other option set means no stamp.
NEUTRAL_OPTIONS = {"command", "patterns", "jobs", "keep_going", "directory", "cache_dir", "explain"}
# Options that change no output but ask for what a replay does not give (a report file): the stamp's
# stats are still taken and handed to the ordinary path (observed.py), and the stamp is left as it is.
OBSERVING_OPTIONS = {"report", "summary", "profile"}
ENV = ("TPBUILD_CACHE_DIR", "XDG_CACHE_HOME", "HOME", "PATH")  # PATH enters run actions' keys


def simple_args(argv: list[str]):
    """`tpbuild build` options in the forms people and scripts type (`-C DIR`, `--cache-dir DIR`, `-j N`,
    `-k`, `--explain`, `//` patterns), parsed without argparse, as argparse would parse them; None for
    anything else (another option or form, a subtractive pattern, no pattern), which the CLI's parser
    then handles, stamp included. Importing and setting up argparse is a good part of a no-op's cost."""
    from types import SimpleNamespace

    args = SimpleNamespace(command=None, patterns=[], jobs=os.cpu_count() or 1, keep_going=False, explain=False,
                           directory=None, cache_dir=None)
    words = iter(argv)
    for word in words:
        name, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in ("-C", "--cache-dir", "-j", "--jobs"):
            value = value if eq else next(words, None)
            if value is None or (name == "-C" and eq):
                return None
        elif eq:
            return None
        if name == "build" and args.command is None:
            args.command = "build"
        elif name in ("-C", "--cache-dir"):
            setattr(args, "directory" if name == "-C" else "cache_dir", value)
        elif args.command is None:
            return None  # the build's own options and patterns come after the command
        elif name in ("-j", "--jobs") or (name.startswith("-j") and name[2:].isdigit()):
            try:
                args.jobs = int(value if value is not None and name in ("-j", "--jobs") else name[2:])
            except ValueError:
                return None
        elif name in ("-k", "--keep-going"):
            args.keep_going = True
        elif name == "--explain":
            args.explain = True
        elif name.startswith("//"):
            args.patterns.append(name)
        else:
            return None
    return args if args.command == "build" and args.patterns else None


def proof(s: tuple | None, horizon: int) -> tuple:
    """What the stamp records for a path the build used at stat `s`: `s`, or `UNPROVEN` when the stat memo
    did not keep one (None) or it is from `horizon` on (the racy window; see above)."""
    return s if s is not None and s[1] < horizon else UNPROVEN


def placed_paths(rel: str, record: tuple):
    """A placed tree's files and its directories, as the stamp names them (from the workspace root), each
    at the lstat placement recorded (a `outputs.BuildState.outputs` record)."""
    _tree, files, dirs = record
    return (((f"{rel}/{path}", r[2]) for path, r in files.items()),
            ((f"{rel}/{path}" if path else rel, st) for path, st in dirs.items()))


def witness(root: Path) -> tuple:
    """What any build that changed this workspace's outputs or state since changed too: the stamp, its
    patch and the build state file (each save appends to it or replaces it). The check takes it under the
    workspace lock and a delta build compares it once it holds the lock again (`build.Options.unchanged`):
    between the two another build may have run, and then the check's differences are not the workspace's."""
    return tuple(sig(str(root / STATE_DIR / name)) for name in ("noop", PATCH, "state"))


class Stamp:
    """The stamp of one workspace for one command line."""

    def __init__(self, root: Path, key: list, workspace_sig: tuple | None, replayable: bool = True):
        self.root = root
        self.path = root / STATE_DIR / "noop"
        self.key = key
        self.workspace_sig = workspace_sig  # taken before tpbuild.toml is read
        self.replayable = replayable  # options that change no output but what a replay cannot give (--report)
        self.observed: Observed | None = None  # after a miss: what the check saw (see replay)
        # After a miss a delta build may answer (see replay): the stamp as checked (its patch applied),
        # that patch, and the differences found, by group.
        self.data: dict | None = None
        self.patch: dict | None = None
        self.differences: dict[int, list] | None = None
        self.linked: dict[int, tuple] = {}  # linked files (`_Linked`) lstat'ed, their proof failing: their stat
        self.linked_at: list[int] = []  # the blobs' stats as the stamp recorded them, before its patch (`linked_stat`)

    @classmethod
    def open(cls, start: Path, args) -> "Stamp | None":
        """None when this command line is never answered from a stamp."""
        extra = {k: v for k, v in vars(args).items() if k not in NEUTRAL_OPTIONS}
        if any(v for k, v in extra.items() if k not in OBSERVING_OPTIONS) or args.jobs < 1 or \
                "TPBUILD_REMOTE_CACHE" in os.environ:
            return None
        try:
            root = find_root(start)
        except UserError:  # the ordinary path reports it
            return None
        # The engine that runs (its directory) and where rule sets are imported from: another copy of
        # tpbuild, or one found through another PYTHONPATH, finds its own code unrecorded (the groups
        # below record the stats of the code paths this one used, which another never changes).
        key = [list(args.patterns), getattr(args, "cache_dir", None), *(os.environ.get(k) for k in ENV),
               sys.executable, sys.version, os.path.dirname(__file__), sys.path]
        return cls(root, key, sig(str(root / WORKSPACE_FILE)), not any(extra.values()))

    def replay(self) -> dict | None:
        """The recorded summary if nothing it depends on changed, else None. On a miss against a
        stamp of this command line, `observed` holds every stat the check took (observed.py): the
        check goes on past the first difference, for the ordinary path to use them; and while every
        difference is of a kind a delta build can answer (`DELTA_ROLES`), `differences` names them,
        the placed outputs' lstats included (`incremental.py`)."""
        self.observed = None
        self.differences = None
        self.witness = None
        data = memofile.load(self.path, KIND, VERSION)
        if not isinstance(data, dict) or data.get("key") != self.key or self.workspace_sig is None:
            return None
        try:
            _unpack(data["groups"])
            tmp = data["tmp"]
            if not (tmp.__class__ is list and all(d.__class__ is str for d in tmp)):
                raise TypeError("a damaged stamp")
        except (KeyError, TypeError, ValueError, IndexError):  # a damaged stamp: the ordinary path
            return None
        try:
            lock = open(self.root / STATE_DIR / "lock", "w")
        except OSError:
            return None
        observed = Observed(time.time_ns() - RACY_WINDOW_NS)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a build is running: the ordinary path waits for it and says so
                return None
            self.witness = witness(self.root)
            patch = memofile.load(self.path.with_name(PATCH), PATCH_KIND, VERSION)
            patched: dict[int, set[int]] = {}  # group -> the indices of its paths the patch restated
            blob_stats = data["groups"][data["roles"].index("blobs")][3]  # what the linked files were linked at
            if isinstance(patch, dict) and patch.get("gen") == data["gen"]:
                if not isinstance(patch["trees"], dict):
                    raise ValueError("a damaged patch")
                blob_stats = blob_stats[:]  # the patch restates blobs in place
                for gi, (paths, stats, indices) in patch["groups"].items():
                    patched[int(gi)] = _apply(data["groups"][int(gi)], paths, stats, indices)
            else:
                patch = None
            same = self.replayable
            confinable = True  # every difference so far is one a delta build answers
            differences: dict[int, list] = {}  # group -> [(path index, its stat now)]
            taken = []  # groups stat'ed in one go, expanded into `observed` only on a miss
            # Of the groups the linked files are proven by, the indices of the paths not at the stat the
            # stamp was made with: found changed by the check, or restated by the patch (`_unlinked`).
            moved: dict[str, set[int]] = {}
            linked: dict[int, tuple] = {}  # linked files their links did not prove: their lstat now
            for gi, (role, group) in enumerate(zip(data["roles"], data["groups"])):
                if group[1] == "linked":
                    if not (same or confinable):
                        continue  # tpbuild-out, after a difference (as below)
                    unlinked = _unlinked(group, *(moved.get(r) for r in ("blobs", "placed_dirs")))
                    # A file placed again by a delta build since is in the placed group, at its stat now.
                    again = set(data["groups"][data["roles"].index("placed")][2]) if unlinked else ()
                    dirs = data["groups"][data["roles"].index("placed_dirs")][2]
                    base, blob_index = group[0], group[4]
                    try:
                        for j in unlinked:
                            path = linked_path(group, dirs, j)
                            if path not in again:
                                linked[j] = stat_sig(os.lstat(base + path))
                                if linked[j] != stat_at(blob_stats, blob_index[j]):
                                    same = confinable = False
                    except OSError:  # gone
                        same = confinable = False
                    continue
                if group[1] is None:
                    base, _, items = group
                    for rel, recorded in items:
                        recorded = tuple(recorded) if recorded is not None else None
                        now = observe(base + rel, recorded)
                        if recorded is not None and len(recorded) == 1:
                            observed.add_kind(base + rel, now)
                        elif now is not None:
                            observed.add(base, [rel], list(now))
                        if now != recorded:
                            same = confinable = False
                    continue
                base, follow, paths, recorded = group
                if not (same or follow or confinable):
                    continue  # tpbuild-out, after a difference: the ordinary path checks it (see above)
                try:
                    now = _stats(os.stat if follow else os.lstat, base, paths)
                except OSError:  # a path gone: each path's stat, one by one
                    same = confinable = False
                    if follow:
                        present = [(rel, s) for rel, s in zip(paths, map(sig, map(base.__add__, paths)))
                                   if s is not None]
                        observed.add(base, [rel for rel, _ in present], [v for _, s in present for v in s])
                    continue
                if len(now) != len(recorded):
                    raise ValueError("a damaged stamp")
                if role in ("blobs", "placed_dirs"):
                    moved[role] = (len(paths), patched.get(gi, set()).union(i for i, _s in _differing(now, recorded))
                                   if now != recorded else patched.get(gi, set()))
                if follow:
                    taken.append((base, paths, now))
                if now != recorded:
                    same = False
                    confinable = confinable and role in DELTA_ROLES
                    if confinable:
                        differences[gi] = _differing(now, recorded)
            if same:
                _sweep(tmp, self.root)
                return data["summary"]
            for base, paths, now in taken:
                observed.add(base, paths, now)
            self.observed = observed
            if confinable:
                self.data, self.patch, self.differences, self.linked = data, patch, differences, linked
                self.linked_at = blob_stats
            return None
        except (KeyError, TypeError, ValueError, IndexError):  # a damaged stamp: the ordinary path, as without one
            self.observed = self.differences = None
            return None
        finally:
            lock.close()

    def linked_stat(self, j: int) -> tuple:
        """The stat linked file `j` was recorded at (after a miss a delta build may answer): its blob's, as
        the stamp recorded that blob (`_Linked`)."""
        return stat_at(self.linked_at, self.data["groups"][self.data["roles"].index("linked")][4][j])

    def forget(self) -> None:
        for path in (self.path, self.path.with_name(PATCH)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def patch_with(self, groups: dict[int, tuple[list[str], list[int], list[int | None]]],
                   trees: dict[str, str]) -> str | None:
        """Amend the stamp a miss was checked against (`differences`) with the stats a delta build used
        (`incremental.py`) of paths, by their index in the group as checked, None for one it lacks (added),
        and the digests of the trees it placed: a patch beside it, rewritten whole (it holds what the delta
        builds since the stamp changed, a few paths each), applied by the next check. The stamp itself,
        13 MB at 10,000 models, is not written again. None when saved, else a warning.

        A patch's group is `[paths, stats, indices]`, in the order of their indices: each path's index
        in the stamp's group, or for one it adds, the one it gets added at. So the check applies it
        without a table of the group's paths (three of them, 70,000 paths at 10,000 models, were half
        the time a check spent on anything but its stats and its decoding)."""
        merged: dict[str, list] = {}
        old = self.patch["groups"] if self.patch is not None else {}
        for gi in sorted({*map(int, old), *groups}):
            paths, stats, indices = old.get(str(gi), ([], [], []))
            entries = {i: (path, stats[4 * k:4 * k + 4]) for k, (path, i) in enumerate(zip(paths, indices))}
            if gi in groups:
                end = len(self.data["groups"][gi][2])  # the group as checked, the old patch applied
                paths, stats, indices = groups[gi]
                for k, (path, i) in enumerate(zip(paths, indices)):
                    if i is None:
                        i, end = end, end + 1
                    entries[i] = (path, stats[4 * k:4 * k + 4])
            order = sorted(entries)
            merged[str(gi)] = [[entries[i][0] for i in order], [v for i in order for v in entries[i][1]], order]
        trees = {**(self.patch["trees"] if self.patch is not None else {}), **trees}
        return memofile.save(self.path.with_name(PATCH), PATCH_KIND, VERSION,
                             {"gen": self.data["gen"], "groups": merged, "trees": trees}, self.path.parent / "tmp",
                             "the no-op stamp's patch", depth=0)  # the few paths delta builds restated

    def record(self, result, cache_dir: Path) -> None:
        """Stamp a finished build, or leave no stamp if it cannot be trusted (see the module docstring)."""
        from . import incremental, placedmemo
        from .workspace import temp_dirs

        self.forget()
        a = result.analysis
        if not result.success or result.warnings or "remote" in result.cache or result.statcache is None:
            return
        cache = a.graph.cache
        # In order (a set's is the process's string hashes'): a stamp is the same for the same build. The
        # records asked for at once (`AnalysisCache.records`: 10,000 at 10,000 models).
        packages = sorted(a.graph.loaded_packages)
        recs = cache.records(packages) if cache is not None else [None] * len(packages)
        analysed = list(zip(packages, recs))
        # A package not in the memo, or a rule that probes the machine: looked for in C (a generator per
        # package, 10,000 at 10,000 models, cost a third more).
        if any(map(is_, recs, repeat(None))) or \
                any(map(attrgetter("volatile"), chain.from_iterable(map(attrgetter("targets"), recs)))):
            return
        # Each record placed once, a composed output's parts by their own (merged into their output's
        # record, the repository's 10,000 parts were copied twice at 10,000 models), and the parts; not
        # even read when the placed groups are the ones the last stamp recorded (`placedmemo.py`).
        tops = list(chain.from_iterable(map(attrgetter("outputs"), result.targets.values())))
        kept = result.placed_memo.kept(tops) if result.placed_memo is not None else None
        placed, parts = result.placed.records(tops) if kept is None else (None, None)
        walk = incremental.Walk(result, result.sources)  # names the sources its actions read
        groups = self._groups(result, cache_dir, time.time_ns() - RACY_WINDOW_NS, analysed, placed,
                              walk.sources, kept)
        if any(g.refused for _role, g in groups):
            return
        # The targets hold the requested ones (and those they depend on), each once: as many means every
        # one requested (`//...`), known without hashing 10,000 labels twice (a Python call each).
        targets = result.targets
        shown = targets.values() if len(a.requested) == len(targets) else \
            compress(targets.values(), map(set(a.requested).__contains__, targets))
        summary = {"targets": len(result.targets), "actions": len(result.outcomes),
                   "shown": list(chain.from_iterable(map(attrgetter("outputs"), shown)))}
        stamped = [(role if stored[1] is not None else "kinds", stored) for role, g in groups for stored in g.stored()]
        content = {"key": self.key, "roles": [r for r, _ in stamped], "groups": [g for _, g in stamped],
                   "summary": summary}
        # The generation ties the stamp to the graph a delta build reads (incremental.py): the one of the
        # graph memo there when it was saved with a stamp of this very content, none unproven (its
        # graph is this build's, `incremental.remembered`), else a new one, with the graph saved again.
        digest = _digest(content)
        gen = incremental.remembered(self.root, digest) if all(g.proven() for _role, g in groups) else None
        if gen is None:
            gen = os.urandom(8).hex()
            if parts is None:
                placed, parts = result.placed.records(tops)
            graph = incremental.drawn(result, walk, analysed, parts)
            if incremental.remember(self.root, gen, digest, content["roles"], graph) is not None:
                return
        # Not saved (a full disk): no stamp, and the next build takes the ordinary path.
        tmp = list(map(str, temp_dirs(cache_dir, self.root)))
        if memofile.save(self.path, KIND, VERSION, {"key": self.key, "gen": gen, **content, "tmp": tmp},
                         self.path.parent / "tmp", "the no-op stamp") is None:
            from . import atomic

            atomic.crash_point("stamped")  # test-only: killed before its exit removes its temp directories
            if kept is None and result.placed_memo is not None and all(g.proven() for _role, g in groups):
                # The placed groups as stored here (each one form: none holds paths checked by kind alone),
                # for the next ordinary build's check of tpbuild-out and its stamp (`placedmemo.py`).
                result.placed_memo.remember(tops, placed, {role: g for role, g in stamped if role in placedmemo.ROLES})

    def _groups(self, result, cache_dir: Path, horizon: int, analysed: list, records: list | None,
                sources: list[str], kept: dict | None = None) -> list[tuple[str, _Group]]:
        """The stamp's groups of a successful build: `analysed`, (package, analysis memo record) of each
        package it loaded; `records`, each record of the build state it placed (`outputs.Placed.records`);
        `sources`, each source its actions read; `kept`, the placed groups as the last stamp stored them,
        when they are these records' (`placedmemo.PlacedMemo.kept`: then `records` is None)."""
        from . import placedmemo
        from .action import blobs_named
        from .cas import Cas

        a = result.analysis
        # Every path the analysis memo's records watch, a later record's stat of one winning (in C).
        observed = dict(chain.from_iterable(map(dict.items, map(attrgetter("observed"), map(itemgetter(1), analysed)))))
        root = f"{self.root}/"
        # What the build used, as it used it: each source and blob at the stat its digest was taken at
        # (unproven if the stat memo did not keep it: racy), each placed file and directory at the
        # lstat placement recorded. A path that changed since differs from it at the next check, so
        # nothing is stat'ed again here.
        source_stats = result.statcache.peeks(sources)  # as build.run saved it: the stats the digests belong to
        known = dict(zip(sources, source_stats))
        sourced = _Group(root, True, horizon=horizon)
        sourced.used(sources, source_stats)
        cas = Cas(cache_dir)
        if result.blobs is not None:  # those the settle memo named (every result settled), and where they are
            blobs, names, whole, text = result.blobs
        else:  # a tree names its parts' blobs again (the repository: every model's): each once
            blobs, names, whole, text = list(blobs_named(list(map(attrgetter("entries"), result.outcomes.values())))), \
                None, None, None
        blob_paths = cas.paths_of(blobs, names)
        found = list(map(result.verified.get, blobs))
        blob_stats = result.statcache.proven(blob_paths, found)
        stores = _Group("", True, horizon=horizon)
        stores.used(blob_paths, blob_stats)
        if whole is not None and blob_stats is found:
            # Each at the stat it was found whole at, as the settle memo packed them (`delta.Premise.whole`:
            # those stats, all older than the racy window before the build, so than this one's).
            stores.packed_as(array("q", whole), text)
        code = _Group("", True, horizon=horizon)
        if kept is None:
            placed = _Group(root, False, horizon=horizon)
            # The directories too: a file added to an output (a killed build) moves its directory's mtime.
            # They are exempt from the racy window: they are tpbuild's own, fresh after any placement, and
            # what could change them unseen (a build killed while placing) starts later than the timestamp
            # granularity.
            placed_dirs = _Group(root, False)  # filled by the linked files' `sort`, which reads them
            linked = _Linked(root, blobs, stores, placed_dirs, horizon, str(cas.root), self.root / OUT_DIR)
            linked.sort(records, placed, result.placed.compared())
        else:
            placed, placed_dirs, linked = (_Stored(kept[role]) for role in placedmemo.ROLES)
        code_paths = []
        for d in map(str, a.graph.rules.code_dirs):  # its modules as `Path.glob("*.py")` lists them, less its cost
            code_paths += [d, *sorted(f"{d}/{name}" for name in os.listdir(d) if name.endswith(".py"))]
        code_paths += [p for p in sys.path if p and os.path.isdir(p)]
        code_paths.append(str(cache_dir / "id"))
        code.add_all(code_paths, list(map(sig, code_paths)))  # in one go: a call each cost 1M instructions
        # A manifest or model.py the analysis memo watches is mostly a directory walked or a source
        # too, recorded alike: one stat of it is enough (compared in C: 30,000 paths at 10,000 models).
        walked = a.graph.walked
        ws_paths, ws_sigs = [WORKSPACE_FILE, *map(itemgetter(0), walked)], [self.workspace_sig, *map(itemgetter(1), walked)]
        ws = _Group(root, True, horizon)
        ws.add_all(ws_paths, ws_sigs)
        known.update(zip(_as_known(ws_paths), ws_sigs))
        differ = list(map(ne, map(known.get, _as_known(observed), repeat(())), observed.values()))
        watched = _Group(root, True, horizon)
        watched.add_all(list(compress(observed, differ)), list(compress(observed.values(), differ)))
        return [
            ("workspace", ws),
            ("watched", watched),
            ("sources", sourced),
            ("blobs", stores),
            ("code", code),
            ("placed", placed),
            ("placed_dirs", placed_dirs),
            ("linked", linked),  # after the groups it is proven by (Stamp.replay)
        ]


class _Group:
    """One group of the stamp: its paths, each path's stat as the build used it (a `stat_sig` tuple the
    build holds anyway, or None: not kept), taken in bulk (`used`), and apart, the paths checked by kind
    only or that must stay absent (`observe`). Stored with its stats flattened into one packed array, a
    stat from `horizon` on (the racy window), or None, as `UNPROVEN`: a build whose stats are all older
    (every no-op) packs them in C without a look at each (`_packed`)."""

    def __init__(self, base: str, follow: bool, horizon: int | None = None):
        self.base, self.follow, self.horizon = base, follow, horizon  # horizon None: exempt (`_packed`)
        self.paths: list[str] = []
        self.sigs: list[tuple | None] = []
        self.kinds: list = []
        self.refused = False  # an absent path in an lstat group: not a shape the stamp has
        self._stats: tuple[array, bool] | None = None  # packed, and whether none is unproven (`_packed`)
        self._text: str | None = None  # the packed stats' `packed_text`, when another memo holds it

    def packed_as(self, stats: array, text: str | None) -> None:
        """Its stats are these, packed, none unproven, as another memo holds them (and their text, if known):
        not packed again (at 10,000 models, 20,000 blobs' stats packed and deflated were a tenth of this)."""
        self._stats, self._text = (stats, True), text

    def add_all(self, paths: list[str], sigs: list) -> None:
        """Paths at their `sig` (or `kind`, or None for an absent path), a column each, the stats picked in C
        (a call each was a tenth of writing the stamp at 10,000 models: the 20,000 directories walked, the
        10,000 manifests; a (path, sig) pair each, made and taken apart again, a tenth of the rest)."""
        stats = list(map((1).__lt__, map(length_hint, sigs)))  # a stat, not a kind nor absent (None: 0)
        if all(stats):  # the stats picked in C, the few others (the workspace's kinds) in a loop
            self.used(paths, sigs)
            return
        self.used(list(compress(paths, stats)), list(compress(sigs, stats)))
        for rel, s in compress(zip(paths, sigs), map(not_, stats)):
            if self.follow is False and s is None:
                self.refused = True
            else:  # a kind, or absent: `observe` stats an absent path as a stat group would
                self.kinds.append([rel, s])

    def used(self, paths: list[str], sigs: list) -> None:
        """Paths at the stat the build used, None for one it did not keep (unproven): lists extended, in C
        (at 10,000 models, 100,000 paths)."""
        self.paths += paths
        self.sigs += sigs

    def _packed(self) -> tuple[array, bool]:
        """The stats flattened and packed (`layout.packed`), each `proof`'s, and whether none is unproven:
        looked at one by one only when one is (a None, or the newest from `horizon` on)."""
        if self._stats is None:
            sigs, horizon = self.sigs, self.horizon
            try:  # a group exempt from the racy window (the placed directories) holds the state's stats: no None
                fresh = horizon is not None and max(map(itemgetter(1), sigs), default=0) >= horizon
            except TypeError:  # a None among them
                fresh = True
            if fresh:
                sigs = [s if s is not None and s[1] < horizon else UNPROVEN for s in sigs]
            self._stats = packed_sigs(sigs), not (fresh and UNPROVEN in sigs)
        return self._stats

    def proven(self) -> bool:
        """No stat is recorded unproven."""
        return self._packed()[1]

    def stored(self) -> list[list]:
        kinds = [[self.base, None, self.kinds]] if self.kinds else []
        return [*kinds, [self.base, self.follow, self.paths, self._text or packed_text(self._packed()[0])]]


class _Stored:
    """A group as a stamp stored it, none of its stats unproven (the placed groups `placedmemo.py` kept)."""

    refused = False

    def __init__(self, stored: list):
        self._stored = stored

    def proven(self) -> bool:
        return True

    def stored(self) -> list[list]:
        return [self._stored]


class _Linked:
    """The placed files that are hardlinks of blobs the stamp stats anyway, each in a directory placed
    before the racy window: proven at the next check without a stat of their own (at 10,000 models,
    60,000 of the 160,000 stats a check took). A directory whose stat did not move holds the same names
    for the same inodes (adding, removing or renaming an entry moves its mtime), and the blob's stat,
    taken anyway, is that inode's: so the file is as recorded when its directory and its blob are at
    the stats they had when it was linked, the ones their own groups recorded (a file is linked only
    at those). Only where the store and tpbuild-out are on one device (an inode number names one file
    there), checked again at each check; a file whose proof does not hold is lstat'ed as the placed
    ones are (`Stamp.replay`).

    Stored as `[base, "linked", names, name indices, blob indices, directory indices, [store, device]]`:
    a file is named by its directory, an index into the placed directories' stat group, and its name
    in that directory, an index into `names` (each once: at 10,000 models, 60,000 paths were decoded by
    every check, which needs none of them unless a proof fails); its blob is an index into the blobs'
    group (a patch only appends to those groups, so an index stays the path it was); the indices are
    packed as the stats are (32-bit, `layout.packed_text`). No stat is repeated here: a file is linked
    at its directory's and its blob's stats as their groups recorded them, and its own lstat is its
    blob's (one inode), the one the stamp's blob group holds before a patch restates it
    (`Stamp.linked_stat`). At 10,000 models the directories' stats were 240,000 integers that every
    check decoded (0.03 s), and the files' own 240,000 more (0.02-0.03 s)."""

    refused = False

    def proven(self) -> bool:
        """Its files have no stat of their own (`_Group.proven`): proven by their blobs' and directories'."""
        return True

    def __init__(self, base: str, blob_ids, blobs: _Group, dirs: _Group, horizon: int, store: str, out: Path):
        self.base, self.horizon, self.dirs = base, horizon, dirs
        self.device = [store, shared_device(store, str(out))]
        self.names: dict[str, int] = {}  # a file's name in its directory -> its index in the names
        self.name_index: list[int] = []
        self.blob_index: list[int] = []
        self.dir_index: list[int] = []
        # (digest, executable) -> its index in the blobs' group, a plain file's by its digest alone (looked
        # up by a column of digests, in C)
        blob_ids = list(blob_ids)
        keys = map(itemgetter(0), blob_ids) if not any(map(itemgetter(1), blob_ids)) else \
            [d if not exe else (d, True) for d, exe in blob_ids]
        self._blob_at = dict(zip(keys, range(len(blob_ids))))
        # Each blob's stat as the stat memo holds it (None: none), and a None last: the stat of no blob
        # (index -1). A file is linked only at its blob's stat and older than the racy window: then the
        # blobs' group records that stat too (not unproven). When that group has none unproven, a file at
        # its blob's stat is older than the window: not looked at again.
        self._blob_stats = [*blobs.sigs, None]
        self._blobs_older = blobs.proven()

    def sort(self, records: list[tuple[str, tuple]], placed: _Group, compared: list[tuple] = ()) -> None:
        """The placed `records` (`(record, (tree digest, files, directories))`): their directories into
        the placed directories' group, each file into this group if it can be linked, else into `placed`,
        at the lstat placement recorded. Records alike (a model's: the same files in the same
        directories) a column at a time: a file's path of all of them, its blobs and its stats, compared
        in C (a loop over the 100,000 files at 10,000 models was a good part of a stamp's writing). The
        columns are the place check's when it compared these very records, alike, in this order
        (`compared`: `outputs.Placed.compared`), else made of the records."""
        for paths, dir_paths, keys, kinds, digests, stats, dir_stats in _as_compared(records, compared) or \
                _alike(records):
            self._sort_alike(paths, dir_paths, keys, kinds, digests, stats, dir_stats, placed)

    def _sort_alike(self, paths: tuple[str, ...], dir_paths: tuple[str, ...], keys: list[str], kinds: list[str],
                    digests: list[str], stats: list[tuple], dir_stats: list[tuple], placed: _Group) -> None:
        """`sort` of records of one shape (these files and directories, in this order), given as columns
        (`_alike`): their keys; each file's kind, blob digest or link target, and stat, record by record;
        each directory's stat, record by record. Every test made on all of them at once, and a column
        taken from them as a slice: a pass per column and test, each a C call per entry, cost 80M
        instructions at 2,000 models."""
        horizon, dirs = self.horizon, self.dirs
        n, k, m = len(keys), len(paths), len(dir_paths)
        # The directories record by record (each record's together, as they were placed: their stats
        # compress better so), their paths made a column at a time and interleaved in C.
        start = len(dirs.paths)
        dirs.used(list(chain.from_iterable(zip(*(map(str.__add__, keys, repeat(f"/{d}")) if d else keys
                                                 for d in dir_paths)))), dir_stats)
        at = {d: j for j, d in enumerate(dir_paths)}  # a directory of the shape -> its column
        old_dirs = _older(dir_stats, horizon)  # of each, whether it is old enough to vouch for its files
        linkable = self.device[1] is not None and any(p.rpartition("/")[0] in at for p in paths)
        if linkable:
            if {*kinds} != {"f"}:  # an executable's blob by its digest and True; a link's target names none
                digests = [d if k == "f" else (d, True) if k != "l" else None for k, d in zip(kinds, digests)]
            blobs = list(map(self._blob_at.get, digests, repeat(-1)))
            # That blob's inode (its stat, not a copy's, nor unproven), older than the racy window.
            held = list(map(self._blob_stats.__getitem__, blobs))
            same = True if held == stats else list(map(eq, held, stats))
            fresh = True if same is True and self._blobs_older else _older(stats, horizon)
        for j, p in enumerate(paths):
            column = stats[j::k]
            parent, _, name = p.rpartition("/")
            linked: bool | list[bool] = False  # of each record, whether its file is linked (all, none, or a list)
            if linkable and parent in at:
                linked = True
                for also in (same, fresh, old_dirs):
                    if also is not True:
                        also = also[j::k] if also is not old_dirs else old_dirs[at[parent]::m]
                        linked = also if linked is True else list(map(and_, linked, also))
                if linked is not True:
                    linked = True if all(linked) else linked if any(linked) else False
            if linked is not False:
                index = self.names.setdefault(name, len(self.names))
                rows = range(start + at[parent], start + n * m, m)
                self.name_index += repeat(index, n if linked is True else linked.count(True))
                self.blob_index += blobs[j::k] if linked is True else compress(blobs[j::k], linked)
                self.dir_index += rows if linked is True else compress(rows, linked)
                if linked is True:
                    continue
            rest = list(map(not_, linked)) if linked is not False else repeat(True)
            placed.used(list(compress(map(str.__add__, keys, repeat(f"/{p}")), rest)), list(compress(column, rest)))

    def stored(self) -> list[list]:
        return [[self.base, "linked", list(self.names), *(packed_text(packed(index, "I")) for index in
                                                           (self.name_index, self.blob_index, self.dir_index)),
                 self.device]]


def _alike(records: list[tuple[str, tuple]]) -> list[tuple]:
    """The placed `records` (`_Linked.sort`) of each shape (these files, these directories, in this order), in
    order, in order of their first, as columns (`_Linked._sort_alike`). Each record's shape, its files and
    its directories made in C, a tuple of each (a chain of both cost a third more); the records of the first
    shape of the rest picked in C, each compared with it, while there are few shapes (a model's records are
    all of one: one pass, no shape hashed), else in a loop. Each shape's entries flattened in one pass
    (record by record, a dict's values in the shape's order) and a column taken of them in C."""
    values = list(map(itemgetter(1), records))
    shapes = list(zip(map(tuple, map(itemgetter(1), values)), map(tuple, map(itemgetter(2), values))))
    alike: dict[tuple, list] = {}
    while records:
        if len(alike) == _SHAPES:
            for shape, rec in zip(shapes, records):
                alike.setdefault(shape, []).append(rec)
            break
        shape = shapes[0]
        these = list(map(eq, shapes, repeat(shape)))
        if all(these):
            alike[shape] = records
            break
        alike[shape] = list(compress(records, these))
        others = list(map(not_, these))
        shapes, records = list(compress(shapes, others)), list(compress(records, others))
    columns = []
    for (paths, dir_paths), recs in alike.items():
        values = list(map(itemgetter(1), recs))
        # (kind, blob digest or link target, stat) of each file, record by record
        cells = list(chain.from_iterable(map(dict.values, map(itemgetter(1), values))))
        columns.append((paths, dir_paths, list(map(itemgetter(0), recs)),
                        *(list(map(itemgetter(i), cells)) for i in range(3)),
                        list(chain.from_iterable(map(dict.values, map(itemgetter(2), values))))))
    return columns


def _as_compared(records: list[tuple[str, tuple]], compared: list[tuple]) -> list[tuple] | None:
    """`_alike` of the placed `records` as the place check's columns (`outputs.Placed.compared`), or None
    when they are not `_alike`'s runs: consecutive runs of a shape joined, each shape must be one run, the
    runs must hold these very records (their values, the same objects: none placed again since), each
    once, in their order, the runs in the order of their first. At 10,000 models, making the columns of
    20,000 records again, and telling their shapes apart, was a third of sorting them."""
    if not compared:
        return None
    runs: list[tuple] = []
    for paths, kinds, dir_paths, keys, values, targets, file_stats, dir_stats in compared:
        paths, dir_paths = tuple(paths), tuple(dir_paths)
        if runs and runs[-1][:2] == (paths, dir_paths):
            columns = runs[-1][2:]
        else:
            columns = ([], [], [], [], [], [])
            runs.append((paths, dir_paths, *columns))
        for column, more in zip(columns, (keys, kinds * len(keys), targets, file_stats, dir_stats, values)):
            column += more
    # Where each run's records are among `records`: each once, in order, the runs by their first.
    at = dict(zip(map(itemgetter(0), records), range(len(records))))
    found = [list(map(at.get, run[2])) for run in runs]
    every = list(chain.from_iterable(found))
    if len({run[:2] for run in runs}) < len(runs) or len(every) != len(records) or None in every \
            or not all(all(map(lt, f, f[1:])) for f in found) \
            or not all(map(lt, (f[0] for f in found), (f[0] for f in found[1:]))) or len(set(every)) != len(records) \
            or not all(map(is_, chain.from_iterable(map(itemgetter(7), runs)),
                           map(itemgetter(1), map(records.__getitem__, every)))):
        return None
    return [run[:7] for run in runs]


def _sweep(dirs: list[str], root: Path) -> None:
    """What dead builds left in these temp directories (`atomic.sweep`, which tells a dead build's from a
    live one's by its lock): one listing of each, the rest only when one holds something. The stamp is
    not trusted with what to delete: they are swept only when they are this workspace's temp directories
    with the cache the first one is in (`workspace.temp_dirs`), and that cache carries tpbuild's marker
    (`workspace.is_cache`), so a damaged or hand-written stamp sweeps no directory a build would not."""
    for d in dirs:
        try:
            if os.listdir(d):
                break
        except OSError:  # not there (yet): nothing left in it
            continue
    else:
        return
    from . import atomic
    from .workspace import is_cache, temp_dirs

    cache = Path(dirs[0]).parent
    if list(map(str, temp_dirs(cache, root))) != dirs or not is_cache(cache):
        return
    for d in dirs:
        atomic.sweep(Path(d))


def _digest(content) -> str:
    """The digest of a stamp's content but for its generation (JSON data) that `incremental.remembered`
    compares: XXH3-128, as every local digest (`digest.py`; SHA-256 is the remote cache's, and loading
    OpenSSL for it cost an ordinary build 4 ms), of the content in a form that tells any two such values
    apart (a list of strings, the paths, joined by NUL, which no path, name or environment variable holds;
    a string whole, the packed stats; each with its type and length), not of its JSON text (encoding the
    stamp of 10,000 models to JSON cost as much as writing it)."""
    import xxhash

    h = xxhash.xxh3_128()

    def feed(v) -> None:
        if v.__class__ is str:
            h.update(b"s%d:" % len(v))
            h.update(v.encode("utf-8", "surrogatepass"))
        elif v.__class__ in (list, tuple):  # alike in JSON
            try:
                text = "\0".join(v)
            except TypeError:  # not only strings: each item
                h.update(b"[%d:" % len(v))
                for x in v:
                    feed(x)
            else:
                h.update(b"L%d:" % len(v))
                h.update(text.encode("utf-8", "surrogatepass"))
        elif v.__class__ is dict:
            h.update(b"{%d:" % len(v))
            for k, x in v.items():
                feed(k)
                feed(x)
        elif v is None or v.__class__ in (bool, int):
            h.update(b"r%s;" % repr(v).encode())
        else:
            raise TypeError(f"not a stamp's content: {v!r}")

    feed(content)
    return h.hexdigest()


def _as_known(paths):
    """Each path as `Stamp._groups` looks it up among the paths it knows a stat of: a directory named `dir/`
    as `dir`. Stripped only when some path ends so (none of a model's does): one search of them joined."""
    joined = "\0".join(paths)
    return map(str.rstrip, paths, repeat("/")) if "/\0" in joined or joined.endswith("/") else paths


def linked_path(group: list, dirs: list[str], j: int) -> str:
    """The path (from the base) of file `j` of a linked group (`_Linked`), given the placed directories'."""
    return f"{dirs[group[5][j]]}/{group[2][group[3][j]]}"


def _unlinked(group: list, blobs: tuple[int, set[int]] | None, dirs: tuple[int, set[int]] | None) -> list[int]:
    """The entries of a linked group (`_Linked`) their directory's and their blob's stats now do not prove,
    given, of the blobs' and the directories' groups, how many paths each holds and the indices of those
    not at the stat the stamp was made with (None for a group the check did not take). Each entry was
    linked at its blob's and its directory's stats as the stamp recorded them (`_Linked.sort`), so it is
    proven unless its blob or its directory moved since: known without comparing the stats of 60,000
    entries at 10,000 models."""
    base, _kind, _names, name_index, blob_index, dir_index, (store, device) = group
    # (A name index out of range is an IndexError where it is used: a damaged stamp too.)
    if name_index and not (len(blob_index) == len(dir_index) == len(name_index)
                           and (blobs is None or max(blob_index) < blobs[0])
                           and (dirs is None or max(dir_index) < dirs[0])):
        raise ValueError("a damaged stamp")
    if blobs is None or dirs is None or device is None or shared_device(store, base + OUT_DIR) != device:
        return list(range(len(name_index)))
    found = set()
    for moved, index in ((blobs[1], blob_index), (dirs[1], dir_index)):
        if len(moved) <= _FEW:  # each found by a search of the packed bytes (a delta build restates a few)
            packed_bytes = index.tobytes() if moved else b""
            for m in moved:
                found.update(positions(packed_bytes, index.typecode, m))
        else:  # picked in C
            found.update(compress(range(len(index)), map(moved.__contains__, index)))
    return sorted(found)


_FEW = 64  # moved blobs or directories up to this many: `_unlinked` searches for each
_SHAPES = 8  # placed records of up to this many shapes are sorted by shape in C (`_Linked.sort`)


def _older(stats: list[tuple], horizon: int) -> bool | list[bool]:
    """Of each stat, whether it is older than `horizon`: True when all are (a no-op's, found in one pass)."""
    mtimes = list(map(itemgetter(1), stats))
    return True if max(mtimes, default=0) < horizon else list(map(horizon.__gt__, mtimes))


def _unpack(groups: list) -> None:
    """The stamp's `packed` integers (see the module docstring) as arrays, in place: the stats of a stat
    group, the indices of a linked one. Raises ValueError, TypeError or IndexError for a damaged stamp."""
    for g in groups:
        if g[1] == "linked":
            g[3:6] = (unpacked(text, "I") for text in g[3:6])
        elif g[1] is not None:
            g[3] = unpacked(g[3])


def _stats(stat, base: str, paths: list[str]) -> array:
    """`stat_sig` of each path (`stat` of `base + path`), flattened and `packed`, in C: a Python loop cost a
    third more at 10,000 models. Raises OSError for a path that is not there."""
    return packed_sigs(map(stat_sig, map(stat, map(base.__add__, paths))))


def _differing(now: list[int], recorded: list[int]) -> list[tuple[int, tuple]]:
    """The paths (their index) whose stat in `now` is not the one `recorded`, with it: compared a block at
    a time in C, path by path only within a block that differs (an edit changes a few paths of 100,000)."""
    found = []
    for b in range(0, len(now), _BLOCK):
        if now[b:b + _BLOCK] != recorded[b:b + _BLOCK]:
            found += ((i // 4, stat_at(now, i // 4)) for i in range(b, min(b + _BLOCK, len(now)), 4)
                      if now[i:i + 4] != recorded[i:i + 4])
    return found


_BLOCK = 4 * 256  # integers compared at a time by `_differing`: 256 stats


def _apply(group: list, paths: list[str], stats: list[int], indices: list[int]) -> set[int]:
    """Amend a stat group (`[base, follow, paths, stats]`, its stats `packed`) with a patch's group
    (`Stamp.patch_with`): the stats of `paths` at `indices`, those past its end added; the indices of
    the paths it held whose stat it restated. Raises ValueError for a patch not of this group."""
    _base, _follow, have, recorded = group
    held = len(have)
    stats = packed(stats)
    if not len(paths) == len(indices) == len(stats) // 4 or len(stats) % 4:
        raise ValueError("a damaged patch")
    for j, (p, i) in enumerate(zip(paths, indices)):
        if i == len(have):
            have.append(p)
            recorded += stats[4 * j:4 * j + 4]
        elif 0 <= i < held and have[i] == p:
            recorded[4 * i:4 * i + 4] = stats[4 * j:4 * j + 4]
        else:
            raise ValueError("a damaged patch")
    return {i for i in indices if i < held}
