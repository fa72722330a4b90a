"""A valid package costs what the build needs of it (tpbuild/analysiscache.py, `Declared`): its
actions are kept in the analysis memo as declared (id, inputs, the definition part of the key
material) with the action itself as text, decoded only for an action whose key moved. Counted through
the report's `"analysis": {"decoded_packages": N}`; the keys stay those of the actions themselves."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tpbuild import action, analysiscache, digest, memo
from tpbuild.action import Artifact, RunAction, Source, TreeAction, WriteAction
from tpbuild.analysiscache import Declared, PackageRecord, TargetRecord
from tpbuild.errors import BuildError
from tpbuild.label import Label

PACKAGES = ("p1", "p2", "p3")


@pytest.fixture
def built(ws):
    for p in PACKAGES:
        ws.write(f"{p}/in.txt", f"{p}\n")
        ws.write(f"{p}/BUILD.toml", f"""
            [genrule.{p}]
            srcs = ["in.txt"]
            outs = ["out.txt"]
            cmd = "cat $SRCS > $OUT"
        """)
    ws.write("BUILD.toml", """
        [genrule.all]
        srcs = ["//p1:p1", "//p2:p2", "//p3:p3"]
        outs = ["all.txt"]
        cmd = "for s in $SRCS; do cat $s/out.txt; done > $OUT"
    """)
    _age(ws.root)
    first = ws.build(check=True)
    assert first.report["analysis"]["decoded_packages"] == 0  # every action analysed now, none decoded
    return ws


def _age(root) -> None:
    """Every file and directory of the workspace past the racy window, as if written a minute ago, so
    the analysis memo keeps the records it makes (a record younger than the window is made again)."""
    t = time.time() - 60
    for d, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.utime(os.path.join(d, name), (t, t), follow_symlinks=False)


def counts(run) -> tuple[int, int, int]:
    """(packages re-analysed, packages whose actions were decoded from the memo, actions settled)."""
    a = run.report["analysis"]
    return a["reanalysed_packages"], a["decoded_packages"], run.report["execution"]["settled"]


def test_a_noop_decodes_no_package(built):
    assert counts(built.build(check=True)) == (0, 0, 4)


def test_an_edited_source_decodes_its_package_and_what_reads_it(built):
    built.write("p2/in.txt", "p2, edited\n")
    run = built.build(check=True)
    assert counts(run) == (0, 2, 2)  # p2 and the root: the other two packages stay as declared
    assert sorted(run.statuses("executed")) == ["//:all%Genrule", "//p2:p2%Genrule"]
    assert built.out("all/all.txt").read_text() == "p1\np2, edited\np3\n"


def test_a_manifest_edit_re_analyses_its_package_and_decodes_its_reader(built):
    text = (built.root / "p3/BUILD.toml").read_text()
    (built.root / "p3/BUILD.toml").write_text(text.replace("cat $SRCS", "tr a-z A-Z < $SRCS"))
    _age(built.root / "p3")
    run = built.build(check=True)
    assert counts(run) == (1, 1, 2)  # p3 analysed again (its actions are new), the root decoded
    assert built.out("all/all.txt").read_text() == "p1\np2\nP3\n"
    assert counts(built.build(check=True)) == (0, 0, 4)  # and recorded: the next build decodes nothing


def test_what_moves_every_key_settles_nothing(built):
    """PATH is in every run action's key and not in the analysis memo: every package is decoded. The
    salt is in both (tpbuild.toml is in the memo's fingerprint): every package is analysed again."""
    path = f"{Path(os.__file__).parent}:{os.environ['PATH']}"
    assert counts(built.build(check=True, env={"PATH": path})) == (0, 4, 0)
    (built.root / "tpbuild.toml").write_text('[cache]\nsalt = "2"\n')
    assert counts(built.build(check=True, env={"PATH": path})) == (4, 0, 0)


def _actions() -> list:
    owner = Label("p", "t")
    common = dict(owner=owner, rule="r", rule_version="1")
    return [
        WriteAction(id="w", mnemonic="W", out="c.txt", content="é\n".encode(), tools={"t": "1"}, **common),
        TreeAction(id="t", mnemonic="T", inputs=(("c.txt", Artifact("w", "c.txt")), ("s", Source("p/s"))), **common),
        RunAction(id="r", mnemonic="R", inputs=(("", Artifact("t")),), argv=("sh", "-c", "x"), outs=("o",),
                  env=(("A", "b"),), exec_properties=(("pool", "p"),), code="xxh3_128:c", timeout=2.5,
                  local_only=True, description="d", log_hint="h", code_modules=("m",), **common),
        # Not made again from its definition (which holds its env as a mapping, sorted): kept whole.
        RunAction(id="u", mnemonic="U", argv=("true",), outs=(), env=(("B", "1"), ("A", "2")), **common),
    ]


@pytest.mark.parametrize("act", _actions(), ids=lambda a: a.id)
def test_a_declared_action_keys_as_the_action_does(act):
    """The key material is the canonical JSON of the named parts `explain` compares, and the memo's
    declaration of an action (recorded, written, read back) makes the same bytes and decodes to it."""
    inputs, salt = [("x", "fxxh3_128:1")], "s"
    material = act.key_material(inputs, salt)
    assert material == digest.canonical_json([v for _n, v in act.material_parts(inputs, salt)])
    assert Declared.of(act).material(inputs, salt) == material
    rec = PackageRecord({}, [TargetRecord(act.owner, "r", [], ("r", "t"), "p/BUILD.toml", "", [
        Declared.of(act)], None, "", False)])
    line = json.dumps(analysiscache._record_json("p", rec))
    texts = {analysiscache._text_key("p", ""): json.loads(json.dumps([d.stored_text() for d in rec.targets[0].actions]))}
    (back,) = analysiscache._record("p", json.loads(line), texts_journal=texts).targets[0].actions
    assert back.material(inputs, salt) == material and not back.decoded
    assert back.upstream() == act.upstream()
    assert back.action == act and back.decoded
    assert memo.encode_text(back.action, analysiscache.action_types()) == \
        memo.encode_text(act, analysiscache.action_types())  # the fields equality passes over too
    assert (act.id == "u") == ("RunAction" in back.text)  # only what its definition does not make again: whole
    assert action.key_of(back.action.key_material(inputs, salt)) == action.key_of(material)


@pytest.mark.parametrize("rows", [[], [("x", "fxxh3_128:1")], [("", "d1"), ("1/model.py", "f2")],
                                  [("é \"q\" \\ \n \x01 \u2028 \ud7ff", "\t")], [("c", "a1", "")], [()]])
def test_input_digests_enter_a_key_as_their_canonical_json(rows):
    """A key's input digests are encoded without json.dumps (`digest.canonical_rows`): the same bytes,
    for names that JSON escapes too, in pairs or (as `affected` names an upstream's file) triples; a
    value that is not a string is an error, not another encoding."""
    assert digest.canonical_rows(rows) == digest.canonical_json(rows)
    assert digest.canonical_rows([list(r) for r in rows]) == digest.canonical_json(rows)
    with pytest.raises(TypeError):
        digest.canonical_rows([("x", 1)])


def test_a_hand_damaged_declaration_is_an_error_naming_the_way_out(built):
    """A record is one line of the memo: a torn one does not parse and is a miss. An action's text
    in a list of texts that parses is damaged only by hand; decoding it is then an error saying what to do."""
    (memo_file,) = built.cache.glob("workspaces/*/analysis-text")
    text = memo_file.read_text()
    assert text.count("['Label',['p1','p1']]") == 1  # the owner of p1's action, in its text
    memo_file.write_text(text.replace("['Label',['p1','p1']]", "['Bogus',['p1','p1']]"))
    built.write("p1/in.txt", "p1, edited\n")  # its action's key moves: decoded for the scheduler
    run = built.build()
    assert run.returncode == 1 and "is damaged" in run.stderr and "tpbuild clean" in run.stderr
    assert built.run("clean").returncode == 0
    assert counts(built.build(check=True))[0] == 4  # analysed again from nothing
    assert built.out("all/all.txt").read_text() == "p1, edited\np2\np3\n"


def test_info_values_that_are_not_plain_json_are_decoded_when_read():
    """A target's info values holding labels (a repository's models by name) are kept as text and made
    when first read: equal to what was recorded, and to an info made with them."""
    from tpbuild.targetinfo import TargetInfo

    values = {"models": {"m": Label("p", "m")}, "n": (1, 2)}
    info = TargetInfo("r", Artifact("p:t%T"), values)
    rec = PackageRecord({}, [TargetRecord(Label("p", "t"), "r", [], ("r", "t"), "p/BUILD.toml", "", [], info,
                                          analysiscache.info_digest(info), False)])
    back = analysiscache._record("p", json.loads(json.dumps(analysiscache._record_json("p", rec)))).targets[0].info
    assert "values" not in vars(back)  # not decoded yet
    assert back == info and back.values == values and back.values["models"]["m"] == Label("p", "m")
    assert analysiscache.info_digest(back) == analysiscache.info_digest(info)
    damaged = analysiscache._record("p", json.loads(json.dumps(analysiscache._record_json("p", rec)).replace(
        "Label", "Bogus"))).targets[0].info
    with pytest.raises(BuildError, match="damaged.*tpbuild clean"):
        damaged.values


def test_a_record_of_another_shape_is_not_decoded():
    """A record whose parts are not of the memo's shape does not decode (the journal then drops it: a
    miss, the package analysed again), rather than decoding to something the build never recorded."""
    from tpbuild.targetinfo import TargetInfo

    info = TargetInfo("r", Artifact("p:t%T"), {})
    act = _actions()[0]
    rec = PackageRecord({"p/BUILD.toml": (1, 2, 3, 4)}, [TargetRecord(Label("p", "t"), "r", [Label("q", "u")],
                        ("r", "t"), "p/BUILD.toml", "", [Declared.of(act)], info, "", False)], {}, "g")
    good = analysiscache._record_json("p", rec)
    assert analysiscache._record_json("p", analysiscache._record("p", json.loads(json.dumps(good)))) == good

    def damaged(change):
        v = json.loads(json.dumps(good))
        change(v, v[1][0])
        with pytest.raises(memo._UNDECODABLE):
            analysiscache._record("p", v)

    damaged(lambda v, t: t[7].__setitem__(1, ["p:t%T"]))  # an output not an (action, path) pair
    damaged(lambda v, t: t[6][0].__setitem__(3, ["x", None]))  # inputs not triples
    damaged(lambda v, t: v.__setitem__(3, 7))  # a generation not text
    damaged(lambda v, t: v.__setitem__(2, {"m.py": 1}))  # facts not text
    damaged(lambda v, t: v[0].__setitem__(1, v[0][1][:-2]))  # sigs not one a watched path
    damaged(lambda v, t: v[0].__setitem__(0, [5]))  # a watched path not text
    damaged(lambda v, t: v[0].__setitem__(2, []))  # other states not by path
    # Sigs of the right length that are not hex: found when first read (a no-op build compares their text).
    v = json.loads(json.dumps(good))
    v[0][1] = "z" * 64
    with pytest.raises(ValueError):
        analysiscache._record("p", v).observed
    damaged(lambda v, t: v.__setitem__(1, [t[:9]]))  # a target of nine fields


def test_facts_are_kept_as_text_and_a_damaged_one_is_a_change(tmp_path):
    """A file's facts are read from the memo only when its stat moved: kept as their text, written
    back as read; a text that does not decode is a change (the package is analysed again), not an error."""
    from tpbuild.facts import entry as fact_entry

    f = tmp_path / "m.py"
    f.write_text("x = 1\n")
    entry = fact_entry(digest.of_bytes, (), digest.of_bytes(b"x = 1\n"))  # a pure module-level function
    rec = PackageRecord({"m.py": (1, 2, 3, 4)}, [], {"m.py": entry}, "g")
    line = json.dumps(analysiscache._record_json("p", rec))
    back = analysiscache._record("p", json.loads(line))
    assert isinstance(back.facts["m.py"], str)
    assert json.dumps(analysiscache._record_json("p", back)) == line  # written back as read
    assert memo.decode(analysiscache._json(back.facts["m.py"]), analysiscache.memo_types()) == entry
    assert analysiscache._same_facts(str(f), back.facts["m.py"])
    assert not analysiscache._same_facts(str(f), back.facts["m.py"][:-3])  # damaged: a change
    f.write_text("x = 2\n")
    assert not analysiscache._same_facts(str(f), back.facts["m.py"])
