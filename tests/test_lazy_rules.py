"""Rule sets are imported only when a rule runs, and a changed or newly installed rule set is still
noticed (tpbuild/rulesets.py), through the real CLI with a third-party rule set on PYTHONPATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RULES = '''
import os
from pathlib import Path

from tpbuild.plugin import Attrs, Rule, TargetInfo

Path(os.environ["IMPORTED"]).touch()  # this rule set was imported
TEXT = {text!r}


class EchoAttrs(Attrs):
    out: str


class Echo(Rule):
    name = "echo"
    version = "1"
    attrs = EchoAttrs
    sections = ("echo",)

    def analyze(self, ctx, attrs):
        return TargetInfo(rule=self.name, output=ctx.write("Echo", attrs.out, TEXT.encode()))


RULES = [Echo]
'''


def _install(site: Path, name: str, text: str, rule: str = "echo") -> None:
    """A rule set as pip installs one: its package and a dist-info naming its entry point."""
    (site / name).mkdir(parents=True, exist_ok=True)
    (site / name / "__init__.py").write_text(RULES.format(text=text).replace('"echo"', repr(rule)))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[tpbuild.rules]\n{name} = {name}:RULES\n")


def _age(*paths: Path) -> None:
    """Past the racy window, as if written a minute ago."""
    t = time.time() - 60
    for p in paths:
        os.utime(p, (t, t))


def test_valid_records_import_no_rule_set_and_changes_are_noticed(ws, tmp_path):
    site = tmp_path / "site"
    imported = tmp_path / "imported"
    _install(site, "echo_rules", "one")
    ws.env.update(PYTHONPATH=str(site), IMPORTED=str(imported))
    (ws.root / "tpbuild.toml").write_text("[echo]\n")
    manifest = ws.write("p/BUILD.toml", '[echo.a]\nout = "a.txt"\n')
    _age(manifest, ws.root / "p", ws.root / "tpbuild.toml", site / "echo_rules" / "__init__.py")

    first = ws.build(check=True)
    assert first.report["analysis"]["reanalysed_packages"] == 1
    assert imported.exists()
    assert ws.out("p/a/a.txt").read_text() == "one"

    # Every record valid: neither the rule set nor the Triton rules are imported, and its
    # [echo] table is still known as claimed.
    imported.unlink()
    (ws.root / "tpbuild-out" / ".tpbuild" / "noop").unlink(missing_ok=True)  # the ordinary path, not the stamp
    again = ws.build(check=True)
    assert again.report["analysis"]["reanalysed_packages"] == 0
    assert not imported.exists()

    # The rule set's code edited: noticed, its rule runs again and the output follows.
    _install(site, "echo_rules", "two")
    _age(site / "echo_rules" / "__init__.py")
    edited = ws.build(check=True)
    assert edited.report["analysis"]["reanalysed_packages"] == 1
    assert ws.out("p/a/a.txt").read_text() == "two"

    # A rule set installed beside it: read from the distributions again, and its rule can be used.
    _install(site, "other_rules", "three", rule="other")
    ws.write("q/BUILD.toml", '[other.b]\nout = "b.txt"\n')
    installed = ws.build(check=True)
    assert ws.out("q/b/b.txt").read_text() == "three"
    assert installed.report["analysis"]["reanalysed_packages"] >= 1

    # Removed again: its targets are reported as today.
    shutil.rmtree(site / "other_rules-1.0.dist-info")
    shutil.rmtree(site / "other_rules")
    gone = ws.build()
    assert gone.returncode == 2, gone.output
    assert "q/BUILD.toml" in gone.output and "other" in gone.output


def test_unknown_table_is_reported_from_the_memo_too(ws, tmp_path):
    ws.write("p/BUILD.toml", '[genrule.a]\nouts = ["a.txt"]\ncmd = "echo a > $OUT"\n')
    ws.build(check=True)
    (ws.root / "tpbuild.toml").write_text("[workspace]\n\n[tritn]\nx = 1\n")
    r = ws.build()
    assert r.returncode == 2, r.output
    assert "tpbuild.toml:3" in r.output and "unknown table [tritn]" in r.output and "[triton]" in r.output


def test_a_new_file_on_the_import_path_reads_the_entry_points_again_only_if_it_can_change_them(ws):
    """Under `python -m tpbuild` the working directory is on the import path: a file made there moves
    its stat, which alone does not make tpbuild read the installed distributions again (importing
    importlib.metadata); a distribution's metadata there, or a module there that an entry point's
    would now be found as, does."""
    manifest = ws.write("p/BUILD.toml", '[genrule.a]\nouts = ["a.txt"]\ncmd = "echo a > $OUT"\n')
    _age(manifest, ws.root / "p", ws.root / "tpbuild.toml")  # so that analysis comes from the memo

    def read_again() -> bool:
        (ws.root / "tpbuild-out" / ".tpbuild" / "noop").unlink(missing_ok=True)  # the ordinary path
        p = subprocess.run([sys.executable, "-X", "importtime", "-m", "tpbuild", "build", "//..."], cwd=ws.root,
                           capture_output=True, text=True, env=ws.env)
        assert p.returncode == 0, p.stdout + p.stderr
        return any(line.rstrip().endswith("| importlib.metadata") for line in p.stderr.splitlines())

    assert read_again()  # the first build from this directory
    assert not read_again()
    (ws.root / "notes.txt").write_text("a file beside the workspace's\n")
    assert not read_again()
    info = ws.root / "extra-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: extra\nVersion: 1.0\n")
    assert read_again()
    assert not read_again()
    (ws.root / "tpbuild_triton.py").write_text("RULES = []\n")  # found before the Triton rule set now
    assert read_again()
