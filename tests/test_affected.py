"""`tpbuild affected --since REF` and `build --changed-since REF` on real git repositories, through the CLI.

The workspace of the `ws` fixture sits in a subdirectory (`ws/`) of the git repository made at its
parent, so every test also covers a workspace below the repository root; the property test uses a
copy of the examples at a repository root.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}

TOML = '[triton]\nversion = "24.10"\npython = "3.11"\n'


def git(repo: Path, *args: str) -> str:
    p = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert p.returncode == 0, p.stderr
    return p.stdout


def commit(repo: Path, message: str, *paths: str) -> str:
    git(repo, "add", "-A", *(paths or ["."]))
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


CLASS = "class TritonPythonModel:\n    pass\n"  # a model file without it is refused at analysis


def model(name: str, mbs: int = 4, env: str = "") -> str:
    return (f'[triton_model.{name}]\nversions = ["1"]\n' + (f'env = "{env}"\n' if env else "") +
            f'[triton_model.{name}.config]\nmax_batch_size = {mbs}\n'
            f'input = [{{ name = "X", data_type = "TYPE_FP32", dims = [2] }}]\n'
            f'output = [{{ name = "Y", data_type = "TYPE_FP32", dims = [2] }}]\n')


def add_model(ws, pkg: str, name: str, **kw) -> None:
    ws.write(f"{pkg}/BUILD.toml", model(name, **kw))
    ws.write(f"{pkg}/1/model.py", f"# model {name}\n{CLASS}")


@pytest.fixture
def repo(ws, tmp_path):
    """ws/ inside a git repository at tmp_path, with two models and two repositories, committed."""
    ws.write("tpbuild.toml", TOML)
    add_model(ws, "models/a", "a")
    add_model(ws, "models/b", "b")
    ws.write("BUILD.toml", '[model_repository.every]\nmodels = ["//models/..."]\n\n'
                           '[model_repository.only_b]\nmodels = ["//models/b"]\n')
    (tmp_path / ".gitignore").write_text("/cache/\n/tmp/\n/report-*\n")  # the fixtures' files beside ws/
    git(tmp_path, "init", "-q", "-b", "main")
    commit(tmp_path, "init")
    # Temporary worktrees go here, so the tests can see that none is left behind.
    ws.env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    return tmp_path


def affected(ws, ref: str = "HEAD", *patterns: str) -> dict:
    r = ws.run("affected", "--since", ref, "--output", "json", *patterns, check=True)
    return json.loads(r.stdout)


def labels(data: dict) -> set[str]:
    return {a["label"] for a in data["affected"]}


def reasons(data: dict) -> dict[str, list[str]]:
    return {a["label"]: a["reasons"] for a in data["affected"]}


def assert_nothing_left(repo: Path, status_before: str) -> None:
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == status_before
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    assert not list((repo / "tmp").iterdir())


def test_model_py_edit_affects_that_model_and_the_repositories_holding_it(ws, repo):
    (ws.root / "models/a/1/model.py").write_text("# model a, edited\n" + CLASS)
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    data = affected(ws)
    assert data["since"] == git(repo, "rev-parse", "HEAD").strip()
    assert reasons(data) == {"//models/a:a": ["source changed: models/a/1/model.py"],
                             "//:every": ["dependency affected: //models/a:a"]}
    assert data["added"] == [] and data["removed"] == []
    r = ws.run("affected", "--since", "main", check=True)  # plain output: one label a line
    assert r.stdout.splitlines() == ["//:every", "//models/a:a"]
    assert_nothing_left(repo, status)
    # The REF side was analysed with a temporary memo: the user's cache holds one workspace memo.
    assert len(list((ws.cache / "workspaces").iterdir())) == 1
    # Patterns restrict what is listed.
    assert labels(affected(ws, "HEAD", "//models/...")) == {"//models/a:a"}


def test_env_requirements_change_affects_every_model_using_it_and_nothing_else(ws, repo):
    ws.write("envs/BUILD.toml", '[python_env.e]\npython = "3.11"\nmanager = "venv"\n'
                                'requirements = "requirements.txt"\n')
    ws.write("envs/requirements.txt", "numpy<2\n")
    add_model(ws, "models/c", "c", env="//envs:e")
    add_model(ws, "models/d", "d", env="//envs:e")
    commit(repo, "env")
    ws.write("envs/requirements.txt", "numpy<2\ntabulate==0.9.0\n")
    data = affected(ws)
    assert reasons(data) == {
        "//envs:e": ["source changed: envs/requirements.txt"],
        "//models/c:c": ["dependency affected: //envs:e"],
        "//models/d:d": ["dependency affected: //envs:e"],
        "//:every": ["dependency affected: //models/c:c", "dependency affected: //models/d:d"],
    }


def test_changed_attribute_of_one_target_in_a_multi_target_manifest_affects_only_it(ws, repo):
    ws.write("models/multi/BUILD.toml", model("x") + "\n" + model("y"))
    ws.write("models/multi/1/model.py", "# shared\n" + CLASS)
    commit(repo, "multi")
    text = (ws.root / "models/multi/BUILD.toml").read_text()
    head, sep, tail = text.partition("[triton_model.y]")
    (ws.root / "models/multi/BUILD.toml").write_text(head + sep + tail.replace("max_batch_size = 4",
                                                                               "max_batch_size = 8"))
    assert reasons(affected(ws)) == {"//models/multi:y": ["attribute changed: config.max_batch_size"],
                                     "//:every": ["dependency affected: //models/multi:y"]}


def test_workspace_config_reaching_keys_affects_everything_and_other_settings_nothing(ws, repo):
    (ws.root / "tpbuild.toml").write_text(TOML + '[cache]\ndir = "elsewhere"\n')
    assert affected(ws)["affected"] == []  # where the cache lives is in no key
    (ws.root / "tpbuild.toml").write_text(TOML + '[cache]\nsalt = "2"\n')
    data = affected(ws)
    assert labels(data) == {"//models/a:a", "//models/b:b", "//:every", "//:only_b"}
    assert all(r[0] == "workspace config changed" for r in reasons(data).values())


def test_added_removed_and_renamed_targets(ws, repo):
    shutil.rmtree(ws.root / "models/b")
    add_model(ws, "models/new", "new")
    text = (ws.root / "models/a/BUILD.toml").read_text()
    (ws.root / "models/a/BUILD.toml").write_text(text.replace("triton_model.a", "triton_model.a2"))
    ws.write("BUILD.toml", '[model_repository.every]\nmodels = ["//models/..."]\n')
    data = affected(ws)
    assert data["added"] == ["//models/a:a2", "//models/new:new"]
    assert data["removed"] == ["//:only_b", "//models/a:a", "//models/b:b"]
    assert reasons(data) == {"//:every": [
        "dependency added: //models/a:a2", "dependency added: //models/new:new",
        "dependency removed: //models/a:a", "dependency removed: //models/b:b"]}
    r = ws.run("affected", "--since", "HEAD", check=True)
    assert r.stdout.splitlines() == ["//:every", "//models/a:a2", "//models/new:new"]
    assert "removed since HEAD: //models/b:b" in r.stderr


def test_uncommitted_staged_and_untracked_changes_count(ws, repo):
    (ws.root / "models/a/1/model.py").write_text("# staged\n" + CLASS)
    git(repo, "add", "ws/models/a/1/model.py")
    (ws.root / "models/b/1/helper.py").write_text("# untracked, shipped in the version directory\n")
    add_model(ws, "models/untracked", "u")
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    data = affected(ws)
    assert reasons(data)["//models/a:a"] == ["source changed: models/a/1/model.py"]
    assert reasons(data)["//models/b:b"] == ["source added: models/b/1/helper.py"]
    assert data["added"] == ["//models/untracked:u"]
    assert_nothing_left(repo, status)  # the index and the untracked files are as they were


def test_comment_only_manifest_edit_affects_nothing(ws, repo):
    for rel in ("BUILD.toml", "models/a/BUILD.toml", "tpbuild.toml"):
        p = ws.root / rel
        p.write_text("# a comment\n" + p.read_text().replace("\n[", "\n\n# and another\n[") + "# the end\n")
    assert affected(ws) == {"since": git(repo, "rev-parse", "HEAD").strip(), "affected": [], "added": [],
                            "removed": []}
    r = ws.run("build", "--changed-since", "HEAD", check=True)
    assert r.stdout.strip() == "nothing is affected since HEAD"


def test_build_changed_since_executes_only_the_affected_actions(ws, repo, tmp_path):
    full = ws.build(check=True)
    keys = {(a["target"], a["mnemonic"]): a["key"] for a in full.report["actions"]}
    (ws.root / "models/a/1/model.py").write_text("# model a, edited\n" + CLASS)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    r = ws.run("build", "--changed-since", "HEAD", "--summary", str(summary), check=True)
    # //models/b:b is there as a dependency of //:every, all from the cache.
    assert set(r.report["targets"]) == {"//models/a:a", "//models/b:b", "//:every"}
    assert r.statuses("executed") == ["//models/a:a%ModelDirectory", "//:every%ModelRepository"]
    # Exactly the actions whose keys changed ran; the unchanged config of //models/a came from the cache.
    changed = {(a["target"], a["mnemonic"]) for a in r.report["actions"] if keys[(a["target"], a["mnemonic"])] != a["key"]}
    assert changed == {("//models/a:a", "ModelDirectory"), ("//:every", "ModelRepository")}
    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended
    assert "| targets | built | local cache | remote cache | failed | time |" in text
    assert re.search(r"\| 3 \| 2 \| 1 \| 0 \| 0 \| [\d.]+ s \|", text), text  # b: local cache
    assert "`//models/a:a` ModelDirectory | executed" in text


def test_bad_input_exits_2_and_leaves_nothing_behind(ws, repo, tmp_path_factory):
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    r = ws.run("affected", "--since", "no-such-branch")
    assert r.returncode == 2 and "'no-such-branch' is not a commit" in r.stderr
    r = ws.run("build", "--changed-since", "HEAD~5")
    assert r.returncode == 2 and "is not a commit" in r.stderr
    # A manifest that does not parse at REF is named at REF, not by its temporary path.
    (ws.root / "models/b/BUILD.toml").write_text("[triton_model.b\n")
    commit(repo, "broken")
    (ws.root / "models/b/BUILD.toml").write_text(model("b"))
    r = ws.run("affected", "--since", "HEAD")
    assert r.returncode == 2, r.output
    assert re.search(r"error: HEAD:ws/models/b/BUILD\.toml:1: invalid TOML.*\(in the tree at HEAD\)", r.stderr), r.stderr
    assert "tpbuild-affected" not in r.stderr
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    assert_nothing_left(repo, status)
    # A workspace that is not in a git repository.
    plain = tmp_path_factory.mktemp("nogit") / "ws"
    shutil.copytree(ws.root, plain)
    r = ws.run("-C", str(plain), "affected", "--since", "HEAD")
    assert r.returncode == 2 and "is not in a git repository" in r.stderr


# -- property: the affected set covers every target whose action keys change ---------------------------

def _edits(path: Path) -> list:
    """Single-file edits for a file of the examples: (name, new text from old)."""
    def add(line):
        return lambda t: t + line

    out = [("comment", add("\n# edited\n"))] if path.suffix in (".py", ".toml", ".pbtxt") else []
    if path.suffix == ".py":
        out.append(("code", add("\nEDITED = 1\n")))
    if path.suffix == ".txt":
        out += [("new line", add("zebra\n")), ("duplicate line", lambda t: t + t.splitlines()[0] + "\n")]
    if path.name == "BUILD.toml" and "max_batch_size = 8" in path.read_text():
        out.append(("attribute", lambda t: t.replace("max_batch_size = 8", "max_batch_size = 16")))
    return out


def _keys(run) -> dict[str, set]:
    keys: dict[str, set] = {}
    for a in run.report["actions"]:
        keys.setdefault(a["target"], set()).add((a["mnemonic"], a["key"]))
    return keys


def test_affected_covers_every_target_whose_keys_change(examples):
    # The python_env target is left out: building it takes half a minute a revision.
    shutil.rmtree(examples.root / "envs")
    shutil.rmtree(examples.root / "models/table")
    git(examples.root, "init", "-q", "-b", "main")
    commit(examples.root, "examples")
    base = _keys(examples.build(check=True))
    deps = {d["label"]: set(d["deps"]) for d in json.loads(examples.run("query", "//...", "--output", "json",
                                                                        check=True).stdout)}
    files = sorted(git(examples.root, "ls-files").split())
    rng = random.Random(166)  # a seed whose five edits span attribute, code, data, config and comment edits
    # First the early-cutoff case by name, then random single-file edits.
    plan = [("models/labeler/classes.txt", "duplicate line")]
    for _ in range(5):
        f = rng.choice(files)
        plan.append((f, rng.choice([name for name, _ in _edits(examples.root / f)] or [None])))
    seen_cutoff = False
    for rel, edit in plan:
        if edit is None:
            continue
        p = examples.root / rel
        p.write_text(dict(_edits(p))[edit](p.read_text()))
        data = affected(examples)
        got = labels(data) | set(data["added"])
        keys = _keys(examples.build(check=True))
        changed = {t for t in keys if keys[t] != base.get(t)}
        assert changed <= got, (rel, edit, changed - got)
        # More only where an upstream output came out byte-identical: the extra target depends on a
        # target whose keys did change (its new result equal to the old one, so no key below moved).
        for extra in got - changed:
            assert _closure(extra, deps) & changed, (rel, edit, extra, changed)
            seen_cutoff = True
        git(examples.root, "checkout", "-q", "--", rel)
    assert seen_cutoff  # the duplicated label sorts away: //models/labeler:labeler is affected, keys equal


def _closure(label: str, deps: dict[str, set]) -> set[str]:
    out, stack = set(), list(deps[label])
    while stack:
        d = stack.pop()
        if d not in out:
            out.add(d)
            stack.extend(deps.get(d, ()))
    return out
