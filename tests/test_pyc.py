"""marshal reference flags made canonical: pycs that differ only by process state come out identical."""

from __future__ import annotations

import marshal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tpbuild_triton import pyc

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
SOURCE = textwrap.dedent("""
    import sys
    KEYS = ("alpha", "beta", "alpha", 1.5, 2**70, b"raw", frozenset({"x", "y"}), None, ...)
    def f(a, *, b=3):
        d = {"k": [1, 2, (3, 4)], "alpha": {a, b}}
        return sys.getwindowsversion if a else lambda: d
    class C:
        def m(self):
            try:
                return self.m
            except AttributeError:
                return complex(1, 2)
""")


def dump_in_fresh_process(hold: bool) -> bytes:
    """Compile SOURCE and marshal it in a new interpreter that, or not, also holds a reference to one
    of its constants: that extra reference is what makes marshal flag the object in one process and
    not in the other, as an interned name held elsewhere in a compiling process does."""
    code = (f"import marshal, sys; c = compile({SOURCE!r}, 'm.py', 'exec'); "
            f"keep = [k for k in c.co_consts if isinstance(k, tuple)] if {hold!r} else None; "
            "sys.stdout.buffer.write(marshal.dumps(c))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout


def test_process_state_changes_marshal_bytes_but_not_the_canonical_form():
    a, b = dump_in_fresh_process(False), dump_in_fresh_process(True)
    assert a != b, "the extra reference should change marshal's output, or this test proves nothing"
    ca, cb = pyc.canonicalize(a, PY), pyc.canonicalize(b, PY)
    assert ca == cb
    assert pyc.canonicalize(ca, PY) == ca
    assert marshal.loads(ca) == marshal.loads(a)


def test_stdlib_modules_load_identically_after_canonicalizing():
    import compileall  # a large, varied module, and a few more
    for mod in (compileall, textwrap, subprocess, pytest):
        src = Path(mod.__file__).read_text()
        raw = marshal.dumps(compile(src, mod.__file__, "exec"))
        canon = pyc.canonicalize(raw, PY)
        assert marshal.loads(canon) == marshal.loads(raw), mod.__name__
        assert len(canon) == len(raw)


def test_unknown_streams_are_refused_and_left_alone(tmp_path):
    with pytest.raises(pyc.Unsupported):
        pyc.canonicalize(b"\x01", PY)
    with pytest.raises(pyc.Unsupported):
        pyc.canonicalize(marshal.dumps(("a", "b")) + b"x", PY)
    bad = tmp_path / "__pycache__" / "x.pyc"
    bad.parent.mkdir()
    bad.write_bytes(b"\0" * 16 + b"\x01garbage")
    assert pyc.canonicalize_tree(tmp_path, PY) == 0
    assert bad.read_bytes() == b"\0" * 16 + b"\x01garbage"
