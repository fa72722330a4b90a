"""memo.Journal: records appended per save, read back as the last value of each key; a torn tail,
another version or another meta is never a wrong answer."""

from __future__ import annotations

from tpbuild import memo


def _journal(path, meta="m"):
    return memo.Journal(path, "test", 1, meta, path.parent / "tmp", "the test memo")


def test_saves_append_what_changed_and_a_later_record_wins(tmp_path):
    path = tmp_path / "j"
    j = _journal(path)
    j.put("a", [1])
    j.put("b", {"x": "y"})
    assert j.save() is None
    size = path.stat().st_size
    j = _journal(path)
    assert (j.get("a"), j.get("b")) == ([1], {"x": "y"})
    assert j.save() is None and path.stat().st_size == size  # nothing changed: nothing written
    j.put("a", [2])
    j.remove("b")
    assert j.save() is None
    assert path.stat().st_size > size  # appended, not rewritten
    assert path.read_bytes().count(b"\n") == 6  # header, meta, a, b, then a again and b removed
    assert path.read_bytes().endswith(b'"b"\t\n')
    assert {k: _journal(path).get(k) for k in ("a", "b")} == {"a": [2], "b": None}


def test_a_torn_tail_is_skipped_and_the_next_save_rewrites_the_file(tmp_path):
    path = tmp_path / "j"
    j = _journal(path)
    j.put("a", 1)
    j.save()
    j.put("b", 2)
    j.save()
    path.write_bytes(path.read_bytes()[:-3])  # a killed append
    j = _journal(path)
    assert list(j.keys()) == ["a"] and j.get("a") == 1
    j.save()  # nothing changed, but the file is repaired
    assert path.read_bytes().endswith(b"\n") and list(_journal(path).keys()) == ["a"]


def test_another_meta_or_version_or_a_foreign_file_is_a_miss(tmp_path):
    path = tmp_path / "j"
    j = _journal(path)
    j.put("a", 1)
    j.save()
    assert list(_journal(path, meta="other").keys()) == []
    assert list(memo.Journal(path, "test", 2, "m", tmp_path / "tmp", "x").keys()) == []
    path.write_bytes(b"tpbuild-memo test v1\n\"m\"\n{\"not\": \"a record\"}\n")
    assert list(_journal(path).keys()) == []


def test_a_journal_that_outgrew_its_records_is_compacted(tmp_path):
    path = tmp_path / "j"
    j = _journal(path)
    for n in range(30):  # 3 MB appended for 100 kB live
        j.put("a", [n, "x" * 100_000])
        j.put("b", n)
        j.save()
    assert path.stat().st_size < 1_500_000 and _journal(path).get("a")[0] == 29 and _journal(path).get("b") == 29


def test_a_record_that_does_not_decode_is_absent_and_the_others_stand(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(b'tpbuild-memo test v1\n"m"\n"a"\t[1]\n"b"\t{not json\n')
    j = _journal(path)
    assert j.get("b") is None and "b" not in j and j.get("a") == [1]
    j.save()
    assert list(_journal(path).keys()) == ["a"]


def test_a_file_rewritten_for_another_meta_meanwhile_is_not_appended_to(tmp_path):
    """Two processes, one with the old fingerprint: its records never join the other's."""
    path = tmp_path / "j"
    old = _journal(path, meta="old")
    old.put("a", 1)
    old.save()
    new = _journal(path, meta="new")
    new.put("x", 1)
    new.save()
    old.put("b", 2)
    old.save()
    assert list(_journal(path, meta="new").keys()) == []
    assert sorted(_journal(path, meta="old").keys()) == ["a", "b"]


def test_an_eager_journal_reads_the_same_records(tmp_path):
    path = tmp_path / "j"
    j = _journal(path)
    j.put("a", [1, "x"])
    j.put("b", 2)
    j.remove("b")
    j.save()
    e = memo.Journal(path, "test", 1, "m", tmp_path / "tmp", "x", eager=True)
    assert list(e.keys()) == ["a"] and e.get("a") == [1, "x"]
    e.put("c", 3)
    e.save()  # an eagerly read record is written again from its value when the file is rewritten
    path.write_bytes(path.read_bytes() + b'"d"\t{bad\n')
    e = memo.Journal(path, "test", 1, "m", tmp_path / "tmp", "x", eager=True)
    assert (e.get("a"), e.get("c"), e.get("d")) == ([1, "x"], 3, None)


def test_preloaded_records_are_the_ones_get_reads_and_a_damaged_one_stays_absent(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(b'tpbuild-memo test v1\n"m"\n"a"\t[1]\n"b"\t{"c": 2}\n"x"\t{not json\n')
    j = _journal(path)
    j.preload(["a", "b", "x", "missing"])  # one parse fails: each is left to `get`
    assert (j.get("a"), j.get("b"), j.get("x")) == ([1], {"c": 2}, None)
    j = _journal(path)
    j.preload(["a", "b"])
    path.unlink()  # nothing is read from the file any more
    assert (j.get("a"), j.get("b")) == ([1], {"c": 2})
