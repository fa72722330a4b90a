"""What a rule-set command gets: the CLI's session, seen through `tpbuild.plugin.Session` only.

In-process on a real workspace in a temporary directory (a rule-set command runs in the CLI's process
too); `tests/test_tpbuild_test.py` covers `tpbuild test`, the Triton rule set's command, end to end.
"""

from __future__ import annotations

from tpbuild import cli, workspace
from tpbuild.plugin import Analysed, Built, Label, Session


def session(tmp_path) -> Session:
    root = tmp_path / "ws"
    (root / "p").mkdir(parents=True)
    (root / "tpbuild.toml").write_text("")
    (root / "p/BUILD.toml").write_text('[genrule.g]\nsrcs = ["in.txt"]\nouts = ["o.txt"]\ncmd = "cp p/in.txt $OUT"\n'
                                       '[genrule.bad]\nouts = ["o.txt"]\ncmd = "false"\n')
    (root / "p/in.txt").write_text("hello\n")
    return cli.Session(workspace.load(root), tmp_path / "cache")


def test_analyse_build_and_output_through_the_protocol(tmp_path, capsys):
    s = session(tmp_path)
    assert isinstance(s, Session)
    g = Label("p", "g")
    a = s.analyse(["//p:g"])
    assert isinstance(a, Analysed) and a.requested == (g,) and a.infos[g].rule == "genrule"
    assert s.output(g) == s.root / "tpbuild-out/p/g" and not s.output(g).exists()  # analysis builds nothing

    built = s.build(["//p:g"], jobs=1)
    assert isinstance(built, Built) and built.success and built.requested == (g,)
    assert (s.output(g) / "o.txt").read_text() == "hello\n"
    assert "Built 1/1 targets" in capsys.readouterr().out  # reported as `tpbuild build` does

    failed = s.build(["//p:bad"], jobs=1)
    assert failed is not None and not failed.success
    assert "error: //p:bad: Genrule exited with code 1" in capsys.readouterr().err
    assert s.section("triton") == {}
