"""The placed trees as the last stamped build left them: when none moved, the ordinary path's check of
tpbuild-out and the no-op stamp's sorting of the placed files are both answered by one comparison.

The no-op stamp (`noop.py`) records every placed file and directory, in three of its groups: the
placed directories at their lstats, the files that are hardlinks of blobs (`noop._Linked`: proven by
their directory's stat and their blob's), and the other files at their lstats. Without the stamp (it
was removed, or a difference it cannot answer sent the build down the ordinary path), the ordinary
path checks each placed tree against its record in the build state (`outputs.in_place_all`) and the
stamp then sorts each file into those groups again (`noop._Linked.sort`): at 10,000 models, 20,000 trees,
40,000 directories and 60,000 files, a quarter of a no-op build without its stamp.

So the stamp also leaves this memo (`PlacedMemo.remember`): those three groups as it stored them, the keys of the
records they were made of with their tree digests, a digest of those records' texts in the build
state, and what the linked files' proof rests on besides their directories: the blobs' group (the
stats the settle memo found them whole at, and their names) and the store's device. The ordinary path's
proof of placed trees (`outputs.Proof`, `PlacedMemo`) then holds every tree of the memo when, now:
- each of those records' text in the build state is the one recorded (the same files, blobs, link
  targets, stats, and tree digest);
- each placed directory and each file that is no link is at the lstat the stamp recorded (taken by the
  prefetch helper where it took them, as the file-by-file check would), none of which was recorded
  unproven (within the racy window), since the memo is written only when none was;
- the blobs were all found whole at the stats the memo names (`build.BuildResult.blobs`: every result
  settled with the settle memo's blobs, `cas.Cas.whole_at`), in the same order, from the same store on
  the same device: so every linked file, in an unchanged directory, is still that blob's inode at
  that stat (`noop._Linked`'s argument).
Those are exactly the stamp's proofs of these groups, so the tree holds what the file-by-file check
would find. Any difference is nothing known: each tree is checked as it always was (`fallback`).

And when the premise held and the build placed nothing, the stamp's three groups are the ones
recorded (the same records, stats and blobs make the same groups): the stamp takes them as they are
(`PlacedMemo.groups`) instead of sorting the files again.

Format: `tpbuild-out/.tpbuild/placed`, a memo (`memo.py`) of kind `placed`: {"tops", "keys", "digests", "texts",
"blobs": [stats text, names digest], "device": [store, device], "groups": {role: the stamp's stored
group}}. Written atomically after the stamp; a kill leaves the last one, which is checked as any.
"""

from __future__ import annotations

from itertools import repeat
from pathlib import Path

from xxhash import xxh3_128

from . import memo
from .layout import packed_sigs, shared_device, unpacked

KIND, VERSION = "placed", 1
FILE = "placed"  # in the state directory, beside the stamp
ROLES = ("placed", "placed_dirs", "linked")  # the stamp's groups it holds (`noop.Stamp._groups`)
_TOP = ("", "/")  # a tree's top directory as the place check asks about it: its record's key and a slash


def digest_of(texts: list[str]) -> str:
    """The digest of a column of texts (the records' texts, the blobs' names), none of them holding a NUL."""
    return xxh3_128("\0".join(texts).encode(errors="surrogatepass")).hexdigest()


def keys(state, tops: list[str]) -> list[str]:
    """The records of the outputs at `tops` in the build state `state`, each output's own and then those
    below it (its parts), as `outputs.Placed.records` lists them, by key alone (none decoded)."""
    found: list[str] = []
    start = 0
    for i, below in state.recorded_below_all(tops).items():
        found += tops[start:i + 1]
        found += below
        start = i + 1
    found += tops[start:]
    return found


class PlacedMemo:
    """The ordinary path's proof of placed trees (`outputs.Proof`): those of the memo when its premise
    holds (see the module docstring), checked at the first question; `fallback` (`build._Linked`) for
    any other tree, and for every one when the premise does not hold."""

    def __init__(self, path: Path, fallback, state, prefetched, base: str, blobs: tuple | None, device: list):
        self.path = path
        self._fallback = fallback
        self._state = state  # outputs.BuildState
        self.prefetched = prefetched  # prefetch.Prefetch or None: the placed directories' lstats
        self._base = base  # the workspace's root, with a slash
        self._blobs = blobs  # `build.BuildResult.blobs`
        self._device = device  # [store, its device shared with tpbuild-out]
        self._held: dict[str, str] | None = None  # record -> its tree digest, of a premise that holds
        self.tops: list[str] | None = None  # the outputs whose records those are (the stamp's), when it holds
        self.groups: dict[str, list] | None = None  # the stamp's groups it recorded, when it holds

    @property
    def held(self) -> int:
        """How many trees the premise vouched for (0: it did not hold, or was not asked)."""
        return len(self._held or ())

    def holds(self, rel: str, digest: str) -> bool:
        if self._held is None:
            self._held = self._check()
        return self._held.get(rel) == digest or (self._fallback is not None and self._fallback.holds(rel, digest))

    def intact(self, rel: str, record: tuple) -> bool:
        return self._fallback is not None and self._fallback.intact(rel, record)

    def vouch(self, kinds: list[str], targets: list[str], dirs: list[str]) -> tuple[list, list] | None:
        return None if self._fallback is None else self._fallback.vouch(kinds, targets, dirs)

    def kept(self, tops: list[str]) -> dict[str, list] | None:
        """The stamp's placed groups as the memo holds them, when they are those of the outputs at `tops`
        now: the premise held for those very outputs, and this build placed nothing since."""
        if self.held and self.tops == tops and not self._state.placed_now:
            return self.groups
        return None

    def remember(self, tops: list[str], placed: list[tuple[str, tuple]], groups: dict[str, list]) -> None:
        """Remember this build's stamp's placed groups (`groups`, role -> stored form) with what they rest
        on: the records they were made of (`placed`, `outputs.Placed.records` of the outputs at `tops`, and
        their texts in the build state), the blobs (`build.BuildResult.blobs`) and the store's device
        (`noop._Linked`). Not written (and an older one removed) when a text is not known or the blobs were
        not all found whole at the settle memo's stats: the next ordinary build then checks each tree."""
        from . import atomic

        found = [k for k, _v in placed]
        texts, blobs = self._state.outputs.texts(found), self._blobs
        if blobs is None or blobs[3] is None or None in texts:
            atomic.unlink(str(self.path))
            return
        value = {"tops": tops, "keys": found, "digests": [v[0] for _k, v in placed], "texts": digest_of(texts),
                 "blobs": [blobs[3], digest_of(blobs[1])], "device": self._device, "groups": groups}
        memo.save(self.path, KIND, VERSION, value, self.path.parent / "tmp", "the placed trees' memo", depth=1)

    def _check(self) -> dict[str, str]:
        """Record -> tree digest of every record of the memo, if its premise holds now; else {}."""
        m = memo.load(self.path, KIND, VERSION)
        try:
            tops, found, digests, texts, blobs, device, groups = (m[k] for k in (
                "tops", "keys", "digests", "texts", "blobs", "device", "groups"))
            named = self._blobs
            if named is None or named[3] is None or blobs != [named[3], digest_of(named[1])] or device != self._device \
                    or len(found) != len(digests) or groups.keys() != set(ROLES) or keys(self._state, tops) != found:
                return {}
            now = self._state.outputs.texts(found)
            if None in now or digest_of(now) != texts:
                return {}
            # The files first: the helper stats the directories meanwhile (it stats no file of a tree).
            records = set(found)
            if not (self._stats(groups["placed"]) and self._stats(groups["placed_dirs"], lambda paths: list(map(
                    str.__add__, paths, map(_TOP.__getitem__, map(records.__contains__, paths)))))):
                return {}
        except (TypeError, KeyError, ValueError, AttributeError, OSError):  # not a memo this code wrote, or a path gone
            return {}
        self.tops, self.groups = tops, groups
        return dict(zip(found, digests))

    def _stats(self, group: list, asked=None) -> bool:
        """Whether each path of one of the stamp's stored lstat groups (`noop._Group.stored`: [base, False, paths,
        stats text]) is at its recorded lstat now: lstat'ed here, or, the placed directories (`asked`: each path
        as the place check asks the helper about it), by the helper where it took them."""
        from . import prefetch

        base, follow, paths, text = group
        if base != self._base or follow is not False or not all(map(isinstance, paths, repeat(str))):
            return False
        if not paths:
            return True
        if asked is None or self.prefetched is None:
            now = prefetch.lstat_sigs(base, paths if asked is None else asked(paths))
        else:
            now = self.prefetched.lstat_sigs(base, asked(paths), wait=True)
        return packed_sigs(now) == unpacked(text)


def device(store: str, out: str) -> list:
    """The store and the device it shares with tpbuild-out (None: none), as the stamp records them (`noop._Linked`)."""
    return [store, shared_device(store, out)]
