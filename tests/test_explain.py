"""`--explain` and the report's `"why"`: each kind of change names its own cause, through the real CLI
on one workspace changed step by step (a source, an attribute, written content, an upstream output,
a rule set module, the cache, PATH), then in-process for the parts no workspace edit reaches."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tpbuild import action, code, digest, explain
from tpbuild.action import Artifact, RunAction, Source
from tpbuild.label import parse_label

from conftest import REPO
from test_engine import two_step
from test_validation import MODEL_PY, _env_tarball

FIRST = "no record (first build of this action)"
NAMES, NAMES_EMU, CAT, OWL = b"cat\ndog\n", b"cat\ndog\nemu\n", b"cat\n", b"owl\n"


def d8(data: bytes) -> str:
    return digest.hex_part(digest.of_bytes(data))[:8]


def whys(r) -> dict[str, str]:
    """action -> why, for every action that has one."""
    return {f"{a['target']}%{a['mnemonic']}": a["why"] for a in r.report["actions"] if "why" in a}


def explained(r) -> dict[str, str]:
    """What --explain printed: `target mnemonic` -> why."""
    lines = [l.removeprefix("explain: ") for l in r.stdout.splitlines() if l.startswith("explain: ")]
    return {f"{l.split(': ', 1)[0].replace(' ', '%')}": l.split(": ", 1)[1] for l in lines}


def test_each_kind_of_change_names_its_cause(ws, tmp_path):
    rules = tmp_path / "ruleset" / "tpbuild_triton"
    shutil.copytree(REPO / "rules", rules, ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(rules.parent)}
    two_step(ws)  # gen: upper (names.txt) -> count; other
    ws.write("gen/names.txt", NAMES.decode())
    # A model importing a module from its env: its ImportCheck runs the rule set's pycheck.
    (ws.root / "m").mkdir()
    tarball = _env_tarball("bin/activate", "lib/python3.11/site-packages/numpy/__init__.py")
    (ws.root / "m/env.tar.gz").write_bytes(tarball)
    ws.write("m/BUILD.toml", '[triton_model.m]\nversions = ["1"]\nenv = "env.tar.gz"\n')
    ws.write("m/1/model.py", "import numpy\n" + MODEL_PY)

    def build(*extra: str, check=True, **kw):
        return ws.build("//...", "--explain", check=check, env={**env, **kw.pop("env", {})}, **kw)

    # First build: every action ran, for want of a record; --explain prints what the report says.
    r = build()
    ran = set(r.statuses("executed"))
    assert {"//gen:upper%Genrule", "//gen:count%Genrule", "//m:m%ImportCheck"} <= ran
    assert whys(r) == {a: FIRST for a in ran}
    assert explained(r) == whys(r)

    # Nothing changed: nothing to explain (and nothing printed); nor after a clean, all from the cache.
    r = build()
    assert r.statuses("executed") == [] and whys(r) == {} and "explain:" not in r.stdout
    ws.run("clean")
    r = build()
    assert r.statuses("executed") == [] and whys(r) == {}

    # A source edit, and its upstream output reaching the next action, path by path.
    ws.write("gen/names.txt", NAMES_EMU.decode())
    r = build()
    assert whys(r) == {
        "//gen:upper%Genrule": f"input gen/names.txt changed ({d8(NAMES)} -> {d8(NAMES_EMU)})",
        "//gen:count%Genrule": (f"upstream output //gen:upper%Genrule changed: upper.txt "
                                f"({d8(NAMES.upper())} -> {d8(NAMES_EMU.upper())})")}
    assert explained(r) == whys(r)
    # Reverted: found in the cache under a key that moved; the report says why, --explain prints nothing.
    ws.write("gen/names.txt", NAMES.decode())
    r = build()
    assert r.statuses("executed") == [] and "explain:" not in r.stdout
    assert whys(r) == {
        "//gen:upper%Genrule": f"input gen/names.txt changed ({d8(NAMES_EMU)} -> {d8(NAMES)})",
        "//gen:count%Genrule": (f"upstream output //gen:upper%Genrule changed: upper.txt "
                                f"({d8(NAMES_EMU.upper())} -> {d8(NAMES.upper())})")}

    # An attribute (the genrule's cmd) and a source at once: the attribute first, the rest counted.
    ws.write("gen/BUILD.toml", (ws.root / "gen/BUILD.toml").read_text().replace("wc -l <", "wc -lc <")
             .replace('srcs = ["names.txt"]', 'srcs = ["names.txt"]\ntimeout = 60'))
    ws.write("gen/names.txt", CAT.decode())
    r = build()
    assert whys(r)["//gen:upper%Genrule"] == "attribute timeout changed (and 1 more change)"
    assert whys(r)["//gen:count%Genrule"] == "attribute argv (the command) changed (and 1 more change)"

    # Written content (the rendered config), and that output reaching the import check.
    ws.write("m/BUILD.toml", (ws.root / "m/BUILD.toml").read_text() + "config = { max_batch_size = 8 }\n")
    r = build()
    assert whys(r)["//m:m%TritonConfig"].startswith("written content changed (")
    assert whys(r)["//m:m%ImportCheck"].startswith("upstream output //m:m%TritonConfig config.pbtxt changed (")

    # The rule set's worker module: the action running it names it.
    with open(rules / "pycheck.py", "a") as f:
        f.write("\nEXPLAIN_EDIT_MARKER = 1\n")
    r = build()
    assert whys(r) == {"//m:m%ImportCheck": "code changed: module tpbuild_triton.pycheck"}

    # The key did not move but the cache found the result damaged, or lost it.
    upper = ws.out("gen/upper/upper.txt")
    os.chmod(upper, 0o644)
    with open(upper, "a") as f:  # through the hardlink, into the blob
        f.write("edited\n")
    r = build()
    assert whys(r) == {"//gen:upper%Genrule": f"key unchanged; its cached output was damaged and quarantined "
                                              f"(blob {d8(CAT.upper())})"}
    blob = digest.hex_part(digest.of_bytes(CAT.upper()))
    (ws.cache / "cas" / blob[:2] / blob).unlink()
    r = build()
    assert whys(r) == {"//gen:upper%Genrule": "key unchanged; its cached result was gone from the local cache "
                                              "(evicted or removed)"}

    # PATH decides which tools a command finds: every run action names it.
    moved = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    r = build(env=moved)
    assert set(whys(r).values()) == {"key material changed: PATH"}
    assert {"//gen:upper%Genrule", "//gen:count%Genrule", "//m:m%ImportCheck"} <= set(whys(r))

    # tpbuild test takes --explain too (and prints before finding it has no model to test).
    ws.write("gen/names.txt", OWL.decode())
    r = ws.run("test", "//gen:upper", "--explain", env={**env, **moved})
    assert r.returncode == 2, r.output
    assert f"explain: //gen:upper Genrule: input gen/names.txt changed ({d8(CAT)} -> {d8(OWL)})" in r.stdout


OWNER = parse_label("//p:t")


def run_action(**kw) -> RunAction:
    spec = dict(id="//p:t%R", owner=OWNER, mnemonic="R", rule="r", rule_version="1", argv=("true",), outs=("o",),
                inputs=(("a.txt", Source("p/a.txt")), ("up", Artifact("//p:u%U"))))
    return RunAction(**{**spec, **kw})


def no_upstream(_aid: str):
    return None, ()


INPUTS = [("a.txt", "f" + digest.of_bytes(b"a")), ("up", digest.of_bytes(b"tree"))]


@pytest.mark.parametrize("change, kw, cause", [
    ("rule version", dict(action=dict(rule_version="2")), "rule version changed (1 -> 2)"),
    ("tool", dict(action=dict(tools={"cc": "1"})), "key material changed: tool cc version"),
    ("platform", dict(action=dict(exec_properties=(("pool", "gpu"),))), "attribute exec_properties pool added"),
    ("timeout", dict(action=dict(timeout=5.0)), "attribute timeout changed"),
    ("salt", dict(salt="s2"), "cache salt changed"),
    ("mode", dict(inputs=[("a.txt", "x" + digest.of_bytes(b"a")), INPUTS[1]]),
     f"input p/a.txt changed ({d8(b'a')} -> x:{d8(b'a')})"),
    ("input gone", dict(action=dict(inputs=(("up", Artifact("//p:u%U")),)), inputs=INPUTS[1:]),
     "input a.txt removed"),
])
def test_parts_no_workspace_edit_reaches_are_named(change, kw, cause):
    before = run_action()
    after = run_action(**kw.get("action", {}))
    inputs, salt = kw.get("inputs", INPUTS), kw.get("salt", "s1")
    old = explain.Recorder("s1").record(before, action.key_of(before.key_material(INPUTS, "s1")), INPUTS)
    new = explain.Recorder(salt).record(after, action.key_of(after.key_material(inputs, salt)), inputs)
    assert explain.cause(after, old, new, known=True, upstream=no_upstream) == cause


def test_a_key_version_and_an_engine_edit_come_before_everything_else(monkeypatch):
    a = run_action()
    old = explain.Recorder("s").record(a, action.key_of(a.key_material(INPUTS, "s")), INPUTS)
    edited = dict(code.module_digests(code.ENGINE, False), **{"tpbuild.executor": digest.of_bytes(b"edited")})
    monkeypatch.setattr(code, "module_digests", lambda modules, follow=True: edited)
    monkeypatch.setattr(code, "engine", lambda: digest.of_value(sorted(edited.items())))
    new = explain.Recorder("s").record(a, action.key_of(a.key_material(INPUTS, "s")), INPUTS)
    assert explain.cause(a, old, new, known=True, upstream=no_upstream) == "engine code changed: tpbuild.executor"
    monkeypatch.setattr(action, "KEY_VERSION", action.KEY_VERSION + 1)
    newer = explain.Recorder("s").record(a, action.key_of(a.key_material(INPUTS, "s")), INPUTS)
    assert explain.cause(a, old, newer, known=True, upstream=no_upstream) == (
        f"key version changed ({action.KEY_VERSION - 1} -> {action.KEY_VERSION}) (and 1 more change)")
