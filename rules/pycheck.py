"""Checks of a model's Python code before it ships: grammar, the model class, and imports.

At analysis (`source_facts`, the rule's `file_facts`): every `.py` of a version directory is parsed with the grammar of the
Python that will run it (the env's, else the server's), and the model file must define
`TritonPythonModel` at module level, which is the name the stub looks up after importing it. Both
are load failures otherwise, found only when the server starts the stub.

The grammar check is exact when the target Python is the host's. For an older target it uses `ast`'s
`feature_version`, which the docs call best effort: it refuses syntax newer than the target (`match`
on 3.9, `except*` on 3.10, PEP 695 on 3.11) but not every newer library call or every grammar detail.
For a newer target it runs that interpreter (`python3.X` on PATH, or a pyenv install) when there is
one, and otherwise skips the grammar check rather than refuse code the host cannot parse.

As an action (`python -m tpbuild_triton.pycheck`): a model with an env has its module-level imports
resolved against what the env ships (`lib/python3.X/site-packages`, the env's own standard library)
and Python's standard library; the backend's module and modules beside the model are known. Only
unconditional module-level imports are checked: one inside `try:` or a function may be optional.
"""

from __future__ import annotations

# The engine imports this module alone after an edit of a model.py (`source_facts`): what only the
# interpreter search, the env check or the command line needs is imported where it is used.
import ast
import functools
import json
import os
import re
import sys
import warnings
from pathlib import Path

MODEL_CLASS = "TritonPythonModel"
# Provided by the Python backend itself, wherever the model runs.
BACKEND_MODULES = frozenset({"triton_python_backend_utils"})
_IMPORTS_RUNTIME = re.compile(rb"^\s*(from|import)\s+tpbuild_runtime\b", re.M)  # the base class shipped with the model
_HOST = sys.version_info[:2]


def _minor(python: str) -> tuple[int, int]:
    major, minor = python.split(".")
    return int(major), int(minor)


def source_facts(data: bytes, path: str, python: str | None, model: bool, imports: bool) -> dict:
    """What analysis needs of one `.py` of a version directory (`path` from the workspace root), as the
    rule's `file_facts`: pure, and this module imports nothing heavy, so the engine re-runs it alone
    after an edit and re-analyses the model only if the result differs. `model`: the model file,
    which must define the class; `imports`: also its module-level imports (module -> [line, col]), for
    the env check. Problems are [line, col, message]."""
    target = _minor(python) if python else _HOST
    problems: list[list] = []
    tree = None
    exact = _interpreter_errors({path: data}, target) if target > _HOST else None
    if exact is not None and path in exact:
        problems.append(exact[path])
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences are warnings, not load failures
                tree = ast.parse(data, filename=path, feature_version=target if target <= _HOST else None)
        except SyntaxError as e:
            if target <= _HOST:  # else no interpreter for the target: not the host's to judge
                problems.append([e.lineno, e.offset, f"{e.msg} (Python {target[0]}.{target[1]} grammar): fix the syntax"])
        except ValueError as e:  # null bytes
            problems.append([None, None, f"not Python source: {e}"])
    if model and tree is not None and not _defines(tree, MODEL_CLASS):
        problems.append([1, None, f"defines no class {MODEL_CLASS} at module level, which the Python backend "
                                  "instantiates: add it"])
    facts = {"problems": problems, "runtime": bool(_IMPORTS_RUNTIME.search(data))}
    if model and imports:
        facts["imports"] = _imports(tree) if tree is not None else {}
    return facts


@functools.lru_cache(maxsize=None)
def find_interpreter(python: str) -> str | None:
    """A working `python3.X`: on PATH, else a pyenv install (pyenv's shim on PATH runs only the
    selected versions, so each candidate is tried)."""
    import glob
    import shutil
    import subprocess

    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [shutil.which(f"python{python}"),
                  *sorted(glob.glob(os.path.join(root, "versions", f"{python}.*", "bin", f"python{python}")), reverse=True)]
    for exe in filter(None, candidates):
        try:
            r = subprocess.run([exe, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 and r.stdout.strip() == python:
            return exe
    return None


def _interpreter_errors(files: dict[str, bytes], target: tuple[int, int]) -> dict[str, list] | None:
    """Compile with the target's own interpreter, when installed; None when it is not."""
    import subprocess

    exe = find_interpreter(f"{target[0]}.{target[1]}")
    if exe is None:
        return None
    script = ("import json,sys\nout={}\nfor p,src in json.load(sys.stdin).items():\n"
              "    try: compile(src.encode('latin-1'),p,'exec',dont_inherit=True)\n"
              "    except SyntaxError as e: out[p]=[e.lineno,e.offset,e.msg]\n"
              "    except ValueError as e: out[p]=[None,None,str(e)]\n"
              "print(json.dumps(out))")
    payload = json.dumps({p: d.decode("latin-1") for p, d in files.items()})
    try:
        r = subprocess.run([exe, "-I", "-c", script], input=payload, capture_output=True, text=True, timeout=60)
        found = json.loads(r.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    return {p: [line, col, f"{msg} (Python {target[0]}.{target[1]}): fix the syntax"] for p, (line, col, msg) in found.items()}


def _defines(tree: ast.Module, name: str) -> bool:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name) == name for a in node.names):
                return True
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return True  # cannot tell
    return False


def _imports(tree: ast.Module) -> dict[str, list[int | None]]:
    """Top-level module names imported unconditionally at module level -> [line, col] of the first."""
    found: dict[str, list] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                found.setdefault(a.name.split(".")[0], [node.lineno, node.col_offset + 1])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.setdefault(node.module.split(".")[0], [node.lineno, node.col_offset + 1])
    return found


# -- the env check (run as an action) ---------------------------------------------------------------

def _module_name(entry: str) -> str | None:
    """'numpy', 'six.py', '_foo.cpython-310-x86_64-linux-gnu.so' -> the importable top-level name."""
    if entry.endswith((".dist-info", ".egg-info", ".pth", ".data")) or entry.startswith((".", "__pycache__")):
        return None
    for suffix in (".py", ".pyc", ".so", ".pyd"):
        if entry.endswith(suffix):
            return entry.split(".")[0]
    return entry if "." not in entry else None


def env_modules(names) -> set[str]:
    """Top-level modules an env provides, from its member paths ('lib/python3.10/site-packages/x/...')."""
    out: set[str] = set()
    for name in names:
        parts = name.lstrip("./").split("/")
        if len(parts) >= 3 and parts[0] == "lib" and parts[1].startswith("python3"):
            rest = parts[2:]
            if rest[0] in ("site-packages", "dist-packages", "lib-dynload"):
                rest = rest[1:]
            if rest:
                mod = _module_name(rest[0]) if len(rest) == 1 else rest[0]
                if mod and mod.isidentifier():
                    out.add(mod)
    return out


def _env_members(env: Path) -> list[str]:
    if env.is_dir():
        return [os.path.relpath(os.path.join(d, n), env) for d, dirs, files in os.walk(env) for n in dirs + files]
    import tarfile

    with tarfile.open(env) as tf:
        return [m.name for m in tf]


def check_env(spec: dict, env: Path) -> list[str]:
    """Problems ('file:line:col: ...') of the imports in `spec` that neither the env, the standard
    library, the backend nor the model's own files provide."""
    have = env_modules(_env_members(env)) | set(sys.stdlib_module_names) | BACKEND_MODULES
    out = []
    for item in spec["models"]:
        known = have | set(item["beside"])
        for module, (line, col) in sorted(item["imports"].items(), key=lambda kv: kv[1]):
            if module not in known:
                out.append(f"{item['file']}:{line}:{col}: imports {module!r}, which the env {spec['env']} does not "
                           f"provide: add it to the env's packages, or ship the module beside the model")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shutil
    import tarfile

    ap = argparse.ArgumentParser(prog="python -m tpbuild_triton.pycheck",
                                 description="Check a model's imports against its env.")
    ap.add_argument("--spec", required=True, type=Path, help="JSON: env label and each model file's imports")
    ap.add_argument("--env", required=True, type=Path, help="an env directory or .tar.gz/.tar")
    ap.add_argument("--config", required=True, type=Path, help="the model's config.pbtxt, passed through")
    ap.add_argument("--out", required=True, type=Path, help="where the checked config goes")
    args = ap.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    try:
        problems = check_env(spec, args.env)
    except (OSError, tarfile.TarError) as e:
        print(f"cannot read the env {spec['env']}: {e}", file=sys.stderr)
        return 1
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.config, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
