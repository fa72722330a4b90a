"""The stat memo (tpbuild/statcache.py) in-process, on real files in a temp dir: when a file's digest
comes from its stat alone and when the file is read again. The builds that rely on it are covered
through the CLI (tests/test_engine.py); the racy case is decided here, where a clock-free check is exact."""

from __future__ import annotations

import os
import time

from tpbuild import digest, statcache
from tpbuild.statcache import StatCache


def reads(monkeypatch) -> list[str]:
    """The files the memo hashes from now on (those it does not answer from the stat)."""
    seen: list[str] = []
    real = digest.of_file

    def counting(path, *a, **kw):
        seen.append(str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(statcache.digest, "of_file", counting)
    return seen


def test_a_same_size_rewrite_within_the_racy_window_is_read_again(tmp_path, monkeypatch):
    """git's racy clean: hashed in the same timestamp tick as written, rewritten with the same size and
    mtime: the stat cannot tell, so such an entry is not persisted and the next run reads the file.
    (Dated a minute ahead: within the racy window of the hash however slow the machine.)"""
    f = tmp_path / "names.txt"
    f.write_text("cat\ndog\n")
    future = time.time_ns() + 60 * 10**9
    os.utime(f, ns=(future, future))
    memo = tmp_path / "memo"
    first = StatCache(memo)
    before, _ = first.digest(str(f))
    assert first.save() is None
    st = f.stat()
    f.write_text("cow\nant\n")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    seen = reads(monkeypatch)
    after, _ = StatCache(memo).digest(str(f))
    assert seen == [str(f)] and after == digest.of_bytes(b"cow\nant\n") != before


def test_a_settled_file_is_answered_from_its_stat_and_a_changed_one_is_read(tmp_path, monkeypatch):
    settled, edited = tmp_path / "settled.txt", tmp_path / "edited.txt"
    old = time.time() - 60  # older than the racy window: the stat is trusted
    for f in (settled, edited):
        f.write_text("x\n")
        os.utime(f, (old, old))
    memo = tmp_path / "memo"
    first = StatCache(memo)
    for f in (settled, edited):
        first.digest(str(f))
    assert first.save() is None
    edited.write_text("xy\n")
    seen = reads(monkeypatch)
    again = StatCache(memo)
    assert again.digest(str(settled))[0] == digest.of_bytes(b"x\n")
    assert again.digest(str(edited))[0] == digest.of_bytes(b"xy\n")
    assert seen == [str(edited)]


def test_many_files_at_once_are_answered_as_one_at_a_time(tmp_path, monkeypatch):
    """`digests` (a no-op build's sources and blobs, by column) answers each file as `digest` does:
    from the stat when it is the recorded one, read again when it moved, None when it is gone."""
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name)
    memo = tmp_path / "memo"
    first = StatCache(memo)
    base = f"{tmp_path}/"
    recorded = first.digests(["a", "b", "c"], base)
    assert list(zip(*recorded)) == [first.digest("a", base + "a"), first.digest("b", base + "b"),
                                    first.digest("c", base + "c")]
    assert first.save() is None
    old = time.time_ns() - 10**10  # older than the racy window: the memo keeps it
    for name in ("a", "b", "c"):
        os.utime(tmp_path / name, ns=(old, old))
    again = StatCache(memo)
    again.digests(["a", "b", "c"], base)
    assert again.save() is None
    (tmp_path / "b").write_text("B!")
    (tmp_path / "c").unlink()
    seen = reads(monkeypatch)
    (a, b, c), sigs = StatCache(memo).digests(["a", "b", "c"], base)
    assert seen == [base + "b"]  # a from its stat; b moved, read again; c gone
    assert a == digest.of_bytes(b"a") and b == digest.of_bytes(b"B!") and c is None and sigs[2] is None


def test_the_stats_files_were_found_whole_at_are_their_entries_unless_racy(tmp_path):
    """`proven` (the no-op stamp's blobs) answers as `peeks` after the save: a file found at a stat is
    entered at it, one hashed within the racy window is not kept, one not found is looked up."""
    old, fresh, other = (tmp_path / n for n in ("old", "fresh", "other"))
    for f in (old, fresh, other):
        f.write_text(f.name)
    past = time.time_ns() - 10 * statcache.RACY_WINDOW_NS
    for f in (old, other):
        os.utime(f, ns=(past, past))
    future = time.time_ns() + 60 * 10**9  # within the racy window of the hash however slow the machine
    os.utime(fresh, ns=(future, future))
    memo = tmp_path / "memo"
    first = StatCache(memo)
    first.digest(str(other))
    assert first.save() is None
    cache = StatCache(memo)
    paths = [str(old), str(fresh), str(other)]
    found = [cache.digest(str(old))[1], cache.digest(str(fresh))[1], None]
    assert cache.save() is None
    assert cache.proven(paths, found) == cache.peeks(paths) == [found[0], None, first.peek(str(other))]
