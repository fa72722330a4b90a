"""Materializing output trees when the cache changes underneath: a blob that another build evicted
between its check and its placement must leave the old tree intact and no scratch behind (the CLI
then reports the target failed with a warning; racing two real builds into that window is not
reproducible, so this drives `outputs` directly)."""

from __future__ import annotations

import pytest

from tpbuild import outputs
from tpbuild.action import Entry
from tpbuild.cas import Cas


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
