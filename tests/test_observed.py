"""The stats the no-op stamp's check took, handed to the ordinary path (tpbuild/observed.py), and
package discovery remembered between builds (tpbuild/discovery.py): a build after an edit stats and
lists nothing the check already saw unchanged, and still notices every kind of change."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from test_noop import _delete_blob, _delete_output, _edit_source, _new_package, _salt, _settle, stamped  # noqa: F401

from tpbuild.layout import sig
from tpbuild.observed import Observed


def _observing(ws):
    """A build with --report after a change: the stamp does not answer it, but its stats are taken."""
    r = ws.build(check=True)
    files = r.report["files"]
    assert files["stats"]["reused"] > 0, files  # the check's stats were handed over
    return r, files


def test_an_edit_stats_and_lists_nothing_the_stamp_saw_unchanged(stamped):
    p = stamped.root / "models/m/1/model.py"
    t = os.stat(p).st_mtime_ns
    p.write_text(p.read_text() + "# edited\n")
    os.utime(p, ns=(t, t - 10**9))  # settled, so that its stat too is the check's
    r, files = _observing(stamped)
    # A source alone changed: a delta build (incremental.py), which does not even look for packages.
    assert r.report["execution"]["path"] == "delta", r.report["execution"]
    assert files["discovery"] == "skipped" and files["dirs_scanned"] == 0, files
    assert files["stats"]["taken"] == 0, files
    assert r.report["analysis"]["reanalysed_packages"] == 0
    assert stamped.out("models/m/m/1/model.py").read_text() == p.read_text()
    # The same build without a stamp stats for itself, and finds the package list by stats too.
    os.unlink(stamped.root / "tpbuild-out/.tpbuild/noop")
    files = stamped.build(check=True).report["files"]
    assert files["stats"]["reused"] == 0 and files["stats"]["taken"] > 0, files
    assert files["discovery"] == "reused", files


def _new_manifest(ws):
    ws.write("docs/BUILD.toml", """
        [genrule.notes]
        srcs = ["notes.txt"]
        outs = ["n.txt"]
        cmd = "cp $SRCS $OUT"
    """)
    return lambda: ws.out("docs/notes/n.txt").read_text() == "notes\n"


def _removed_manifest(ws):
    os.unlink(ws.root / "tools/BUILD.toml")
    return lambda: not ws.out("tools/t").exists()


def _deleted_package_dir(ws):
    shutil.rmtree(ws.root / "tools")
    return lambda: not ws.out("tools/t").exists()


def _ignored_by_tpbuild_toml(ws):
    (ws.root / "tpbuild.toml").write_text('[workspace]\nignore = ["tools"]\n')
    return lambda: not ws.out("tools/t").exists()


def _edited_output(ws):
    p = ws.out("shared/labels/labels.txt")
    os.chmod(p, 0o644)
    p.write_text("x\ny\n")
    return lambda: p.read_text() == "a\nb\n"


def _racy_edit(ws):
    """Rewritten twice within the timestamp granularity, the same size and mtime: only the racy window
    tells the second from the first. (Dated a minute ahead: within the racy window of the first build
    however slow the machine.)"""
    p = ws.root / "shared/classes.txt"
    p.write_text("c\na\n")
    future = time.time_ns() + 60 * 10**9
    os.utime(p, ns=(future, future))
    first = ws.build(check=True)
    assert ws.out("shared/labels/labels.txt").read_text() == "a\nc\n", first.output
    st = os.stat(p)
    p.write_text("d\na\n")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sig(str(p)) == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)
    return lambda: ws.out("shared/labels/labels.txt").read_text() == "a\nd\n"


def _checked(change):
    """A change from test_noop, with its check reduced to the output being right."""
    return lambda ws: (lambda check: lambda: check()[0])(change(ws))


@pytest.mark.parametrize("change", [_new_manifest, _removed_manifest, _checked(_new_package), _deleted_package_dir,
                                    _checked(_edit_source), _edited_output, _checked(_delete_output),
                                    _checked(_delete_blob), _racy_edit, _ignored_by_tpbuild_toml, _checked(_salt)],
                         ids=["new-manifest", "removed-manifest", "new-package-dir", "deleted-package-dir",
                              "source-edit", "output-edited", "output-deleted", "blob-evicted", "racy-edit",
                              "tpbuild-toml-ignore", "tpbuild-toml-salt"])
def test_every_change_is_noticed_through_the_stamps_stats(stamped, change):
    check = change(stamped)
    r, _ = _observing(stamped)
    assert check(), r.output
    again = stamped.build(check=True)  # and the build after it: nothing left to do
    assert all(o["status"] != "executed" for o in again.report["actions"]), again.output


def test_a_stat_within_the_racy_window_is_not_handed_over(tmp_path):
    """It does not vouch for the content read after it: the memo asking takes its own stat."""
    settled, fresh, folder = tmp_path / "settled", tmp_path / "fresh", tmp_path / "dir"
    settled.write_text("a")
    fresh.write_text("b")
    folder.mkdir()
    observed = Observed(horizon=2 * 10**18)
    observed.add("", [str(settled), str(fresh), f"{folder}/"], [1, 10**18, 7, 0o100644, 1, 3 * 10**18, 0, 0o100644,
                                                               0, 10**18, 9, 0o40755])
    assert observed.sig(str(settled)) == (1, 10**18, 7, 0o100644)  # the check's, though the file is newer now
    assert observed.sig(str(fresh)) == sig(str(fresh))  # too fresh: taken again
    assert observed.sig(str(folder)) == (0, 10**18, 9, 0o40755)  # `dir` and `dir/`: one directory
    assert (observed.reused, observed.taken) == (2, 1)


def test_a_blob_found_evicted_is_made_again_by_its_action_alone(stamped):
    """The check found it absent (an absence is not handed over: the build stores it again), and its
    readers, whose keys do not move, are not run again."""
    _delete_blob(stamped)
    r, _ = _observing(stamped)
    ran = sorted(a["target"] for a in r.report["actions"] if a["status"] == "executed")
    assert ran == ["//shared:labels"], r.output


@pytest.mark.parametrize("damage", [False, True])
def test_discovery_without_a_stamp_lists_what_moved(stamped, damage):
    """The discovery memo alone (no stamp): a new package is found by listing the directory that
    moved; a damaged memo is not used (everything is listed again)."""
    os.unlink(stamped.root / "tpbuild-out/.tpbuild/noop")
    memo = stamped.root / "tpbuild-out/.tpbuild/packages"
    if damage:
        memo.write_bytes(memo.read_bytes().replace(b'"dirs":["",', b'"dirs":["../x",'))
    check = _new_manifest(stamped)
    files = stamped.build(check=True).report["files"]
    assert check()
    assert files["discovery"] == ("walked" if damage else "rescanned"), files
    assert damage or files["dirs_scanned"] < 5, files
    assert stamped.build(check=True).report["files"]["discovery"] in ("reused", "rescanned")


def test_a_path_asked_for_after_the_tables_are_dropped_is_stated_again(tmp_path):
    """`Observed.forget` (once a build has run its actions): later answers are the file's own stat."""
    f = tmp_path / "f"
    f.write_text("now")
    observed = Observed(horizon=2 * 10**18)
    observed.add("", [str(f)], [1, 10**18, 7, 0o100644])
    observed.add_kind(str(tmp_path / "gone"), (0o40000,))
    assert observed.sig(str(f)) == (1, 10**18, 7, 0o100644)
    observed.forget()
    assert observed.sig(str(f)) == sig(str(f)) != (1, 10**18, 7, 0o100644)
    assert observed.observe(str(tmp_path / "gone"), (0o40000,)) is None  # taken again: absent
    assert (observed.reused, observed.taken) == (1, 2)


def test_the_build_after_an_edit_hands_its_stats_to_the_next_edit(stamped):
    """A build that executed leaves a stamp too (its fresh entries unproven, noop.py): the next edit's
    build takes the unchanged files' stats from its check instead of stat'ing them again."""
    from test_noop import _build

    _edit_source(stamped)
    assert not _build(stamped)[1]  # executed, and stamped
    (stamped.root / "shared/classes.txt").write_text("d\nc\nb\na\n")
    r, files = _observing(stamped)
    assert stamped.out("shared/labels/labels.txt").read_text() == "a\nb\nc\nd\n", r.output
    assert r.report["execution"]["path"] == "delta" and files["discovery"] == "skipped", files


def test_without_a_stamp_a_stat_the_analysis_memo_took_answers_the_next_memo_once(tmp_path):
    """No stamp: the stat `observe` took (the analysis memo's check of a file it watches) is the one the
    next memo asking for it gets (the stat memo's check of a source), once; a stat within the racy
    window of the object's making, a path that is not there and the tables dropped (`forget`) are
    stat'ed again."""
    settled, fresh, gone = tmp_path / "settled", tmp_path / "fresh", tmp_path / "gone"
    settled.write_text("a")
    fresh.write_text("b")
    t = os.stat(settled).st_mtime_ns
    os.utime(settled, ns=(t - 3 * 10**9, t - 3 * 10**9))
    os.utime(fresh, ns=(t + 60 * 10**9, t + 60 * 10**9))  # within the racy window however slow the machine
    observed = Observed()
    taken = observed.observe(str(settled), (1, 0, 0, 0o100644))
    assert taken == sig(str(settled))
    assert observed.observe(str(fresh), None) == sig(str(fresh))
    assert observed.observe(str(gone), None) is None
    settled.write_text("changed")  # after the analysis memo's check: the build is one that looked a moment earlier
    assert observed.sig(str(settled)) == taken != sig(str(settled))
    assert observed.sig(str(settled)) == sig(str(settled))  # once
    fresh.write_text("bigger")
    assert observed.sig(str(fresh)) == sig(str(fresh))  # within the racy window: not handed over
    gone.write_text("new")
    assert observed.sig(str(gone)) == sig(str(gone))  # absent when observed: not handed over
    assert (observed.reused, observed.taken) == (0, 6)
    os.utime(fresh, ns=(t - 3 * 10**9, t - 3 * 10**9))
    observed.observe(str(fresh), None)
    observed.forget()
    assert observed.sig(str(fresh)) == sig(str(fresh))
    assert observed.taken == 8


def test_a_discovery_memo_of_the_last_version_is_a_clean_miss(stamped):
    """Version 2 held its stats as a list of JSON numbers, version 3 as one packed text: a version-2 memo
    (or a version-3 one whose stats are not such a text) is not used, everything is listed again."""
    from tpbuild import discovery, memo
    from tpbuild.layout import unpacked

    path = stamped.root / "tpbuild-out/.tpbuild/packages"
    data = memo.load(path, discovery.KIND, discovery.VERSION)
    data["stats"] = list(unpacked(data["stats"]))
    for version in (2, discovery.VERSION):
        (stamped.root / "tpbuild-out/.tpbuild/noop").unlink(missing_ok=True)  # the ordinary path: it discovers
        memo.save(path, discovery.KIND, version, data, path.parent / "tmp", "the test's discovery memo")
        assert stamped.build(check=True).report["files"]["discovery"] == "walked"
        assert stamped.build(check=True).report["files"]["discovery"] == "reused"
