"""tpbuild.toml's engine tables (tpbuild/workspace.py): a table of plain values is taken without
pydantic, and gives exactly what pydantic makes of it; anything else is pydantic's to convert or
report, at its line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tpbuild import tomlsource, workspace
from tpbuild.errors import UserError, at

PLAIN = [
    ("workspace", {"ignore": ["a", "b/*"]}),
    ("cache", {"dir": "/c", "remote": "s3://b", "remote_upload": False, "salt": "x", "max_size": "10G"}),
    ("remote", {"executor": "grpc://h:1", "instance_name": "i", "exec_properties": {"os": "linux"},
                "queue_timeout": 5}),
    ("remote", {"queue_timeout": 0.5}),
]


@pytest.mark.parametrize("name,value", PLAIN)
def test_plain_values_are_what_pydantic_makes_of_them(tmp_path, name, value):
    src = _source(tmp_path, "")
    cls = workspace.ENGINE_SECTIONS[name]
    assert workspace._section(src, name, cls, value) == workspace._validated(src, name, cls, value)


@pytest.mark.parametrize("text,expected", [
    ('[remote]\nqueue_timeout = "7"\n', 7.0),  # pydantic converts it, as ever
    ("[remote]\nqueue_timeout = true\n", 1.0),
])
def test_other_values_are_converted_by_pydantic(tmp_path, text, expected):
    (tmp_path / "tpbuild.toml").write_text(text)
    assert workspace.load(tmp_path).remote.queue_timeout == expected


@pytest.mark.parametrize("text,message", [
    ("[workspace]\n\n[remote]\nqueue_timeout = 0\n", "attribute 'queue_timeout': must be > 0.0, got 0"),
    ("[remote]\nqueue_timeout = nan\n", "must be > 0.0, got nan"),
    ("[cache]\n\nsalty = 1\n", "unknown attribute 'salty'"),
    ('[workspace]\nignore = "a"\n', "expected an array"),
    ("[remote]\nexec_properties = { a = 1 }\n", "attribute 'exec_properties.a': expected a string"),
])
def test_bad_values_are_reported_at_their_line(tmp_path, text, message):
    (tmp_path / "tpbuild.toml").write_text(text)
    with pytest.raises(UserError) as e:
        workspace.load(tmp_path)
    assert message in str(e.value)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t and not t.startswith("["))
    assert str(e.value.location) == f"tpbuild.toml:{line}"


def test_a_plain_tpbuild_toml_imports_no_pydantic(tmp_path):
    (tmp_path / "tpbuild.toml").write_text('[workspace]\nignore = ["x"]\n[cache]\nsalt = "s"\n')
    code = ("import sys; from pathlib import Path; from tpbuild import workspace; "
            f"workspace.load(Path({str(tmp_path)!r})); print('pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _parses(monkeypatch) -> list[str]:
    """The texts tomlsource.parse is given from now on."""
    parsed = []
    parse = tomlsource.parse

    def counting(text, shown_as):
        parsed.append(text)
        return parse(text, shown_as)

    monkeypatch.setattr(tomlsource, "parse", counting)
    return parsed


def test_tpbuild_toml_is_parsed_again_only_when_its_text_changed(tmp_path, monkeypatch):
    """Its last parse is remembered in tpbuild-out (workspace._source), keyed by the whole text."""
    (tmp_path / "tpbuild-out" / ".tpbuild").mkdir(parents=True)
    text = '[cache]\nsalt = "a"\n\n[triton]\nserver = { version = "24.10", ports = [1, 2.5] }\n'
    (tmp_path / "tpbuild.toml").write_text(text)
    parsed = _parses(monkeypatch)
    first = workspace.load(tmp_path)
    again = workspace.load(tmp_path)
    assert parsed == [text]  # the second from the memo, and the same in every part
    assert (again.cache, again.sections, again.source) == (first.cache, first.sections, first.source)
    assert again.source.error(("triton", "server", "ports"), "x").location == first.source.error(
        ("triton", "server", "ports"), "x").location == at("tpbuild.toml", 5)
    (tmp_path / "tpbuild.toml").write_text(text.replace('"a"', '"b"'))  # same size: only the text tells
    assert workspace.load(tmp_path).cache.salt == "b" and len(parsed) == 2
    (tmp_path / "tpbuild.toml").write_text(text.replace("salt", "salty"))
    with pytest.raises(UserError, match="unknown attribute 'salty'"):  # checked as ever, memo or not
        workspace.load(tmp_path)
    with pytest.raises(UserError, match="unknown attribute 'salty'"):
        workspace.load(tmp_path)


def test_a_tpbuild_toml_json_cannot_hold_is_parsed_every_time(tmp_path, monkeypatch):
    (tmp_path / "tpbuild-out" / ".tpbuild").mkdir(parents=True)
    (tmp_path / "tpbuild.toml").write_text("[triton]\nsince = 2026-12-02\n")
    parsed = _parses(monkeypatch)
    for _ in range(2):
        assert str(workspace.load(tmp_path).sections["triton"]["since"]) == "2026-12-02"
    assert len(parsed) == 2


def test_a_workspace_never_built_gets_no_memo(tmp_path):
    (tmp_path / "tpbuild.toml").write_text('[cache]\nsalt = "a"\n')
    workspace.load(tmp_path)
    assert not (tmp_path / "tpbuild-out").exists()


def _source(tmp_path, text: str) -> tomlsource.TomlSource:
    (tmp_path / "tpbuild.toml").write_text(text)
    return tomlsource.load(tmp_path / "tpbuild.toml", "tpbuild.toml")
