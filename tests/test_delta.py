"""An edit costs what it changes (tpbuild/delta.py): the actions whose key did not move are settled
from the build state before the scheduler runs, the rest are keyed by it, and nothing that can move an
output's bytes is passed over. Counted through the report's `"execution"`: actions `settled` from the
state, actions `keyed` by the scheduler, outputs `placed`."""

from __future__ import annotations

import json
import os
import stat
import time
from array import array
from pathlib import Path

import pytest
from conftest import Run
from test_incremental import _scripted

from tpbuild import action, build, cas, code, critical, delta, outputs, workspace
from tpbuild.analysis import analyze
from tpbuild.layout import packed_text, stat_at
from tpbuild.outputs import BuildState, cache_id
from tpbuild.statcache import StatCache

ACTIONS = 4  # up, down, other, cut


@pytest.fixture
def built(ws):
    ws.write("a.txt", "a1\n")
    ws.write("b.txt", "b1\n")
    ws.write("BUILD.toml", """
        [genrule.up]
        srcs = ["a.txt"]
        outs = ["up.txt"]
        cmd = "cat $SRCS > $OUT"

        [genrule.down]
        srcs = [":up"]
        outs = ["down.txt"]
        cmd = "tr a-z A-Z < $SRCS/up.txt > $OUT"

        [genrule.other]
        srcs = ["b.txt"]
        outs = ["other.txt"]
        cmd = "head -c 1 $SRCS > $OUT"

        [genrule.cut]
        srcs = [":other"]
        outs = ["cut.txt"]
        cmd = "cat $SRCS/other.txt > $OUT"
    """)
    first = ws.build(check=True)
    assert first.report["execution"] == {"path": "ordinary", "settled": 0, "keyed": ACTIONS, "placed": ACTIONS, "placed_parts": 0,
                                       "placed_memo": 0}
    return ws


def execution(run) -> tuple[int, int, int]:
    e = run.report["execution"]
    return e["settled"], e["keyed"], e["placed"]


def test_a_noop_settles_every_action_and_places_nothing(built):
    again = built.build(check=True)
    assert execution(again) == (ACTIONS, 0, 0)
    assert set(again.statuses("cached")) == {f"//:{t}%Genrule" for t in ("up", "down", "other", "cut")}


def test_an_edited_source_keys_only_the_actions_downstream_of_it(built):
    built.write("a.txt", "a2\n")
    run = built.build(check=True)
    assert execution(run) == (2, 2, 2)
    assert sorted(run.statuses("executed")) == ["//:down%Genrule", "//:up%Genrule"]
    assert built.out("down/down.txt").read_text() == "A2\n"


def test_an_upstream_re_run_to_the_same_bytes_leaves_its_readers_hits(built):
    built.write("b.txt", "b2\n")  # `other` keeps the first byte only: the same bytes as before
    run = built.build(check=True)
    assert execution(run) == (2, 2, 0)  # other and cut keyed; no output changed
    assert run.statuses("executed") == ["//:other%Genrule"] and "//:cut%Genrule" in run.statuses("cached")


def test_a_manifest_edit_keys_the_actions_it_changes(built):
    text = (built.root / "BUILD.toml").read_text()
    (built.root / "BUILD.toml").write_text(text.replace("head -c 1", "head -c 2"))
    run = built.build(check=True)
    assert execution(run) == (2, 2, 2)
    assert sorted(run.statuses("executed")) == ["//:cut%Genrule", "//:other%Genrule"]
    assert built.out("cut/cut.txt").read_text() == "b1"


def test_a_deleted_or_edited_placed_output_is_put_back(built):
    out = built.out("down/down.txt")
    out.unlink()
    run = built.build(check=True)
    assert execution(run) == (ACTIONS, 0, 1)  # restored from the store, nothing ran
    assert out.read_text() == "A1\n"
    os.chmod(out, stat.S_IWUSR | stat.S_IRUSR)  # an edit in place, through the hardlink into the store
    out.write_text("HACKED\n")
    run = built.build(check=True)
    assert run.statuses("executed") == ["//:down%Genrule"]
    assert "no longer matched its content" in run.output
    assert out.read_text() == "A1\n"


def test_an_evicted_blob_is_made_again(built):
    store = cas.Cas(built.cache)
    (entry,) = BuildState(built.root / "tpbuild-out/.tpbuild/state", cache_id(built.cache)).actions[
        "//:up%Genrule"].entries
    store.path(entry.digest, entry.executable).unlink()
    run = built.build(check=True)
    assert run.statuses("executed") == ["//:up%Genrule"]  # its reader's key did not move: a hit
    assert "//:down%Genrule" in run.statuses("cached")
    assert store.path(entry.digest, entry.executable).exists()


def test_a_salt_or_path_change_settles_nothing(built):
    (built.root / "tpbuild.toml").write_text('[cache]\nsalt = "2"\n')
    assert execution(built.build(check=True))[:2] == (0, ACTIONS)
    path = f"{Path(os.__file__).parent}:{os.environ['PATH']}"  # another PATH: it enters every run action's key
    assert execution(built.build(check=True, env={"PATH": path}))[:2] == (0, ACTIONS)


def test_engine_code_and_key_version_settle_nothing(built, monkeypatch):
    """In process: what settles is decided by the key itself, so whatever moves every key (the
    engine's code, the key version) settles nothing."""
    ws = workspace.load(built.root)
    memo = workspace.memo_dir(built.cache, ws.root)
    analysis = analyze(ws, ["//..."], memo)

    def settled() -> set[str]:
        state = BuildState(ws.root / "tpbuild-out/.tpbuild/state", cache_id(built.cache))
        stats = StatCache(memo / "statcache")
        return set(delta.settle(analysis.declared, state, stats, cas.Cas(built.cache, stats), ws.root,
                                ws.cache.salt))

    assert len(settled()) == ACTIONS
    monkeypatch.setattr(code, "engine", lambda: "xxh3_128:" + "0" * 32)
    assert settled() == set()
    monkeypatch.undo()
    monkeypatch.setattr(action, "KEY_VERSION", action.KEY_VERSION + 1)
    assert settled() == set()


def test_an_action_declared_before_one_it_reads_from_is_settled_all_the_same(built, monkeypatch):
    """In process: analysis declares a target's actions after its dependencies', and `delta.settle`
    walks them as declared, without a walk of the graph; should an action come before one it reads from
    (a rule may declare them so), the graph is walked and the same actions settle, at the same keys."""
    ws = workspace.load(built.root)
    memo = workspace.memo_dir(built.cache, ws.root)
    analysis = analyze(ws, ["//..."], memo)
    walks = []
    topological = critical.topological
    monkeypatch.setattr(critical, "topological", lambda declared: walks.append(1) or topological(declared))

    def settled(declared) -> dict[str, str]:
        state = BuildState(ws.root / "tpbuild-out/.tpbuild/state", cache_id(built.cache))
        stats = StatCache(memo / "statcache")
        return {aid: o.key for aid, o in delta.settle(declared, state, stats, cas.Cas(built.cache, stats), ws.root,
                                                      ws.cache.salt).items()}

    forward = settled(analysis.declared)
    assert len(forward) == ACTIONS and not walks
    assert settled(dict(reversed(analysis.declared.items()))) == forward and walks == [1]


def test_a_placed_link_is_proven_by_its_directory_and_its_blob(built, monkeypatch):
    """The ordinary path's check of a placed tree (build._linked): every file a hardlink of a blob this
    build verified at the file's recorded stat, every directory at its recorded stat and older than the
    racy window; anything else is left to the file-by-file check."""
    root = built.root
    stats = StatCache(workspace.memo_dir(built.cache, root) / "statcache")
    store = cas.Cas(built.cache, stats)
    rel = "tpbuild-out/down"
    rec = BuildState(root / "tpbuild-out/.tpbuild/state", cache_id(built.cache)).outputs[rel]
    later = time.time_ns() + 3 * 10**9
    monkeypatch.setattr(build.time, "time_ns", lambda: later)  # the tree placed more than 2 s ago
    proven = build._Linked(root, store)
    assert not proven.intact(rel, rec)  # its blob not verified by this build
    for kind, d, _s in rec[1].values():
        assert store.verify(d, kind == "x")
    assert proven.intact(rel, rec) and not proven.holds(rel, rec[0])
    monkeypatch.undo()
    assert not build._Linked(root, store).intact(rel, rec)  # its directories placed within the racy window
    monkeypatch.setattr(build.time, "time_ns", lambda: later)
    d = root / rel
    mode = d.stat().st_mode
    os.chmod(d, 0o755)
    (d / "extra.txt").write_text("x")  # an entry added: its directory's mtime moved
    os.chmod(d, mode)
    assert not build._Linked(root, store).intact(rel, rec)


def test_trees_proven_together_leave_out_the_one_damaged(built, monkeypatch):
    """The ordinary path proves the settled trees together (outputs.in_place_all: each record compared as
    text with the record of its tree at the stats build._Linked vouches for, a column of lstats and a
    column of blob stats at a time): one tree damaged among them is found and looked at alone, the others
    still in place and none of them decoded; so is a tree whose file was replaced by a copy of the same
    bytes (its directory's mtime moved)."""
    root = built.root
    stats = StatCache(workspace.memo_dir(built.cache, root) / "statcache")
    store = cas.Cas(built.cache, stats)
    state = BuildState(root / "tpbuild-out/.tpbuild/state", cache_id(built.cache))
    outs = [(f"tpbuild-out/{t}", state.actions[f"//:{t}%Genrule"].result(tuple)) for t in ("up", "down", "other", "cut")]
    for _rel, tree in outs:
        for e in tree:
            assert store.verify(e.digest, e.executable)
    later = time.time_ns() + 3 * 10**9
    monkeypatch.setattr(build.time, "time_ns", lambda: later)  # the trees placed more than 2 s ago
    asked = []
    intact = build._Linked.intact
    monkeypatch.setattr(build._Linked, "intact", lambda self, rel, rec: asked.append(rel) or intact(self, rel, rec))
    every = {rel for rel, _tree in outs}
    assert outputs.in_place_all(state, root, outs, build._Linked(root, store)) == every
    assert asked == []  # each compared as text
    fresh = BuildState(root / "tpbuild-out/.tpbuild/state", cache_id(built.cache))
    assert {rel: state.outputs[rel] for rel in every} == {rel: fresh.outputs[rel] for rel in every}  # as decoded

    d = root / "tpbuild-out/down"
    mode = d.stat().st_mode
    os.chmod(d, 0o755)
    (d / "extra.txt").write_text("x")  # an entry added: its directory's mtime moved
    os.chmod(d, mode)
    state = BuildState(root / "tpbuild-out/.tpbuild/state", cache_id(built.cache))
    assert outputs.in_place_all(state, root, outs, build._Linked(root, store)) == every - {"tpbuild-out/down"}
    assert asked == ["tpbuild-out/down"]  # alone

    os.chmod(d, 0o755)
    (d / "extra.txt").unlink()
    copy = (d / "down.txt").read_bytes()
    (d / "down.txt").unlink()
    (d / "down.txt").write_bytes(copy)  # the same bytes, not the blob's inode
    os.chmod(d, mode)
    assert "tpbuild-out/down" not in outputs.in_place_all(state, root, outs, build._Linked(root, store))


def test_a_recorded_premise_settles_only_while_every_ingredient_of_a_key_is_unchanged(built):
    """The settle memo (delta.Premise): a no-op after a build that settled everything settles from it;
    each ingredient of a key changed since (a source, a dependency's output, an attribute, PATH, the salt)
    is a miss, and the actions it moves are keyed and run as without the memo."""
    memo = built.root / "tpbuild-out/.tpbuild/settled"
    assert execution(built.build(check=True)) == (ACTIONS, 0, 0) and memo.exists()  # recorded
    recorded = memo.read_bytes()
    assert execution(built.build(check=True)) == (ACTIONS, 0, 0)
    assert premise_of(memo) == premise_of(recorded)  # a hit
    built.write("a.txt", "a2\n")  # a source: up, and down through up's output
    assert sorted(built.build(check=True).statuses("executed")) == ["//:down%Genrule", "//:up%Genrule"]
    built.build(check=True)  # records the premise again
    text = (built.root / "BUILD.toml").read_text()
    (built.root / "BUILD.toml").write_text(text.replace("head -c 1", "head -c 2"))  # an attribute
    assert sorted(built.build(check=True).statuses("executed")) == ["//:cut%Genrule", "//:other%Genrule"]
    built.build(check=True)
    path = f"{Path(os.__file__).parent}:{os.environ['PATH']}"  # PATH enters every run action's key
    assert execution(built.build(check=True, env={"PATH": path}))[:2] == (0, ACTIONS)
    built.build(check=True)
    (built.root / "tpbuild.toml").write_text('[cache]\nsalt = "2"\n')
    assert execution(built.build(check=True))[:2] == (0, ACTIONS)


def test_a_premise_covers_the_state_records(built, monkeypatch):
    """In process: a record changed since the premise was recorded (another result at the same key, as
    a build killed after it re-recorded one leaves) is a miss: settled by keying, which finds it."""
    built.build(check=True)
    ws = workspace.load(built.root)
    memo = workspace.memo_dir(built.cache, ws.root)
    analysis = analyze(ws, ["//..."], memo)
    path = built.root / "tpbuild-out/.tpbuild/state"
    state = BuildState(path, cache_id(built.cache))
    last = state.actions["//:up%Genrule"]
    state.actions["//:up%Genrule"] = outputs.Last("xxh3_128:" + "0" * 32, last.tree, last.entries)
    state.save()
    stats = StatCache(memo / "statcache")
    store = cas.Cas(built.cache, stats)
    premise = delta.Premise(built.root / "tpbuild-out/.tpbuild/settled", str(store.root))
    assert premise.recorded is not None
    settled = delta.settle(analysis.declared, BuildState(path, cache_id(built.cache)), stats, store, ws.root,
                           ws.cache.salt, frozenset(), premise)
    assert premise.now != premise.recorded and "//:up%Genrule" not in settled and len(settled) == ACTIONS - 2


def test_a_premise_hit_still_checks_in_the_store_every_blob_its_records_name(built):
    """The settle memo names the blobs of the results it settles (delta.Premise), which are checked in
    the store from those columns on a hit (`cas.verify_all`) as they were from the results: a blob
    deleted from the cache, or edited in place through its hardlinked output, makes its action run again
    and its readers be keyed again, while the memo's premise, which still holds, stays as it is."""
    memo = built.root / "tpbuild-out/.tpbuild/settled"
    assert execution(built.build(check=True)) == (ACTIONS, 0, 0)  # records the premise
    recorded = memo.read_bytes()
    out = built.out("up/up.txt")
    os.chmod(out, 0o644)
    with open(out, "a") as f:  # through the hardlink, into the blob
        f.write("edited\n")
    again = built.build(check=True)
    assert again.statuses("executed") == ["//:up%Genrule"] and execution(again)[:2] == (ACTIONS - 2, 2)
    assert any("no longer matched" in w for w in again.report["warnings"]) and out.read_text() == "a1\n"
    assert premise_of(memo) == premise_of(recorded)
    assert execution(built.build(check=True)) == (ACTIONS, 0, 0)

    state = BuildState(built.root / "tpbuild-out/.tpbuild/state", cache_id(built.cache))
    (up,) = state.actions["//:up%Genrule"].entries
    blob = cas.Cas(built.cache).path(up.digest, up.executable)
    os.unlink(blob)
    again = built.build(check=True)
    assert again.statuses("executed") == ["//:up%Genrule"] and execution(again)[:2] == (ACTIONS - 2, 2)
    assert premise_of(memo) == premise_of(recorded) and blob.read_bytes() == b"a1\n"


def premise_of(memo: Path | bytes) -> list:
    """A settle memo's value but for its blobs' stats (a blob stored again is at other stats)."""
    header, value = (memo if isinstance(memo, bytes) else memo.read_bytes()).split(b"\n", 1)
    return [header, *json.loads(value)[:5]]


def _aged_blobs(cache: Path) -> None:
    """Every blob's mtime set out of the racy window, as a build a while later finds it: a blob's stat
    then vouches for its content (the stat memo hashes each once more, at its new stat)."""
    old = time.time_ns() - 10 * 10**9
    for p in (cache / "cas").rglob("*"):
        if p.is_file():
            os.utime(p, ns=(old, old))


# A build moments after the one before it, however slow the machine: its settle memo's horizon
# (`delta.settle`) taken a minute early, so every blob that one stored is within its racy window.
MOMENTS_AFTER = """
import sys, time, types
from tpbuild import cli, delta

delta.time = types.SimpleNamespace(time_ns=lambda: time.time_ns() - 60 * 10**9)
sys.exit(cli.main(["-C", sys.argv[1], "build", "//...", "--report", sys.argv[2]]))
"""


def _moments_after(ws) -> Run:
    p, report = _scripted(ws, MOMENTS_AFTER)
    return Run(p.returncode, p.stdout, p.stderr, report)


def test_a_premise_hit_takes_its_blobs_whole_at_their_recorded_stats(built, monkeypatch):
    """The settle memo records the stats its blobs were found whole at, once none is within the racy
    window; on a hit, blobs all at those stats are whole without the stat memo (`cas.Cas.whole_at`), and
    a blob at any other stat (edited in place through its hardlinked output, removed) is checked as ever
    (`cas.Cas.verify_all`): its action runs again, and the stats are recorded anew."""
    memo = built.root / "tpbuild-out/.tpbuild/settled"
    assert execution(_moments_after(built)) == (ACTIONS, 0, 0)
    assert json.loads(memo.read_bytes().split(b"\n", 1)[1])[5] == ""  # the blobs just stored: racy
    _aged_blobs(built.cache)
    assert execution(built.build(check=True))[:2] == (ACTIONS, 0)  # (the outputs, their links, re-placed)
    recorded = memo.read_bytes()
    blobs = json.loads(recorded.split(b"\n", 1)[1])[1]
    assert json.loads(recorded.split(b"\n", 1)[1])[5] != "" and len(blobs) == 3  # other's and cut's the same

    def settled_in_process(check) -> tuple[dict, cas.Cas]:
        ws = workspace.load(built.root)
        memo_dir = workspace.memo_dir(built.cache, ws.root)
        stats = StatCache(memo_dir / "statcache")
        store = cas.Cas(built.cache, stats)
        monkeypatch.setattr(store, "verify_all", lambda blobs, names=None: check(blobs) or set())
        state = BuildState(built.root / "tpbuild-out/.tpbuild/state", cache_id(built.cache))
        settled = delta.settle(analyze(ws, ["//..."], memo_dir).declared, state, stats, store, ws.root, ws.cache.salt,
                               frozenset(), delta.Premise(memo, str(store.root)))
        return settled, store

    def unasked(blobs):
        raise AssertionError(f"verify_all asked of {blobs}")

    settled, store = settled_in_process(unasked)
    assert len(settled) == ACTIONS and sorted(d for d, _x in store.verified) == sorted(blobs)
    assert all(s is not None and s[1] < time.time_ns() - 2 * 10**9 for s in store.verified.values())

    out = built.out("up/up.txt")
    os.chmod(out, 0o644)
    with open(out, "a") as f:  # through the hardlink, into the blob
        f.write("edited\n")
    asked = []
    settled_in_process(asked.append)
    assert len(asked) == 1 and len(asked[0]) == len(blobs)  # every blob, checked through the stat memo
    again = built.build(check=True)
    assert again.statuses("executed") == ["//:up%Genrule"] and execution(again)[:2] == (ACTIONS - 2, 2)
    assert any("no longer matched" in w for w in again.report["warnings"]) and out.read_text() == "a1\n"
    _aged_blobs(built.cache)
    assert execution(built.build(check=True))[:2] == (ACTIONS, 0)
    assert premise_of(memo) == premise_of(recorded) and memo.read_bytes() != recorded  # the stats anew

    state = BuildState(built.root / "tpbuild-out/.tpbuild/state", cache_id(built.cache))
    (up,) = state.actions["//:up%Genrule"].entries
    os.unlink(cas.Cas(built.cache).path(up.digest, up.executable))
    again = built.build(check=True)
    assert again.statuses("executed") == ["//:up%Genrule"] and execution(again)[:2] == (ACTIONS - 2, 2)


def test_a_premise_hit_takes_its_sources_digests_at_their_recorded_stats(built):
    """The settle memo records the digest of its sources' digests at their stats, once none is within the
    racy window: a hit with every source at those stats asks the stat memo nothing, nor reads it, and its
    stats are the ones the no-op stamp takes; a source at another stat (touched, the same bytes) is asked
    of the stat memo, the premise still a hit, and recorded at its new stat."""
    memo = built.root / "tpbuild-out/.tpbuild/settled"
    assert execution(_moments_after(built)) == (ACTIONS, 0, 0)
    assert json.loads(memo.read_bytes().split(b"\n", 1)[1])[6:] == ["", ""]  # the sources just written: racy
    old = time.time_ns() - 10 * 10**9
    for name in ("a.txt", "b.txt"):
        os.utime(built.root / name, ns=(old, old))
    _aged_blobs(built.cache)  # their stats recorded too (`cas.Cas.whole_at`): nothing asks the stat memo
    assert execution(built.build(check=True))[:2] == (ACTIONS, 0)
    recorded = json.loads(memo.read_bytes().split(b"\n", 1)[1])
    assert "" not in recorded[5:]

    def settled_in_process() -> tuple[dict, StatCache, delta.Premise]:
        ws = workspace.load(built.root)
        memo_dir = workspace.memo_dir(built.cache, ws.root)
        stats = StatCache(memo_dir / "statcache")
        store = cas.Cas(built.cache, stats)
        premise = delta.Premise(memo, str(store.root))
        state = BuildState(built.root / "tpbuild-out/.tpbuild/state", cache_id(built.cache))
        settled = delta.settle(analyze(ws, ["//..."], memo_dir).declared, state, stats, store, ws.root, ws.cache.salt,
                               frozenset(), premise)
        return settled, stats, premise

    settled, stats, premise = settled_in_process()
    assert len(settled) == ACTIONS and premise.now == premise.recorded and stats._journal is None  # not read
    assert stats.peeks(["a.txt"]) == [stats.sigs([str(built.root / "a.txt")])[0]] and stats._journal is None
    os.utime(built.root / "a.txt", ns=(old - 10**9, old - 10**9))  # touched: its bytes the same
    settled, stats, premise = settled_in_process()
    assert len(settled) == ACTIONS and premise.now == premise.recorded and stats._journal is not None
    assert premise.sources == recorded[7] and premise.at not in ("", recorded[6])
    assert execution(built.build(check=True)) == (ACTIONS, 0, 0)
    again = json.loads(memo.read_bytes().split(b"\n", 1)[1])
    assert again[:6] == recorded[:6] and again[6] == premise.at and again[7] == recorded[7]


def test_a_settle_memo_of_another_version_or_damaged_is_a_miss(built):
    """A settle memo of a version before its blob columns, their stats or its sources' stats, or whose
    columns do not hold together, is read as none: every action keyed and settled as without it, and the
    memo written anew."""
    memo = built.root / "tpbuild-out/.tpbuild/settled"
    built.build(check=True)
    recorded = memo.read_bytes()
    header, value = recorded.split(b"\n", 1)
    premise, digests, executable, names, root, stats, at, sources = json.loads(value)
    for text in (b"tpbuild-memo settled v1\n" + json.dumps(premise).encode(),  # the premise alone, as v1 had it
                 # the columns without the blobs' stats, as v2 had them
                 b"tpbuild-memo settled v2\n" + json.dumps([premise, digests, executable, names]).encode(),
                 # without the sources' stats, as v3 had it
                 b"tpbuild-memo settled v3\n" + json.dumps([premise, digests, executable, names, root, stats]).encode(),
                 header + b"\n" + json.dumps([premise, digests, "2" + executable[1:], names, root, stats, at,
                                              sources]).encode(),
                 header + b"\n" + json.dumps([premise, digests[1:], executable, names, root, stats, at, sources]).encode(),
                 header + b"\n" + json.dumps([premise, digests, executable, names, root, "AAAA", at, sources]).encode(),
                 header + b"\n" + json.dumps([premise, digests, executable, names, root, stats, at, None]).encode(),
                 header + b"\n" + value[:len(value) // 2]):  # torn
        memo.write_bytes(text)
        assert delta.Premise(memo, str(built.cache / "cas")).recorded is None
        assert execution(built.build(check=True)) == (ACTIONS, 0, 0)
        assert premise_of(memo) == premise_of(recorded)  # (the stats recorded once out of the racy window)


def test_a_premise_holds_the_text_of_the_stats_it_holds(built):
    """`delta.Premise.text` is the `layout.packed_text` of its blobs' stats as they stand, which the no-op
    stamp records as its blobs' (`noop._Group.packed_as`): the memo's own while the stats are the memo's,
    none once `whole` finds others, and the one it saves then."""
    memo = built.root / "tpbuild-out/.tpbuild/settled"
    built.build(check=True)
    _aged_blobs(built.cache)
    built.build(check=True)  # records the blobs' stats
    root = str(cas.Cas(built.cache).root)
    premise = delta.Premise(memo, root)
    recorded = json.loads(memo.read_bytes().split(b"\n", 1)[1])[5]
    assert premise.stats is not None and premise.text == recorded == packed_text(array("q", premise.stats))
    stats = [stat_at(array("q", premise.stats), i) for i in range(len(premise.blobs))]
    premise.whole(stats, time.time_ns())  # the same stats: the same text
    assert premise.text == recorded
    moved = [(*s[:3], s[3] ^ 1) for s in stats]
    premise.whole(moved, time.time_ns())
    assert premise.text is None
    premise.now = "another premise"
    assert premise.save() is None and premise.text == json.loads(memo.read_bytes().split(b"\n", 1)[1])[5] \
        == packed_text(array("q", premise.stats)) != recorded
    assert delta.Premise(memo, root).text == premise.text
    premise.whole(None, time.time_ns())  # a blob not whole: no stats, no text
    assert premise.stats is None and premise.text is None
