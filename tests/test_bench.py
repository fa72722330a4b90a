"""The benchmark harness (bench/) at toy size: it runs every scenario against the real peers, prints
the table, and stops when a peer builds other bytes than tpbuild. No time is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import run as bench  # noqa: E402
from measure import BenchError  # noqa: E402


def test_harness_runs_every_scenario_with_the_peers_and_checks_their_trees(tmp_path: Path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--sizes", "5", "--reps", "1", "--slow-reps", "1",
                        "--big-size", "1M", "--sleeps", "4", "--workdir", str(tmp_path / "work"), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["meta"]["peers"] == ["make", "ninja", "doit"], doc["meta"]["skipped"]  # CI installs all three
    assert "| N | scenario | tpbuild | make | ninja | doit |" in p.stdout
    rows = {(r["scenario"], r["tool"]) for r in doc["results"]}
    for scenario in ("clean", "noop", "edit", "restore"):
        assert {(scenario, t) for t in ("tpbuild", "make", "ninja", "doit")} <= rows
    assert ("noop-ordinary", "tpbuild") in rows and ("clean", "tpbuild -j1") in rows
    edit = next(r for r in doc["results"] if r["scenario"] == "edit" and r["tool"] == "tpbuild")
    assert edit["executed"] == 2  # the edited model's directory, and the repository holding it
    # 5 models x (config, model.py, labels.txt) twice (model dir, repository) + the genrule's output
    assert "N=5 clean: 31 files identical in tpbuild, make, ninja, doit" in doc["checks"]
    assert "N=5 restore: 31 files identical in tpbuild, make, ninja, doit" in doc["checks"]
    assert doc["big"]["bytes"] == 2**20 and doc["big"]["restored_by"] in ("hardlink", "reflink or copy")
    assert "no-op faster than make at every N" in {t["target"] for t in doc["targets"]}
    assert "peak RSS at 10,000 models" in {t["target"] for t in doc["issue16"]}
    assert doc["sleeps"]["genrules"] == 4 and doc["sleeps"]["speedup"] > 0
    assert [t["target"] for t in doc["issue16"]][0] == "clean build of 1,000 models: -j 2 no slower than -j 1"
    rows = [f"| {t['target']} | {t['measured'] or '-'} | {t['limit']} | {t['verdict']} |" for t in doc["issue16"]]
    assert (out / "results.md").read_text().rstrip().splitlines()[-len(rows):] == rows  # the table ends it
    assert (out / "results.md").read_text() in p.stdout


def test_a_peer_that_builds_other_bytes_stops_the_run(tmp_path: Path):
    def tree(name: str, labels: str) -> bench.Tool:
        root = tmp_path / name
        (root / "shared/labels").mkdir(parents=True)
        (root / "shared/labels/labels.txt").write_text(labels)
        return bench.Tool(name, None, [], [], root, 1)

    ref = tree("tpbuild", "a\nb\n")
    assert bench.compare_outputs(ref, [tree("same", "a\nb\n")]) == "1 files identical in tpbuild, same"
    with pytest.raises(BenchError, match="other's shared/labels/labels.txt differs"):
        bench.compare_outputs(ref, [tree("other", "b\na\n")])



def test_a_build_from_nothing_finds_the_last_ones_files_moved_aside_not_deleted(tmp_path):
    """The clean scenario's preparation (bench.clean_prepare): outputs and state renamed into the trash,
    so no inode is freed right before the timed run; each tool's in turn, none overwriting another's."""
    trash = tmp_path / "trash"
    prepare = bench.clean_prepare(trash)
    for name in ("a", "b"):
        (tmp_path / name / "out").mkdir(parents=True)
        (tmp_path / name / "out" / "f").write_text(name)
        (tmp_path / name / "db").write_text(name)
        prepare(bench.Tool(name, None, [tmp_path / name / "out"], [tmp_path / name / "db", tmp_path / "gone"],
                           tmp_path, 1))
        assert not (tmp_path / name / "out").exists() and not (tmp_path / name / "db").exists()
    assert sorted((p.name, p.read_text()) for p in trash.rglob("*") if p.is_file()) == [
        ("1", "a"), ("3", "b"), ("f", "a"), ("f", "b")]
