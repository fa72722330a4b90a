"""value.Value and value.Frozen: the engine's records behave as the dataclasses they replaced did."""

from __future__ import annotations

import copy
import pickle
import sys
import subprocess

import pytest

from tpbuild.action import Artifact, Entry, EntryKind, RunAction, Source, Symlink, TreeAction, WriteAction
from tpbuild.analysiscache import Declared, PackageRecord
from tpbuild.label import Label, Pattern
from tpbuild.targetinfo import TargetInfo
from tpbuild.workspace import CacheSection, RemoteSection


def _run(**kw) -> RunAction:
    return RunAction(**{"id": "//p:t%Gen", "owner": Label("p", "t"), "mnemonic": "Gen", "rule": "genrule",
                        "rule_version": "1", "inputs": (("a", Source("p/a")),), "argv": ("true",), "outs": ("o",),
                        **kw})


def test_equality_and_hash_see_the_compared_fields_and_the_class():
    a = _run()
    assert a == _run(description="shown", log_hint="x", tools={"t": "1"}, code_modules=("m",), local_only=True)
    assert hash(a) == hash(_run(description="shown"))
    assert a != _run(argv=("false",)) and a != _run(exec_properties=(("pool", "big"),))
    tree = TreeAction("//p:t%Gen", Label("p", "t"), "Gen", "genrule", "1", (("a", Source("p/a")),))
    assert tree != a and a != tree  # another class, the same shared fields
    assert Source("x") == Source("x") and Source("x") != Artifact("x") and len({Source("x"), Source("x")}) == 1
    with pytest.raises(TypeError):
        hash(TargetInfo("r", None, {"v": 1}))  # a dict among the compared fields, as the dataclass had


def test_repr_replace_and_immutability():
    assert repr(Source("x")) == "Source(path='x')"
    assert repr(Pattern("p", recursive=True)) == "Pattern(package='p', name=None, recursive=True, negative=False)"
    a = _run()
    assert repr(a).startswith("RunAction(id='//p:t%Gen', owner=Label(package='p', name='t'), mnemonic='Gen'")
    b = a.replace(argv=("false",))
    assert b.argv == ("false",) and a.argv == ("true",) and b.outs == a.outs and b.__class__ is RunAction
    for change in (lambda: setattr(a, "argv", ()), lambda: delattr(a, "argv")):
        with pytest.raises(AttributeError):
            change()
    with pytest.raises(TypeError):
        RunAction("//p:t%Gen", Label("p", "t"), "Gen", "genrule", "1", ("true",))  # argv is keyword-only
    w = WriteAction("//p:t%W", Label("p", "t"), "W", "write", "1", out="o", content=b"x")
    assert copy.deepcopy(w) == w and pickle.loads(pickle.dumps(a)) == a


def test_an_entry_converts_its_kind_and_refuses_a_symlink():
    e = Entry("a", "x", "xxh3_128:0", 1)
    assert e.kind is EntryKind.EXECUTABLE and e.executable and e == Entry.file("a", "xxh3_128:0", 1, True)
    with pytest.raises(ValueError):
        Entry("a", "l", "t", 0)
    assert Symlink("a", "t").kind is EntryKind.SYMLINK and Symlink("a", "t").size == 0


def test_mutable_records_and_tables():
    rec = PackageRecord({"BUILD.toml": (1, 2, 3, 4)})
    assert rec.targets == [] and rec.facts == {} and rec.targets is not PackageRecord({}).targets
    rec.gen = "g"
    assert rec == PackageRecord({"BUILD.toml": (1, 2, 3, 4)}, gen="g") and rec.replace(gen="h").gen == "h"
    with pytest.raises(TypeError):
        hash(rec)
    d = Declared("i", "tree", "M", (), "", "")
    assert d == Declared("i", "tree", "M", (), "", "") and d._action is None and not d.decoded
    assert RemoteSection().exec_properties is not RemoteSection().exec_properties  # each instance's own dict
    assert CacheSection(salt="s") == CacheSection(salt="s") != CacheSection()
    with pytest.raises(TypeError):
        CacheSection(nonsense=1)


def test_a_deferred_target_info_makes_its_values_when_read():
    made = []
    info = TargetInfo.deferred("r", Artifact("a"), lambda: made.append(1) or {"k": "v"})
    assert not made and info.values == {"k": "v"} and info.values == {"k": "v"} and made == [1]
    assert info == TargetInfo("r", Artifact("a"), {"k": "v"})


def test_a_build_imports_no_dataclasses_nor_typing():
    """What the records were made plain for: the modules of a build's path import neither."""
    code = ("import sys; import tpbuild.cli, tpbuild.noop, tpbuild.incremental, tpbuild.delta, tpbuild.build, "
            "tpbuild.analysis, tpbuild.graph, tpbuild.explain, tpbuild.console; "
            "print(sorted({'dataclasses', 'typing', 'inspect'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
