"""memo.Journal: records appended per save, read back as the last value of each key; a torn tail,
another version or another meta is never a wrong answer."""

from __future__ import annotations

import pytest

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


def test_a_line_of_no_tab_or_of_two_is_a_damaged_journal_and_a_string_alone_is_no_record(tmp_path):
    """A damaged line shifts the fields after it (`Journal._index`): the journal is read as holding none
    (and rewritten by the next save), wherever the line is; values are never strings alone, which such a
    shift could put in a key's place unnoticed."""
    path = tmp_path / "j"
    lines = [b'"a"\t[1]\n', b'"b"\t{"x":"y"}\n', b'"c"\t2\n', b'"d"\t\n', b'"e"\t[3]\n']
    for i in range(len(lines)):
        for damaged in (lines[i].replace(b"\t", b""), lines[i].replace(b"\t", b"\t\t"),
                        lines[i].replace(b"\t", b"\t[0]\t")):
            path.write_bytes(b'tpbuild-memo test v1\n"m"\n' + b"".join(lines[:i] + [damaged] + lines[i + 1:]))
            assert list(_journal(path).keys()) == [], damaged
    # one line of no tab and a later one of two: as many fields as whole lines make, shifted between them
    path.write_bytes(b'tpbuild-memo test v1\n"m"\n' + lines[0].replace(b"\t", b"") + b"".join(lines[1:4])
                     + lines[4].replace(b"\t", b"\t[0]\t"))
    assert list(_journal(path).keys()) == []
    j = _journal(path)
    with pytest.raises(TypeError):
        j.put("s", "a string")
    assert "s" not in j


def test_a_key_holding_a_quote_reads_as_its_json_says_and_a_bare_quote_in_one_is_a_damaged_journal(tmp_path):
    """Keys are taken from their JSON without a parse only when none holds a quote or an escape (`_index`):
    an escaped quote is read as JSON has it, and a bare one (no JSON) leaves the journal holding none."""
    path = tmp_path / "j"
    path.write_bytes(b'tpbuild-memo test v1\n"m"\n"a\\"b"\t[1]\n"c"\t[2]\n')
    j = _journal(path)
    assert list(j.keys()) == ['a"b', "c"] and j.get('a"b') == [1]
    path.write_bytes(b'tpbuild-memo test v1\n"m"\n"a"b"\t[1]\n"c"\t[2]\n')
    assert list(_journal(path).keys()) == []


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


def test_one_two_or_many_records_preloaded_read_back_each(tmp_path):
    for n in (1, 2, 3, 5):  # the first and last texts carry the array's brackets (`memo.json_array`)
        path = tmp_path / f"j{n}"
        j = _journal(path)
        for i in range(n):
            j.put(f"k{i}", [i, {"s": "]["}])
        j.save()
        j = _journal(path)
        j.preload([f"k{i}" for i in range(n)])
        path.unlink()  # read from what preload decoded
        assert [j.get(f"k{i}") for i in range(n)] == [[i, {"s": "]["}] for i in range(n)]


def test_records_preloaded_are_converted_at_once_and_one_that_does_not_convert_alone_is_absent(tmp_path):
    """`convert_all` converts every record preload parsed in one call; when it raises (one record does not
    convert), each is converted on its own by `convert`, as `get` would: that one absent, the others kept."""
    path = tmp_path / "j"
    path.write_bytes(b'tpbuild-memo test v1\n"m"\n"a"\t[1]\n"b"\t[2]\n"x"\t{"not": "a list"}\n')
    calls = []

    def one(key, value):
        if not isinstance(value, list):
            raise TypeError("not a list")
        return (key, *value)

    def every(keys, values):
        calls.append(list(keys))
        return list(map(one, keys, values))

    def journal():
        return memo.Journal(path, "test", 1, "m", tmp_path / "tmp", "x", convert=(one, None), convert_all=every)

    j = journal()
    j.preload(["a", "b"])
    assert calls == [["a", "b"]] and (j.get("a"), j.get("b")) == (("a", 1), ("b", 2))
    j = journal()
    j.preload(["a", "b", "x"])
    assert calls[1:] == [["a", "b", "x"]]  # raised: converted one by one
    assert (j.get("a"), j.get("b"), j.get("x")) == (("a", 1), ("b", 2), None)
    assert "x" not in j and "a" in j


def test_a_rewrite_of_many_records_is_written_in_pieces_and_reads_back_whole(tmp_path):
    """More records than one piece holds (1,000): the file is the same as one written at once."""
    path = tmp_path / "j"
    j = _journal(path)
    for i in range(2500):
        j.put(f"k{i}", [i, "é", {"x": i}])
    assert j.save() is None
    body = path.read_bytes().split(b"\n", 2)[2]
    want = "".join(f'"k{i}"\t[{i},"é",{{"x":{i}}}]\n' for i in range(2500)).encode()
    assert body == want
    j = _journal(path)
    assert [j.get(f"k{i}") for i in (0, 999, 1000, 2499)] == [[0, "é", {"x": 0}], [999, "é", {"x": 999}],
                                                                [1000, "é", {"x": 1000}], [2499, "é", {"x": 2499}]]
    j.put("k0", 1)
    assert j.save() is None and path.read_bytes().endswith(b'"k0"\t1\n')  # then appended to as ever


def test_a_whole_memo_is_the_json_of_its_value_and_one_that_is_not_json_leaves_nothing(tmp_path):
    value = {"key": [1, "a", None], "groups": [["b", True, ["x", "y"], [1, 2]], ["c", None, [["p", None]]]],
             "summary": {"n": 1, "s": ['é"']}, "odd": {1: 2}, "deep": [[[[]]]],
             "long": [list(range(100)), {str(i): [i] for i in range(100)}]}
    path = tmp_path / "m"
    assert memo.save(path, "test", 1, value, tmp_path / "tmp", "the test memo") is None
    assert path.read_bytes() == b"tpbuild-memo test v1\n" + memo._dumps(value).encode()
    assert memo.load(path, "test", 1) == memo.load(path, "test", 1) == json_roundtrip(value)
    warning = memo.save(tmp_path / "n", "test", 1, {"a": [1, object()]}, tmp_path / "tmp", "the test memo")
    assert warning is not None and "could not save the test memo" in warning
    assert not (tmp_path / "n").exists()
    assert [p for p in (tmp_path / "tmp").rglob("*") if p.is_file()] == []  # no temp file left


def json_roundtrip(value):
    import json

    return json.loads(json.dumps(value))



def test_a_file_torn_within_its_meta_line_is_rewritten_not_appended_to(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(b'tpbuild-memo test 1\n"m"')  # not even this journal's header: a miss
    assert _journal(path).get("a") is None
    path.write_bytes(b'tpbuild-memo test v1\n"m"')  # the meta without its newline
    j = _journal(path)
    j.put("a", 1)
    assert j.save() is None
    assert path.read_bytes() == b'tpbuild-memo test v1\n"m"\n"a"\t1\n'
    assert _journal(path).get("a") == 1


def _history(path, keys: list[str], removed: str) -> None:
    """A journal of records under `keys` (values holding tabs and newlines) saved, then "plain" changed
    and `removed` removed, appended."""
    j = _journal(path)
    for i, k in enumerate(keys):
        j.put(k, {"i": i, "text": "x\ty\n" * i})
    j.save()
    j.put("plain", [9])
    j.remove(removed)
    j.save()


def test_a_journal_read_in_pieces_smaller_than_its_lines_reads_every_record(tmp_path, monkeypatch):
    """A journal is read a piece at a time, each split in one go (`memo._PIECE`): lines across pieces,
    keys that need escapes (then parsed as JSON) or not, removed records and a torn tail read as a
    line at a time would."""
    path = tmp_path / "j"
    keys = ["plain", 'quo"te', "back\\slash", "tab\there", "ünïcode", "a,b"]
    _history(path, keys, "a,b")
    monkeypatch.setattr(memo, "_PIECE", 5)
    j = _journal(path)
    assert {k: j.get(k) for k in j.keys()} == {"plain": [9], **{k: {"i": i, "text": "x\ty\n" * i}
                                                                 for i, k in enumerate(keys[1:-1], 1)}}
    path.write_bytes(path.read_bytes()[:-4])  # torn within the last line, plain's second value
    j = _journal(path)
    assert j.get("plain") == {"i": 0, "text": ""} and "a,b" not in j
    plain = tmp_path / "p"
    j = _journal(plain)
    j.put("a", 1)
    j.put("b", 2)
    j.save()
    assert {k: _journal(plain).get(k) for k in ("a", "b")} == {"a": 1, "b": 2}


def test_a_lazy_journal_finds_each_record_as_the_split_one_reads_it(tmp_path, monkeypatch):
    """A lazy journal (a delta build's) finds a record by scanning the file's bytes for its last line:
    the same answer as splitting the file, for escaped keys, a later line, a record removed, one that
    does not decode, one whose key ends another's, and a torn tail; what it found, put or removed
    before it splits the file stands after; its save appends."""
    path = tmp_path / "j"
    keys = ["plain", 'quo"te', "back\\slash", "tab\there", "ünïcode", "a,b", "lain", "gone"]
    _history(path, keys, "gone")
    path.write_bytes(path.read_bytes() + b'"bad"\t{not json\n"lain"\t[7')  # a damaged record, a torn append

    def lazy():
        return memo.Journal(path, "test", 1, "m", tmp_path / "tmp", "the test memo", lazy=True)

    split = _journal(path)
    expected = {k: split.get(k) for k in [*keys, "bad", "missing"]}
    assert expected["plain"] == [9] and expected["gone"] is None and expected["lain"] == {"i": 6, "text": "x\ty\n" * 6}
    monkeypatch.setattr(memo, "_SCANS", len(expected))  # every lookup below is a scan
    j = lazy()
    assert {k: j.get(k) for k in expected} == expected and not j._indexed
    assert ("plain" in j, "gone" in j, "missing" in j) == (True, False, False)
    j = lazy()
    j.get("plain")
    j.put("new", 1)
    j.remove('quo"te')
    assert sorted(j.keys()) == sorted(["plain", "back\\slash", "tab\there", "ünïcode", "a,b", "lain", "bad", "new"])
    assert (j.get("plain"), j.get('quo"te'), j.get("new")) == ([9], None, 1)
    monkeypatch.setattr(memo, "_SCANS", 1)  # the second lookup splits the file whole
    j = lazy()
    assert (j.get("a,b"), j.get("plain"), j._indexed) == (expected["a,b"], [9], True)
    j = _journal(path)
    j.save()  # the torn tail repaired
    size = path.stat().st_size
    j = lazy()
    j.put("plain", [10])
    j.remove("a,b")
    assert j.save() is None and path.stat().st_size > size and not j._indexed  # appended, not split
    assert (_journal(path).get("plain"), "a,b" in _journal(path), lazy().get("plain")) == ([10], False, [10])


def test_the_live_records_size_follows_puts_removals_and_a_split(tmp_path):
    """What decides compaction (`Journal._live`), as records come and go, equals a count of them."""
    path = tmp_path / "j"
    j = _journal(path)
    for i in range(20):
        j.put(f"k{i}", ["x" * i])
    j.save()
    j.put("k3", ["longer than before"])
    j.remove("k4")
    j.save()

    def count(j):
        return sum(len(memo.Journal._text(j, k, j.get(k))) for k in j.keys())

    for j in (_journal(path), memo.Journal(path, "test", 1, "m", tmp_path / "tmp", "x", lazy=True)):
        j.get("k5")
        j.put("k6", [1])
        j.remove("k7")
        j.put("new", {"a": 1})
        j.keys()
        assert j._live() == count(j)


def test_a_class_is_recorded_by_its_match_args_and_one_with_keyword_only_fields_read_by_name():
    """Label (label.py) and the action variants (value.Frozen) are recorded by `__match_args__`; an
    action, whose constructor takes keyword-only fields, is made again by name; both read back equal,
    and a type not named is a miss."""
    from tpbuild.action import Artifact, RunAction, Source
    from tpbuild.analysiscache import action_types
    from tpbuild.label import Label

    label = Label("models/m1", "m1")
    assert memo.encode(label, (Label,)) == {"$o": ["Label", ["models/m1", "m1"]]}
    again = memo.decode(memo.encode_text({"l": label, "t": (label,)}, (Label,)), (Label,))
    assert again == {"l": label, "t": (label,)} and hash(again["l"]) == hash(label)
    act = RunAction(id="//p:t%Gen", owner=label, mnemonic="Gen", rule="genrule", rule_version="1",
                    inputs=(("a", Source("p/a")), ("b", Artifact("//p:u%Gen", "o"))), argv=("true",), outs=("o",))
    assert memo.decode(memo.encode_text(act, action_types()), action_types()) == act
    with pytest.raises(ValueError):
        memo.decode(memo.encode_text(label, (Label,)), ())


def test_a_label_is_an_immutable_value():
    import copy
    import pickle

    from tpbuild.label import Label

    a, b = Label("p", "a"), Label("p", "b")
    assert a == Label("p", "a") and a != b and a != ("p", "a") and len({a, Label("p", "a"), b}) == 2
    assert a < b <= b and b > a >= a and sorted([b, a]) == [a, b] and Label("", "z") < a
    assert repr(a) == "Label(package='p', name='a')" and str(a) == "//p:a"
    assert copy.deepcopy(a) == a and pickle.loads(pickle.dumps(a)) == a
    for change in (lambda: setattr(a, "name", "c"), lambda: delattr(a, "name")):
        with pytest.raises(AttributeError):
            change()
    with pytest.raises(TypeError):
        a < ("p", "b")


def test_long_strings_and_lists_of_strings_are_written_as_json_writes_them():
    """`memo._verbatim` writes a long string or list of strings without json's encoder: the same bytes
    as `_dumps` whatever the characters (escaped ones, non-ASCII, a lone surrogate), or leaves it to it."""
    import random

    from tpbuild.memo import _VERBATIM, _chunks, _dumps, _verbatim

    rng = random.Random(7)
    alphabet = ["a", "/", "é", "字", "\U0001f600", " ", "\x7f"]
    escaped = ['"', "\\", "\n", "\x00", "\x1f"]
    values = []
    for odd in [None, *escaped, "\ud800"]:
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))) for _ in range(_VERBATIM)]
        if odd is not None:
            words[rng.randrange(len(words))] += odd
        values += [words, "".join(words), words[:_VERBATIM - 1]]
    values += [[*["x"] * _VERBATIM, 1], [*["x"] * _VERBATIM, None], ["x"] * _VERBATIM, [""] * _VERBATIM]
    plain = 0
    for v in values:
        try:
            expected = _dumps(v).encode()
        except UnicodeEncodeError:  # a lone surrogate: not UTF-8, as ever
            assert _verbatim(v) is None
            continue
        got = _verbatim(v)
        assert got is None or b"".join(got) == expected
        plain += got is not None
        assert b"".join(_chunks({"k": [v]}, 3)) == _dumps({"k": [v]}).encode()
    assert plain == 4  # the plain list of words and its string, and the lists of "x" and of ""
