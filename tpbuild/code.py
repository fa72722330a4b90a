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
    return combined(module_digests(modules, follow))


def combined(digests: dict[str, str]) -> str:
    """`digest_of` from what `module_digests` (or `traced`) gave: the one formula, also for a caller
    that recorded the digests (`facts.unchanged`)."""
    return digest.of_value(sorted(digests.items()))


@functools.lru_cache(maxsize=None)
def module_digests(modules: tuple[str, ...], follow: bool = True) -> dict[str, str]:
    """What `digest_of` hashes: each module's name and source digest (for `explain` to name the edited one)."""
    return traced(modules, follow)[0]


@functools.lru_cache(maxsize=None)
def traced(modules: tuple[str, ...], follow: bool = True) -> tuple[dict[str, str], tuple[str, ...]]:
    """`module_digests`, and the names of their own packages' modules that their imports name but that
    do not exist (`from .x import f` names `x.f` too): with both, `holds` answers without parsing."""
    seen: dict[str, str] = {}
    absent: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        spec, source = _source(name)
        if source is None:
            raise ValueError(f"code module {name!r} is not importable from source")
        seen[name] = digest.of_bytes(source)
        package = name.rpartition(".")[0] if not spec.submodule_search_locations else name
        top = name.split(".")[0]
        if follow:
            for m in _imports(source, package):
                if m.split(".")[0] == top and m not in seen:
                    (todo.append if _exists(m) else absent.add)(m)
    return seen, tuple(sorted(absent - seen.keys()))


def holds(digests: dict[str, str], absent) -> bool:
    """Whether `traced` would give these again: each module's source is the same (so are its imports)
    and each absent module is still absent. Hashing a few sources, it spares parsing them: an edit of a
    model.py asks this of its fact function's module (tpbuild.facts), whose parse and walk took 4 ms."""
    for name, d in digests.items():
        source = _source(name)[1]
        if source is None or digest.of_bytes(source) != d:
            return False
    return not any(_exists(m) for m in absent)


def _source(name: str):
    """(spec, source) of a module found as the interpreter finds it; the source None if it has none."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.has_location:
        return spec, None
    with open(spec.origin, "rb") as f:
        return spec, f.read()


def engine() -> str:
    return digest_of(ENGINE, follow=False)


def _imports(source: bytes, package: str) -> list[str]:
    """Modules a source imports, absolute names; `from . import x` names the module `package.x`."""
    import ast  # here: a build whose run actions' code is unchanged (`traced`'s caller knows) parses none

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
