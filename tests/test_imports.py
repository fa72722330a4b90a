"""The import contract, checked: a boundary is kept only if something checks it.

- `rules/` (the Triton rule set, `tpbuild_triton`) and `runtime/` import nothing of the engine but
  `tpbuild.plugin`;
- the engine never imports a rule set (nor the runtime);
- the engine's modules sit in the layers below, each importing only from its own layer or lower ones
  (README, "Architecture"); a subpackage (`tpbuild/reapi/`) sits in one layer as a whole. A new
  module must be placed in a layer here, or this test fails.

Imports are read with `ast` from the source (also those inside functions), so nothing is executed, and
the last test plants each kind of violation in a temporary copy to show the check can fail.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Lowest first. Each module may import from its own layer and the ones above it in this list.
LAYERS: list[tuple[str, set[str]]] = [
    ("values", {"errors", "value", "label", "digest", "atomic", "tomlsource", "layout", "memo", "code", "facts",
                "trace", "observed"}),
    ("model", {"workspace", "discovery", "manifest", "action", "targetinfo", "plugin", "genrule"}),
    ("analysis and stores", {"graph", "analysis", "analysiscache", "statcache", "cas", "actioncache", "outputs",
                             "placement", "shaindex", "remotestore", "remote", "eviction", "critical", "rulesets"}),
    ("execution", {"executor", "runner", "scheduler", "delta", "explain", "prefetch", "placedmemo", "reapi"}),
    ("commands", {"build", "noop", "incremental", "affected", "summary", "console", "report", "cli", "__main__", "__init__"}),
]
RULE_SETS = ("tpbuild_triton", "rules", "tpbuild_runtime")
PLUGIN_API = "tpbuild.plugin"
BUILTIN_RULES = {"genrule"}  # the engine's own rule: held to the rule sets' contract


def imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file of `package`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                if node.module:
                    out.append((node.lineno, f"{base}.{node.module}"))
                else:
                    out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module or ""))
                # `from tpbuild import cli` names a module too
                out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module == "tpbuild"]
    return out


def violations(repo: Path) -> list[str]:
    layer_of = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}
    found = []
    for path in sorted((repo / "tpbuild").rglob("*.py")):
        rel = path.relative_to(repo / "tpbuild")
        # A subpackage (reapi) sits in one layer as a whole: its modules may import one another.
        mod = rel.parts[0] if len(rel.parts) > 1 else path.stem
        package = ".".join(("tpbuild", *rel.parts[:-1]))
        where = f"tpbuild/{rel.as_posix()}"
        if mod not in layer_of:
            found.append(f"{where}: not in any layer of tests/test_imports.py; place it there (and in README)")
            continue
        for line, name in imports(path, package):
            top = name.split(".")[0]
            if top in RULE_SETS:
                found.append(f"{where}:{line}: the engine imports the rule set or runtime module {name}")
            elif top == "tpbuild" and "." in name:
                dep = name.split(".")[1]
                if mod in BUILTIN_RULES and name != PLUGIN_API:
                    found.append(f"{where}:{line}: the built-in rule imports {name}; rules import only {PLUGIN_API}")
                elif dep in layer_of and layer_of[dep] > layer_of[mod]:
                    found.append(f"{where}:{line}: {mod} ({LAYERS[layer_of[mod]][0]}) imports {dep} "
                                 f"({LAYERS[layer_of[dep]][0]}), a higher layer")
    for tree, package in (("rules", "tpbuild_triton"), ("runtime", "tpbuild_runtime")):
        for path in sorted((repo / tree).rglob("*.py")):
            for line, name in imports(path, package):
                if (name == "tpbuild" or name.startswith("tpbuild.")) and name != PLUGIN_API:
                    found.append(f"{path.relative_to(repo)}:{line}: imports {name}; rule sets and the runtime "
                                 f"import only {PLUGIN_API} (re-export what they need there)")
    return found


def test_the_import_contract_holds():
    assert violations(REPO) == []


def test_every_layer_module_exists():
    """A layer lists only real modules and subpackages (reapi, the remote-execution client and worker)."""
    present = {p.stem for p in (REPO / "tpbuild").glob("*.py")} | {
        p.parent.name for p in (REPO / "tpbuild").glob("*/__init__.py")}
    assert {m for _, mods in LAYERS for m in mods} - present == set()


def test_a_planted_violation_of_each_kind_is_caught(tmp_path):
    copy = tmp_path / "repo"
    for d in ("tpbuild", "rules", "runtime"):
        shutil.copytree(REPO / d, copy / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    assert violations(copy) == []

    def plant(rel: str, line: str) -> None:
        p = copy / rel
        p.write_text(p.read_text() + f"\n\ndef _planted():\n    {line}\n")

    plant("rules/model.py", "from tpbuild.executor import Executor")
    plant("runtime/tpbuild_runtime/__init__.py", "import tpbuild.errors")
    plant("tpbuild/scheduler.py", "import tpbuild_triton.model")
    plant("tpbuild/action.py", "from .scheduler import Scheduler")
    plant("tpbuild/digest.py", "from tpbuild import cli")
    plant("tpbuild/genrule.py", "from .label import Label")
    plant("tpbuild/reapi/worker.py", "from ..build import run")
    plant("tpbuild/reapi/merkle.py", "from tpbuild.cli import main")
    (copy / "tpbuild" / "newthing.py").write_text("")
    found = violations(copy)
    assert len(found) == 9, found
    assert any("tpbuild/reapi/worker.py" in f and "reapi (execution) imports build (commands)" in f for f in found)
    assert any("tpbuild/reapi/merkle.py" in f and "imports cli" in f for f in found)
    assert any("tpbuild/genrule.py" in f and "built-in rule imports tpbuild.label" in f for f in found)
    assert any(f.startswith("rules/model.py:") and "tpbuild.executor" in f for f in found)
    assert any(f.startswith("runtime/tpbuild_runtime/__init__.py:") and "tpbuild.errors" in f for f in found)
    assert any("tpbuild/scheduler.py" in f and "rule set" in f for f in found)
    assert any("tpbuild/action.py" in f and "a higher layer" in f for f in found)
    assert any("tpbuild/digest.py" in f and "imports cli" in f for f in found)
    assert any("tpbuild/newthing.py: not in any layer" in f for f in found)


# What a file-facts function's module may not bring (tpbuild.facts: the engine imports it alone, after an
# edit, instead of the rule set): the schema and array machinery, and the rule modules themselves.
HEAVY = ("pydantic", "google.protobuf", "tritonclient", "numpy", "tpbuild.plugin", "tpbuild_triton.model",
         "argparse", "tarfile")

# What a build after an edit of a model's source (a delta build, tpbuild/incremental.py) does not
# import: the command line's parser, archives, the thread pool and the process machinery that only
# commands need, file-tree copies and removal, the scan of installed distributions, the TOML parser (no
# manifest changed), SHA-256 (OpenSSL: only the remote cache names content by it). Each took 1-4 ms of
# a 0.19 s edit at 1,000 models; tests/test_incremental.py checks a real edit against this list.
NOT_ON_AN_EDIT = ("argparse", "tarfile", "zipfile", "concurrent.futures", "logging", "subprocess", "shutil",
                  "email", "importlib.metadata", "tomli", "hashlib")


def heavy_imports(imported: set[str], heavy: tuple[str, ...]) -> set[str]:
    """The modules of `imported` that are, or are inside, one of `heavy`."""
    return {m for m in imported if any(m == h or m.startswith(f"{h}.") for h in heavy)}


def fact_functions(repo: Path) -> set[str]:
    """`module.function` of every `ctx.file_facts(path, module.function, ...)` in the rule set."""
    found = set()
    for path in sorted((repo / "rules").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "file_facts":
                fn = node.args[1]
                assert isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name), \
                    f"{path}:{node.lineno}: name the fact function as module.function"
                found.add(f"tpbuild_triton.{fn.value.id}.{fn.attr}")
    return found


def test_file_fact_functions_import_nothing_heavy():
    import subprocess
    import sys

    functions = fact_functions(REPO)
    assert functions, "the Triton rules derive a model.py's facts through ctx.file_facts"
    modules = sorted({f.rpartition(".")[0] for f in functions} | {"tpbuild.facts"})
    script = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
              f"print('\\n'.join(m for m in sys.modules if m.startswith({HEAVY!r})))")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert p.stdout.split() == [], f"{modules} import {p.stdout.split()}"
