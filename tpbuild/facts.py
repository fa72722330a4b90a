"""File facts: what a rule derives from a source file's content, by a function the engine can re-run alone.

A rule that reads a file to decide its actions (a model.py's grammar, its model class, its imports)
makes the analysis memo watch that file, and an edit of it would re-run the rule: for the Triton rules
that means loading the config schema (protobuf) and validating the manifest, most of what a one-line
edit costs. Most edits change none of what the rule looked at. So a rule may ask for `facts =
fn(data, *args)` through `AnalysisContext.file_facts` instead of reading the bytes itself; the memo
records (the function's `module:qualname`, `args`, the digest of its module's source and of what that
imports from its own package, each of those modules' digests, the digest of the facts). When the
file's stat moves, the memo re-runs only `fn`: the same facts keep the package's record (early
cutoff, as Shake's or Salsa's on unchanged results), other facts (or a changed function, or one that
fails) re-analyse the package.

The function must be module-level and pure (its result depends on `data` and `args` only), and its
module must import nothing heavy (no pydantic or protobuf), since importing it is the whole point;
tests/test_imports.py checks the Triton rules'. The action that ships the file still hashes its
content at build time, so the output changes with every edit; only the analysis is saved.
"""

from __future__ import annotations

import importlib

from . import code, digest


def entry(fn, args: tuple, facts) -> list:
    """What the analysis memo records of one derivation: [`module:qualname`, args, code, facts digest,
    the code's modules and source digests, the modules its imports name that do not exist] (the last
    two are how `unchanged` knows the code is the same without parsing it: `code.holds`)."""
    name = fn.__qualname__
    if "<" in name or fn.__module__ == "__main__":
        raise TypeError(f"file facts need a module-level function the engine can import, not {fn.__module__}.{name}")
    modules, absent = code.traced((fn.__module__,))
    return [f"{fn.__module__}:{name}", list(args), code.digest_of((fn.__module__,)), digest.of_value(facts),
            modules, list(absent)]


def unchanged(recorded: list, data: bytes) -> bool:
    """Whether `data` has the facts recorded (by the same function, whose code has not changed). A
    function that cannot be found or raises is a change: the rule runs again and reports it."""
    try:
        ref, args, code_digest, facts_digest, modules, absent = recorded
        module, _, name = ref.partition(":")
        if code.combined(modules) != code_digest or not code.holds(modules, absent):
            return False
        fn = importlib.import_module(module)
        for part in name.split("."):
            fn = getattr(fn, part)
        return digest.of_value(fn(data, *args)) == facts_digest
    except Exception:  # anything the function or the import raises: re-analyse, which reports it properly
        return False
