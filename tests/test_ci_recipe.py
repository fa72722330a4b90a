"""The CI recipe (examples/ci/github-actions.yml) runs: its shell steps, as a runner would run them, on a
local git repository (a bare `origin`, a push to main, then a pull request branch) with a file:// shared
cache and a real Triton server for `tpbuild test`.

What is not run is what only a GitHub runner does: the `uses:` actions (checkout, setup-python, cache,
upload-artifact) are replaced by a fresh `git clone`, this venv's Python, an empty local cache per job,
and a check that the files upload-artifact would collect exist; the `install` step is skipped because
the tpbuild under test is already installed here (its bin/ is on PATH).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from test_affected import commit, git

pytestmark = pytest.mark.server

WORKFLOW = Path(__file__).resolve().parent.parent / "examples/ci/github-actions.yml"
RUNNER_ENV = {"TPBUILD_REMOTE_CACHE", "TPBUILD_REMOTE_CACHE_TOKEN", "TPBUILD_CACHE_DIR"}

MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("Y", x * FACTOR)]))
        return out
"""


def manifest(name: str, factor: float) -> str:
    return (f'[triton_model.{name}]\nversions = ["1"]\n[triton_model.{name}.config]\nmax_batch_size = 4\n'
            f'input = [{{ name = "X", data_type = "TYPE_FP32", dims = [2] }}]\n'
            f'output = [{{ name = "Y", data_type = "TYPE_FP32", dims = [2] }}]\n'
            f'[[triton_model.{name}.test]]\nname = "times {factor:g}"\ninputs = {{ X = [[1.0, 2.0]] }}\n'
            f'expected = {{ Y = [[{factor:g}, {2 * factor:g}]] }}\n')


def write_model(root: Path, name: str, factor: float) -> None:
    (root / f"models/{name}/1").mkdir(parents=True, exist_ok=True)
    (root / f"models/{name}/BUILD.toml").write_text(manifest(name, factor))
    (root / f"models/{name}/1/model.py").write_text(MODEL.replace("FACTOR", f"{factor:g}"))


def steps(event: str) -> list[dict]:
    """The workflow's steps a runner would take for `event`, checking what this test relies on."""
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert set(wf["env"]) == RUNNER_ENV  # the test supplies exactly these, as the runner would
    (job,) = wf["jobs"].values()
    chosen = []
    for step in job["steps"]:
        cond = step.get("if")
        if cond in (None, "always()"):
            pass
        else:
            m = re.fullmatch(r"github\.event_name == '(\w+)'", cond)
            assert m, f"the test does not know the condition {cond!r}"
            if m.group(1) != event:
                continue
        if "run" in step:
            assert "${{" not in step["run"], step["run"]
        chosen.append(step)
    return chosen


def run_job(event: str, clone: Path, tmp: Path, remote: Path) -> Path:
    """One job on a fresh runner: every run step in `clone`; returns the job summary file."""
    summary = tmp / f"summary-{event}.md"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TPBUILD_REMOTE_CACHE": remote.as_uri(), "TPBUILD_REMOTE_CACHE_TOKEN": "",
           "TPBUILD_CACHE_DIR": str(tmp / f"runner-cache-{event}"), "GITHUB_STEP_SUMMARY": str(summary),
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    for step in steps(event):
        if "uses" in step:
            if step["uses"].startswith("actions/upload-artifact"):
                wanted = step["with"]["path"].split()
                # The reports are always there, even when nothing was affected (JUnit only when tested).
                assert all((clone / f).exists() for f in wanted if f.endswith("report.json")), wanted
            continue
        if step.get("id") == "install":
            continue
        p = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=clone,
                           env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"{step['name']}:\n{p.stdout}\n{p.stderr}"
        assert "Traceback" not in p.stderr
    return summary


def remote_files(remote: Path) -> set[str]:
    files = (p.relative_to(remote) for p in remote.rglob("*") if p.is_file())
    return {str(p) for p in files if p.parts[0] != "tmp"}


def test_ci_recipe_on_push_then_pull_request(tmp_path):
    origin, dev, remote = tmp_path / "origin.git", tmp_path / "dev", tmp_path / "remote"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(tmp_path, "clone", "-q", str(origin), str(dev))
    (dev / "tpbuild.toml").write_text('[triton]\nversion = "24.10"\npython = "3.11"\n')
    (dev / "BUILD.toml").write_text('[model_repository.repository]\nmodels = ["//models/..."]\n')
    (dev / ".gitignore").write_text("tpbuild-out/\n")
    write_model(dev, "double", 2)
    write_model(dev, "triple", 3)
    commit(dev, "two models")
    git(dev, "push", "-q", "origin", "main")

    # Push to main: everything is built, tested and uploaded.
    main_clone = tmp_path / "main-job"
    git(tmp_path, "clone", "-q", str(origin), str(main_clone))
    summary = run_job("push", main_clone, tmp_path, remote).read_text()
    assert "| 3 | 3 | 0 | 0 | 0 |" in summary  # 3 targets, all built on this empty runner
    assert "Tests: 2 passed, 0 failed" in summary
    assert len(list(ET.parse(main_clone / "test-results.xml").getroot().iter("testcase"))) == 2
    build = json.loads((main_clone / "build-report.json").read_text())
    assert build["success"] and {a["status"] for a in build["actions"]} == {"executed"}
    uploaded = remote_files(remote)
    assert any(f.startswith("ac/") for f in uploaded)

    # A pull request changing one model: only it (and the repository) is built and tested; everything
    # else comes from the shared cache, which the pull request does not write.
    git(dev, "checkout", "-q", "-b", "faster")
    write_model(dev, "triple", 3.5)
    commit(dev, "triple: 3.5")
    git(dev, "push", "-q", "origin", "faster")
    pr_clone = tmp_path / "pr-job"
    git(tmp_path, "clone", "-q", "-b", "faster", str(origin), str(pr_clone))
    summary = run_job("pull_request", pr_clone, tmp_path, remote).read_text()
    assert remote_files(remote) == uploaded  # --no-remote-upload
    affected = json.loads((pr_clone / "affected.json").read_text())
    assert affected["since"] == git(main_clone, "rev-parse", "HEAD").strip()
    assert [a["label"] for a in affected["affected"]] == ["//:repository", "//models/triple:triple"]
    build = {(a["target"], a["mnemonic"]): a["status"]
             for a in json.loads((pr_clone / "build-report.json").read_text())["actions"]}
    assert build[("//models/triple:triple", "ModelDirectory")] == "executed"
    assert build[("//models/triple:triple", "TritonConfig")] == "remote"  # unchanged config: shared cache
    assert build[("//models/double:double", "ModelDirectory")] == "remote"
    cases = [tc.get("name") for tc in ET.parse(pr_clone / "test-results.xml").getroot().iter("testcase")]
    assert cases == ["times 3.5"]  # only the affected model is tested
    assert "Tests: 1 passed, 0 failed" in summary
    assert "### tpbuild build --changed-since origin/main: succeeded" in summary
    assert "### tpbuild test --changed-since origin/main: succeeded" in summary

    # A pull request that touches no input of any target: both steps succeed with nothing to do.
    git(dev, "checkout", "-q", "-b", "docs", "main")
    (dev / "README.md").write_text("notes\n")
    (dev / "models/double/BUILD.toml").write_text("# reviewed\n" + manifest("double", 2))
    commit(dev, "docs")
    git(dev, "push", "-q", "origin", "docs")
    docs_clone = tmp_path / "docs-job"
    git(tmp_path, "clone", "-q", "-b", "docs", str(origin), str(docs_clone))
    (tmp_path / "summary-pull_request.md").unlink()
    summary = run_job("pull_request", docs_clone, tmp_path, remote).read_text()
    assert summary == "### tpbuild: nothing is affected since origin/main\n\n" * 2
    assert not (docs_clone / "test-results.xml").exists()
