"""tpbuild.toml's engine tables (tpbuild/workspace.py): a table of plain values is taken without
pydantic, and gives exactly what pydantic makes of it; anything else is pydantic's to convert or
report, at its line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tpbuild import tomlsource, workspace
from tpbuild.errors import UserError

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


def _source(tmp_path, text: str) -> tomlsource.TomlSource:
    (tmp_path / "tpbuild.toml").write_text(text)
    return tomlsource.load(tmp_path / "tpbuild.toml", "tpbuild.toml")
