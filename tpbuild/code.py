"""The digest of code that shapes outputs, so that a key moves when that code does.

A constructive-trace cache is only as honest as its keys: an action's result depends on its inputs
and on the code that runs it. Rule versions and `KEY_VERSION` are bumped by hand and get forgotten,
so keys also hash the *source* of the code itself:
- a rule's `run` actions name the modules they run (`ctx.run(..., code=[...])`, e.g. the env
  builder), and each is hashed with every module of its own package it imports, transitively
  (found by reading its imports, not by importing it), so an edit of a helper the worker uses moves
  the key too;
- the engine's own modules that decide what a result holds (`ENGINE`, as they are: not what they
  import, or every edit of an error message would retire every cache entry) enter every key.

Sources are hashed by content, once per process. A comment-only edit moves keys too (a miss, never
a wrong hit); a behaviour edit always does. The modules are found as the running interpreter finds
them, which is also how a worker run as `{python} -m module` finds them (the executor gives it this
process's import path).
"""

from __future__ import annotations

import ast
import functools
import importlib.util

from . import digest

# Run commands, place inputs and collect outputs (executor), store blobs and their modes (cas), name
# results (action: entries, tree digests; digest: the hash) and materialize them (outputs).
ENGINE = ("tpbuild.action", "tpbuild.cas", "tpbuild.digest", "tpbuild.executor", "tpbuild.outputs")


@functools.lru_cache(maxsize=None)
def digest_of(modules: tuple[str, ...], follow: bool = True) -> str:
    """Digest of the source of `modules` and (`follow`) of the modules of their own packages they
    import, transitively."""
    return digest.of_value(sorted(module_digests(modules, follow).items()))


@functools.lru_cache(maxsize=None)
def module_digests(modules: tuple[str, ...], follow: bool = True) -> dict[str, str]:
    """What `digest_of` hashes: each module's name and source digest (for `explain` to name the edited one)."""
    seen: dict[str, str] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.has_location:
            raise ValueError(f"code module {name!r} is not importable from source")
        with open(spec.origin, "rb") as f:
            source = f.read()
        seen[name] = digest.of_bytes(source)
        package = name.rpartition(".")[0] if not spec.submodule_search_locations else name
        top = name.split(".")[0]
        if follow:
            todo += [m for m in _imports(source, package) if m.split(".")[0] == top and _exists(m)]
    return seen


def engine() -> str:
    return digest_of(ENGINE, follow=False)


def _imports(source: bytes, package: str) -> list[str]:
    """Modules a source imports, absolute names; `from . import x` names the module `package.x`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if node.module:  # not the package itself for `from . import x`: its __init__ is not what runs
                found.append(mod)
            found += [f"{mod}.{a.name}" for a in node.names]  # `from pkg import module`
    return found


def _exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # `from .x import func`: `x.func` is no module
        return False
