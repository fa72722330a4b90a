"""TOML text for the BUILD.toml files `tpbuild import` writes: values, keys and tables.

The manifests tpbuild reads are TOML, but nothing in its dependencies writes TOML; the import needs
only strings, numbers, booleans, arrays and inline tables, which this renders. Whatever it renders is
parsed back before it is used (see `importplan`), so a value this gets wrong is caught, not written.
"""

from __future__ import annotations

import json
import math
import re

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def key(k: str) -> str:
    return k if _BARE_KEY.match(k) else string(k)


def string(s: str) -> str:
    # JSON's escapes are TOML's, but TOML also forbids a raw DEL in basic strings.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{key(str(k))} = {value(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def table(path: tuple[str, ...], items: dict, comments: dict[str, str] | None = None) -> str:
    """`[a.b]` and one `key = value` line per item (with an end-of-line comment where given)."""
    lines = ["[" + ".".join(key(p) for p in path) + "]"]
    for k, v in items.items():
        line = f"{key(k)} = {value(v)}"
        if comments and k in comments:
            line += f"  # {comments[k]}"
        lines.append(line)
    return "\n".join(lines) + "\n"
