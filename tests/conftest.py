"""Shared fixtures: real workspaces in temp dirs, driven through the real `tpbuild` CLI in a subprocess."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import xdist

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def pytest_configure(config):
    config.addinivalue_line("markers", "server: starts a real Triton server")
    config.addinivalue_line("markers", "slow: takes minutes (real env or stub builds)")
    # xdist hands out work units in collection order: the order pytest_collection_modifyitems gives them
    # (longest first), not its own (most tests first).
    config.option.loadscopereorder = False
    # pytest-xdist up to 3.8 puts a test's group into its id by a field pytest 9 no longer reads: the
    # groups would be ignored silently, each worker starting every shared server and build for itself
    # (again whenever it comes back to the module). Refuse that rather than run slowly.
    if config.getoption("dist", "no") == "loadgroup" and _version(pytest) >= (9,) and _version(xdist) <= (3, 8):
        raise pytest.UsageError(f"--dist loadgroup does not group tests with pytest {pytest.__version__} and "
                                f"pytest-xdist {xdist.__version__}: install pytest<9 (pyproject.toml's test extra)")


def _version(module) -> tuple[int, ...]:
    return tuple(int(p) for p in module.__version__.split(".")[:2] if p.isdigit())


# Seconds each test took in a recorded run (tests/durations.py rewrites it), to start the long ones first.
DURATIONS = json.loads((Path(__file__).with_name("durations.json")).read_text())
SHORT = 0.5  # what a test not in it counts as


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which writes the groups into the test ids
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n auto --dist loadgroup`, as tools/test.sh runs it) tests go to workers one by
    one, except those using a module- or session-scoped fixture of ours (a REAPI cluster, a moto
    server, a stub build): they go to one worker together, in one `xdist_group` per fixture module, so
    what the fixture starts or builds is made once, not once per worker. Nothing needs marking by hand:
    a new shared fixture groups its users by itself, if they name it as a parameter (one asked for with
    `request.getfixturevalue` is not seen: such tests still pass, each worker making the fixture for
    itself).

    On a worker the units (a group, or a test of none) are then ordered longest first by their tests'
    recorded durations, so the long ones start at once and the short ones fill in around them, rather
    than a long test starting last (the order is the same on every worker, as xdist needs)."""
    units: dict[str, list] = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        homes = sorted({d.func.__module__ for name in info.names_closure for d in info.name2fixturedefs.get(name, ())
                        if d.scope in ("module", "session") and d.func.__module__.split(".")[-1].startswith(
                            ("test_", "conftest"))}) if info is not None else []
        if homes:
            item.add_marker(pytest.mark.xdist_group("+".join(homes)))
        units.setdefault("+".join(homes) or item.nodeid, []).append(item)
    if hasattr(config, "workerinput"):
        longest = sorted(units.values(), key=lambda unit: -sum(DURATIONS.get(i.nodeid, SHORT) for i in unit))
        items[:] = [item for unit in longest for item in unit]  # sorted is stable: ties keep their order


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    report: dict | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def statuses(self, status: str | None = None) -> list[tuple[str, str]] | list[str]:
        acts = self.report["actions"]
        if status is None:
            return [(a["target"], a["mnemonic"], a["status"]) for a in acts]
        return [f"{a['target']}%{a['mnemonic']}" for a in acts if a["status"] == status]


class Workspace:
    def __init__(self, root: Path, cache: Path):
        self.root = root
        self.cache = cache
        self.env = {**os.environ, "TPBUILD_CACHE_DIR": str(cache)}

    def write(self, rel: str, text: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))
        return p

    def run(self, *args: str, report: bool = True, check: bool | None = None, env: dict | None = None,
            timeout: float = 600) -> Run:
        rep = self.root.parent / f"report-{os.getpid()}-{len(args)}.json"
        if rep.exists():
            rep.unlink()
        argv = [sys.executable, "-m", "tpbuild", "-C", str(self.root), *args]
        if report and args and args[0] in ("build", "test"):
            argv += ["--report", str(rep)]
        p = subprocess.run(argv, capture_output=True, text=True, env={**self.env, **(env or {})}, timeout=timeout)
        data = json.loads(rep.read_text()) if rep.exists() else None
        r = Run(p.returncode, p.stdout, p.stderr, data)
        assert "Traceback" not in r.output, r.output
        if check is True:
            assert p.returncode == 0, r.output
        return r

    def build(self, *patterns: str, **kw) -> Run:
        return self.run("build", *(patterns or ("//...",)), **kw)

    def out(self, rel: str) -> Path:
        return self.root / "tpbuild-out" / rel


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "tpbuild.toml").write_text("")
    return Workspace(root, tmp_path / "cache")


def copy_examples(where: Path) -> Workspace:
    """The examples in `where`/examples, with their own empty cache `where`/cache."""
    root = where / "examples"
    shutil.copytree(EXAMPLES, root, ignore=shutil.ignore_patterns("tpbuild-out", "__pycache__"))
    return Workspace(root, where / "cache")


@pytest.fixture
def examples(tmp_path: Path) -> Workspace:
    return copy_examples(tmp_path)


# -- caches built once per run ------------------------------------------------------------------------
# Env builds take most of the suite's time. A test that needs a workspace built but is not about
# building it (serving, publishing, editing one model, comparing with a remote build) starts from a
# cache holding that workspace's actions, made by a real clean build once per run and shared by every
# xdist worker; the tests about building (test_env_rule, test_envbuild, test_lock, remote execution)
# keep building from empty caches.


def seeded_cache(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], Workspace],
                 *patterns: str) -> Path:
    """The cache of a clean build of `patterns` in the workspace `make` writes into the directory it is
    given: built by the first test of the run that asks (any worker), under a lock the others wait on."""
    base = tmp_path_factory.getbasetemp()
    if base.name.startswith("popen-gw"):  # an xdist worker's: the run's directory is the one above
        base = base.parent
    home = base / f"seed-{name}"
    with open(base / f"seed-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "built").exists():
            shutil.rmtree(home, ignore_errors=True)  # what a seed build that failed left
            home.mkdir()
            make(home).build(*patterns, check=True, report=False)
            (home / "built").touch()
    return home / "cache"


def prime(ws: Workspace, cache: Path) -> Workspace:
    """`ws` with a copy of `cache`'s stored results (its own, so the test may damage it): its actions
    already built are cache hits."""
    ws.cache.mkdir(parents=True, exist_ok=True)
    for part in ("cas", "ac", ".tpbuild-cache"):
        src = cache / part
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, ws.cache / part)
    return ws


def seeded_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache of the run's one clean build of the examples' `//...` (the env included); its
    workspace, with what it placed in tpbuild-out, is the `examples` beside it."""
    return seeded_cache(tmp_path_factory, "examples", copy_examples, "//...")


def built_examples(tmp_path_factory: pytest.TempPathFactory, where: Path) -> Workspace:
    """The examples in `where`, their cache holding every action of `//...` (the env included)."""
    return prime(copy_examples(where), seeded_examples(tmp_path_factory))


@pytest.fixture
def examples_built(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Workspace:
    """`examples`, with their actions built (once per run) in the cache: a build of them only places."""
    return built_examples(tmp_path_factory, tmp_path)
