"""A parsed TOML file that remembers the line of every key.

tomllib returns plain data with no positions, yet every error about a manifest must name the line to
change. A small scanner walks the text alongside and records where each table header and key stands;
nested values inside inline tables report the line of the key that holds them, which is where a user
looks anyway.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from .errors import UserError, at

KeyPath = tuple  # of str (table keys) and int (index into an array of tables)

_BARE_OR_QUOTED = r'(?:[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*"
_BOM = "\ufeff"


@functools.cache
def _scanner() -> tuple[re.Pattern, re.Pattern, re.Pattern, re.Pattern]:
    """(array table, table, key, key part): compiled on first use, as a build whose tpbuild.toml and
    manifests come from their memos scans no TOML, and compiling them took 0.7 ms of every command."""
    return (re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]"), re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]"),
            re.compile(rf"^\s*({_DOTTED})\s*="), re.compile(_BARE_OR_QUOTED))


def _split_dotted(text: str) -> tuple[str, ...]:
    parts = []
    for m in _scanner()[3].finditer(text):
        p = m.group(0)
        parts.append(p[1:-1] if p[0] in "\"'" else p)
    return tuple(parts)


class TomlSource:
    """A TOML file's data and the line of each key, for errors that name the line to change. Equal by
    value (a plain class: a dataclass's generated methods were compiled on every start)."""

    __slots__ = ("path", "data", "lines")

    def __init__(self, path: str, data: dict, lines: dict[KeyPath, int] | None = None):
        self.path = path  # as shown to the user: relative to the workspace root
        self.data = data
        self.lines = lines if lines is not None else {}

    def __eq__(self, other) -> bool:
        return other.__class__ is TomlSource and (self.path, self.data, self.lines) == \
            (other.path, other.data, other.lines)

    def line_of(self, keypath: KeyPath) -> int | None:
        """The line of the deepest recorded prefix of `keypath`."""
        for n in range(len(keypath), 0, -1):
            line = self.lines.get(tuple(keypath[:n]))
            if line is not None:
                return line
        return None

    def error(self, keypath: KeyPath, message: str) -> UserError:
        return UserError(message, at(self.path, self.line_of(keypath)))


def load(file: Path, shown_as: str) -> TomlSource:
    return parse(read(file, shown_as), shown_as)


def read(file: Path, shown_as: str) -> str:
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("not valid UTF-8: save the file as UTF-8", at(shown_as)) from None
    except OSError as e:
        raise UserError(f"cannot read: {e.strerror}", at(shown_as)) from None


def parse(text: str, shown_as: str) -> TomlSource:
    # tomli rather than tomllib: its errors carry the line as a value (tomllib's only from Python 3.14),
    # so no message text is parsed for it. Imported here: a build whose tpbuild.toml is as last parsed
    # (workspace.py) and whose manifests come from the analysis memo parses no TOML.
    import tomli

    if text.startswith(_BOM):
        raise UserError("the file starts with a UTF-8 byte order mark (BOM), which TOML does not allow: "
                        "save it as UTF-8 without BOM", at(shown_as, 1))
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as e:
        raise UserError(f"invalid TOML: {e.msg} (column {e.colno}); fix the syntax", at(shown_as, e.lineno)) from None
    return TomlSource(shown_as, data, _index_lines(text))


def _index_lines(text: str) -> dict[KeyPath, int]:
    lines: dict[KeyPath, int] = {}
    table: tuple = ()
    array_counts: dict[tuple, int] = {}
    depth = 0  # open brackets/braces of a multi-line value
    in_ml: str | None = None  # the delimiter of an open multi-line string
    array_table_re, table_re, key_re, _ = _scanner()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if in_ml is None and depth == 0:
            m = array_table_re.match(raw)
            if m:
                base = _split_dotted(m.group(1))
                idx = array_counts.get(base, 0)
                array_counts[base] = idx + 1
                table = (*base, idx)
                lines.setdefault(base, lineno)
                lines[table] = lineno
                continue
            m = table_re.match(raw)
            if m:
                table = _split_dotted(m.group(1))
                for n in range(1, len(table)):  # [a.b] also defines a, where a user would look for it
                    lines.setdefault(table[:n], lineno)
                lines[table] = lineno
                continue
            m = key_re.match(raw)
            if m:
                key = (*table, *_split_dotted(m.group(1)))
                lines.setdefault(key, lineno)
                rest = raw[m.end():]
            else:
                rest = raw
        else:
            rest = raw
        depth, in_ml = _scan_value(rest, depth, in_ml)
    return lines


def _scan_value(s: str, depth: int, in_ml: str | None) -> tuple[int, str | None]:
    """Track bracket depth and open multi-line strings across one line of a value."""
    i, n = 0, len(s)
    while i < n:
        if in_ml:
            end = s.find(in_ml, i)
            if end < 0:
                return depth, in_ml
            i = end + 3
            in_ml = None
            continue
        c = s[i]
        if c == "#":
            break
        if s.startswith('"""', i) or s.startswith("'''", i):
            in_ml = s[i:i + 3]
            i += 3
            continue
        if c in "\"'":
            j = i + 1
            while j < n and s[j] != c:
                j += 2 if (c == '"' and s[j] == "\\") else 1
            i = j + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, in_ml
