"""Materializing output trees, driven directly: when the cache changes underneath (a blob that another
build evicted between its check and its placement must leave the old tree intact and no scratch
behind; the CLI then reports the target failed with a warning, but racing two real builds into that
window is not reproducible), and composed trees, placed and recorded part by part."""

from __future__ import annotations

import pytest

from tpbuild import outputs
from tpbuild.action import EMPTY_TREE, Artifact, Entry, EntryKind, Part, Source, Symlink, Tree, TreeAction, \
    part_dests, tree_digest
from tpbuild.cas import Cas
from tpbuild.label import Label


def test_missing_blob_leaves_the_old_tree_and_no_scratch(tmp_path):
    cas = Cas(tmp_path / "cache")
    root = tmp_path / "ws"
    root.mkdir()
    state = outputs.BuildState(tmp_path / "state", "id")
    d1 = cas.put_bytes(b"one")
    outputs.materialize(state, root, "tpbuild-out/t", (Entry("a.txt", "f", d1, 3),), cas)
    assert (root / "tpbuild-out/t/a.txt").read_bytes() == b"one"

    d2 = cas.put_bytes(b"two")
    cas.path(d2).unlink()  # evicted by another build after this one checked it
    state.outputs.clear()  # not an intact tree: the whole tree is assembled aside
    with pytest.raises(FileNotFoundError):
        outputs.materialize(state, root, "tpbuild-out/t", (Entry("a.txt", "f", d1, 3), Entry("b.txt", "f", d2, 3)),
                            cas)
    assert sorted(p.name for p in (root / "tpbuild-out/t").iterdir()) == ["a.txt"]
    assert [p for p in (root / "tpbuild-out/.tpbuild/tmp").rglob("*") if not p.is_dir()] == []


# -- composed trees (action.Tree) ---------------------------------------------------------------------

def _files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _part(cas, prefix, *files):
    entries = tuple(Entry(path, "f", cas.put_bytes(data), len(data)) for path, data in files)
    return Part(prefix, tree_digest(entries), entries)


def test_a_composed_tree_has_its_flat_trees_digest_and_files():
    d = "xxh3_128:00"
    a = (Entry("config.pbtxt", "f", d, 1), Entry("1/model.py", "x", d, 1))
    parts = (Part("m1", tree_digest(a), a), Part("deep/m2", tree_digest(a), a),
             Part("empty", EMPTY_TREE, ()))
    own = (Entry("README", "f", d, 1), Symlink("deep/link", "m2"))
    tree = Tree(own, tuple(p for p in parts if p.digest != EMPTY_TREE))
    flat = tuple(sorted(own + tuple(e.moved(f"{p.prefix}/{e.path}") for p in parts for e in p.tree),
                        key=lambda e: e.path))
    assert tuple(tree) == flat and tree == flat
    assert tree.digest == tree_digest(flat)  # from the parts' digests, never their entries
    assert tree.entry("deep/m2/1/model.py") == Entry("deep/m2/1/model.py", "x", d, 1)
    assert tree.entry("m1/nothing") is None and tree.entry("README") == own[0]
    assert tree_digest(flat) != tree_digest(flat[1:])


def test_only_whole_trees_at_a_destination_of_their_own_are_parts():
    t = TreeAction(id="t", owner=Label("", "t"), mnemonic="T", rule="r", rule_version="1", inputs=(
        ("a", Artifact("x")), ("a/b", Artifact("y")),  # nested: neither
        ("c", Artifact("z")), ("d", Artifact("w", "file")), ("e", Source("e.txt")),
        ("f", Artifact("v")), ("f", Artifact("u")), ("g/h", Artifact("s"))))
    assert part_dests(t.inputs) == {"c", "g/h"}
    root = TreeAction(id="t", owner=Label("", "t"), mnemonic="T", rule="r", rule_version="1",
                      inputs=(("", Artifact("x")), ("c", Artifact("z"))))
    assert part_dests(root.inputs) == set()  # a tree merged at the root can put a file anywhere


def test_a_changed_part_alone_is_placed_and_recorded_again(tmp_path):
    cas = Cas(tmp_path / "cache")
    root = tmp_path / "ws"
    root.mkdir()
    state = outputs.BuildState(tmp_path / "state", "id")
    rel = "tpbuild-out/repo"
    m1, m2 = _part(cas, "m1", ("a.txt", b"1")), _part(cas, "m2", ("a.txt", b"2"), ("sub/b.txt", b"b"))
    assert outputs.materialize(state, root, rel, Tree((), (m1, m2)), cas) == (True, 2)
    assert state.save() is None
    kept = (root / rel / "m2/sub/b.txt").stat().st_ino
    size = (tmp_path / "state").stat().st_size
    new_m1 = _part(cas, "m1", ("a.txt", b"one"))
    assert outputs.materialize(state, root, rel, Tree((), (new_m1, m2)), cas) == (True, 1)
    assert state.save() is None
    with open(tmp_path / "state") as f:
        f.seek(size)
        appended = f.read()
    assert f'"o:{rel}/m1"' in appended and f'"o:{rel}/m2"' not in appended  # the changed part's record alone
    assert (root / rel / "m2/sub/b.txt").stat().st_ino == kept
    assert _files(root / rel) == {"m1/a.txt": b"one", "m2/a.txt": b"2", "m2/sub/b.txt": b"b"}
    assert rel in outputs.in_place_all(state, root, [(rel, Tree((), (new_m1, m2)))])
    merged = outputs.Placed(state)[rel]
    assert sorted(merged[1]) == ["m1/a.txt", "m2/a.txt", "m2/sub/b.txt"] and "m2/sub" in merged[2]

    # A part removed, a part damaged by hand, then the same files as a flat tree (a remote cache's
    # answer) and back: each time exactly the tree's files, and no record of a part that is gone.
    (root / rel / "m2/a.txt").unlink()
    assert rel not in outputs.in_place_all(state, root, [(rel, Tree((), (new_m1, m2)))])
    outputs.materialize(state, root, rel, Tree((), (new_m1, m2)), cas)
    assert _files(root / rel)["m2/a.txt"] == b"2"
    outputs.materialize(state, root, rel, Tree((), (m2,)), cas)
    assert _files(root / rel) == {"m2/a.txt": b"2", "m2/sub/b.txt": b"b"}
    assert sorted(state.outputs) == [rel, f"{rel}/m2"]
    both = Tree((), (new_m1, m2))
    outputs.materialize(state, root, rel, tuple(both), cas)
    assert _files(root / rel) == {"m1/a.txt": b"one", "m2/a.txt": b"2", "m2/sub/b.txt": b"b"}
    assert sorted(state.outputs) == [rel]
    outputs.materialize(state, root, rel, both, cas)
    assert _files(root / rel) == {"m1/a.txt": b"one", "m2/a.txt": b"2", "m2/sub/b.txt": b"b"}
    assert rel in outputs.in_place_all(state, root, [(rel, both)])
    assert sorted(state.outputs) == [rel, f"{rel}/m1", f"{rel}/m2"]
    assert outputs.prune(state, root, {rel}) == [] and outputs.prune(state, root, set()) == [rel]
    assert len(state.outputs) == 0 and not (root / rel).exists()


def test_placed_records_in_bulk_are_each_outputs_own_then_its_parts(tmp_path):
    """`Placed.records` of many outputs (the no-op stamp's): each one's record then its parts' (and theirs), as
    `recorded_below` of each names them, whether it has parts or not, in one list, with the parts' tree
    digests; and `Cas.paths_of` the blobs' paths."""
    cas = Cas(tmp_path / "cache")
    root = tmp_path / "ws"
    root.mkdir()
    state = outputs.BuildState(tmp_path / "state", "id")
    repo, flat, also = "tpbuild-out/repo", "tpbuild-out/re", "tpbuild-out/repo0"  # "re" and "repo0" beside, not below
    m1, m2 = _part(cas, "m1", ("a.txt", b"1")), _part(cas, "m2", ("sub/b.txt", b"b"))
    outputs.materialize(state, root, repo, Tree((), (m1, m2)), cas)
    for rel in (flat, also):
        outputs.materialize(state, root, rel, tuple(Tree((), (m1,))), cas)
    rels = [flat, repo, also]
    assert list(map(state.recorded_below, rels)) == [[], [f"{repo}/m1", f"{repo}/m2"], []]
    assert state.recorded_below_all(rels) == {1: state.recorded_below(repo)}
    placed = outputs.Placed(state)
    assert placed.records(rels) == ([(k, state.outputs[k]) for rel in rels for k in (rel, *state.recorded_below(rel))],
                                    [(k, state.outputs[k][0]) for k in state.recorded_below(repo)])
    assert placed.records([flat, also]) == ([(k, state.outputs[k]) for k in (flat, also)], [])
    with pytest.raises(KeyError):
        placed.records([flat, "tpbuild-out/none"])
    digests = [d for _path, (_kind, d, _s) in placed[repo][1].items()]
    assert cas.paths_of([(d, False) for d in digests]) == list(map(cas.path_text, digests))


# -- the ordinary path's check of every placed tree (outputs.in_place_all) ---------------------------

def test_trees_alike_are_compared_as_text_and_a_damaged_one_is_looked_at_alone(tmp_path, monkeypatch):
    """Placed trees of one shape (a model's: the same files in the same directories) are checked by
    their records' texts against the records they would have at the stats build._Linked vouches for,
    none decoded, and those records are then held as their decoded values would be; a tree with an entry
    added, its directory gone or its record changed is found all the same, and the others still are in
    place (its thousand, `_PROVEN_AT_ONCE`, looked at record by record when a directory is gone)."""
    import os
    import time

    from tpbuild import build

    cas = Cas(tmp_path / "cache")
    root = tmp_path / "ws"
    root.mkdir()
    state = outputs.BuildState(tmp_path / "state", "id")
    trees = {}
    for i in range(5):
        entries = (Entry("1/model.py", "f", cas.put_bytes(b"model %d" % i), 7), Entry("config", "x", cas.put_bytes(b"c", True), 1))
        rel = f"tpbuild-out/m{i}"
        outputs.materialize(state, root, rel, entries, cas)
        trees[rel] = Tree(raw=[e.to_json() for e in entries], digest_=tree_digest(entries))
    assert state.save() is None
    cas = Cas(tmp_path / "cache")  # a build's after: each blob verified at its stat
    for tree in trees.values():
        assert all(cas.verify(e.digest, e.executable) for e in tree)
    later = time.time_ns() + 3 * 10**9
    monkeypatch.setattr(build.time, "time_ns", lambda: later)  # the trees placed more than 2 s ago
    monkeypatch.setattr(outputs, "_PROVEN_AT_ONCE", 2)
    decoded = []
    from_json = outputs._from_json
    monkeypatch.setattr(outputs, "_from_json", lambda key, v: decoded.append(key) or from_json(key, v))

    def in_place() -> tuple[set[str], outputs.BuildState]:
        fresh = outputs.BuildState(tmp_path / "state", "id")
        found = outputs.in_place_all(fresh, root, list(trees.items()), build._Linked(root, cas))
        return found, fresh

    found, fresh = in_place()
    assert found == set(trees) and decoded == []
    assert {rel: fresh.outputs[rel] for rel in trees} == {rel: state.outputs[rel] for rel in trees}  # as decoded

    (root / "tpbuild-out/m1/1/extra.txt").write_text("x")  # an entry added: its directory's mtime moved
    found, _fresh = in_place()
    assert found == set(trees) - {"tpbuild-out/m1"} and decoded == ["o:tpbuild-out/m1"]  # alone
    (root / "tpbuild-out/m1/1/extra.txt").unlink()

    decoded.clear()
    os.rename(root / "tpbuild-out/m2/1", root / "tpbuild-out/m2/one")  # a directory gone
    found, _fresh = in_place()
    assert found == set(trees) - {"tpbuild-out/m1", "tpbuild-out/m2"}  # m1's directory moved back then
    assert sorted(decoded) == ["o:tpbuild-out/m1", "o:tpbuild-out/m2", "o:tpbuild-out/m3"]  # m2's pair, and m1
    os.rename(root / "tpbuild-out/m2/one", root / "tpbuild-out/m2/1")

    text = (tmp_path / "state").read_text()
    other = trees["tpbuild-out/m4"].digest
    (tmp_path / "state").write_text(text.replace(f'"o:tpbuild-out/m3"\t["{trees["tpbuild-out/m3"].digest}"',
                                                 f'"o:tpbuild-out/m3"\t["{other}"'))  # its record changed
    found, _fresh = in_place()
    assert "tpbuild-out/m3" not in found and "tpbuild-out/m4" in found


def test_the_blobs_results_name_are_those_of_each_result_in_order_whatever_their_form():
    """`blobs_named` takes the digests from the entries' JSON by column only while every result is a tree
    of plain files held as read; an executable, a symlink, a tree read into entries or a result that is
    not a tree gives what `blobs_of` of each gives, each blob once, in order."""
    from itertools import chain

    from tpbuild.action import blobs_named, blobs_of

    def d(i: int) -> str:
        return f"xxh3_128:{i:032x}"

    plain = [Entry("a", EntryKind.FILE, d(1), 1), Entry("b", EntryKind.FILE, d(2), 1)]
    mixed = [Entry("c", EntryKind.EXECUTABLE, d(2), 1), Symlink("l", "a"), Entry("e", EntryKind.FILE, d(3), 1)]

    def raw(entries) -> Tree:
        return Tree(raw=[e.to_json() for e in entries])

    def expected(results) -> list:
        return list(dict.fromkeys(chain.from_iterable(map(blobs_of, results))))

    for results in ([raw(plain), raw(plain[1:])],  # by column
                    [raw(plain), raw(mixed)],  # an executable and a symlink
                    [raw(plain), Tree(tuple(mixed))],  # a tree read into entries
                    [raw(plain), tuple(mixed)],  # not a tree
                    []):
        assert list(blobs_named(results)) == expected(results)
    assert list(blobs_named([raw(plain), raw(plain[1:])])) == [(d(1), False), (d(2), False)]
    assert list(blobs_named([raw(plain), raw(mixed)])) == [(d(1), False), (d(2), False), (d(2), True), (d(3), False)]


def test_a_record_of_strings_json_escapes_is_left_to_itself(tmp_path):
    """A record is compared with the text of its tree's record at the stats vouched for, its strings
    written as they are (outputs._makers): a digest or blob JSON would escape leaves it to itself, else
    the tree of digest `x\\"y` would pass for the record of the tree of digest `x"y` (their texts alike)."""
    stat = (1, 2, 3, 4)

    class Vouched:
        def vouch(self, kinds, targets, dirs):
            return [stat] * len(targets), [stat] * len(dirs)

    state = outputs.BuildState(tmp_path / "state", "id")
    state.outputs["tpbuild-out/plain"] = ("xy", {"a": ("f", "blob", stat)}, {"": stat})
    state.outputs["tpbuild-out/quoted"] = ('x"y', {"a": ("f", "blob", stat)}, {"": stat})
    assert state.save() is None
    fresh = outputs.BuildState(tmp_path / "state", "id")
    shape = outputs._Shape((("a", "f"),), ())
    own = [["a", "f", "blob", 1]]
    assert shape.compare(fresh, [("tpbuild-out/plain", "xy", own)], Vouched()) == ["tpbuild-out/plain"]
    assert fresh.outputs["tpbuild-out/plain"] == state.outputs["tpbuild-out/plain"]  # as decoded
    assert shape.compare(fresh, [("tpbuild-out/quoted", 'x\\"y', own)], Vouched()) == []
    assert shape.compare(fresh, [("tpbuild-out/quoted", 'x"y', own)], Vouched()) == []
    assert fresh.outputs["tpbuild-out/quoted"][0] == 'x"y'  # decoded from its text: not taken as matched
    state.outputs["tpbuild-out/tab"] = ("x\ty", {"a": ("f", "blob", stat)}, {"": stat})  # a control character
    assert state.save() is None
    fresh = outputs.BuildState(tmp_path / "state", "id")
    assert shape.compare(fresh, [("tpbuild-out/tab", "x\\ty", own)], Vouched()) == []
    assert shape.compare(fresh, [("tpbuild-out/tab", "x\ty", [["a", "f", "blob", 1]])], Vouched()) == []
