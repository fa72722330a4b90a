"""`python_env`: a packed Python environment for EXECUTION_ENV_PATH, built once per distinct spec.

The rule only declares the build; `envbuild` (run as a subprocess action) creates, packs and checks
the env. The key holds the whole spec, the requirements/environment files' content and the tools'
fingerprint (manager version, base interpreter, platform), so a change to any of them rebuilds the
env once, and every model that uses it is re-wired without rebuilding other envs.

A spec resolves to whatever the index holds on the day it is built, so with a lock beside the manifest
(`pylock.<name>.toml`, see `pylock`, written by `tpbuild lock`) the env is declared from the lock
instead: one fetch action per wheel (keyed by its URL and SHA-256, its bytes verified, then a blob like
any other), and an env action whose key covers the pinned wheels' hashes and contents rather than the
loose spec, installing those files and nothing else, with no index. A lock that no longer answers the
spec is exit 2 naming `tpbuild lock`; an env without one gets a warning, or exit 2 under `[triton]
require_lock = true`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError

from tpbuild.plugin import (PYTHON, TOOL_LOG, AnalysisContext, Artifact, Attrs, Input, Rule, SourceAttr, TargetInfo,
                            UserError, at)

from . import pylock

# Set by `tpbuild lock` while it analyses the workspace to find its envs: locks are then neither
# checked nor required (they are what it is about to write), and no tool is probed (an env for a
# Python this machine does not have can be locked here all the same).
locking = False

from .providers import EnvProvider
from .settings import SECTION, settings


class EnvAttrs(Attrs):
    python: str
    manager: Literal["conda", "mamba", "micromamba", "venv"] = "conda"
    conda: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    requirements: SourceAttr | None = None
    environment: SourceAttr | None = None
    interpreter: str | None = None
    pack_exclude: tuple[str, ...] = ()
    format: Literal["tar.gz", "dir"] = "tar.gz"
    exec_properties: dict[str, str] = {}  # REAPI platform for remote builds, over [triton]'s default


class PythonEnv(Rule):
    name = "python_env"
    version = "2"
    attrs = EnvAttrs
    sections = (SECTION,)

    def analyze(self, ctx: AnalysisContext, attrs: EnvAttrs) -> TargetInfo:
        from . import envbuild

        triton = settings(ctx)
        inputs: dict[str, Input] = {}
        fields = attrs.model_dump(exclude={"requirements", "environment", "exec_properties"})
        for attr in ("requirements", "environment"):
            src = getattr(attrs, attr)
            if src is not None:
                dest = f"inputs/{src.rel}"
                inputs[dest] = ctx.source(src)
                fields[attr] = dest
        try:
            spec = envbuild.EnvSpec.model_validate(fields)
        except ValidationError as e:
            err = e.errors()[0]
            loc = tuple(err["loc"])
            raise ctx.error(loc[:1], f"{'.'.join(map(str, loc)) or 'python_env'}: "
                                     f"{err['msg'].removeprefix('Value error, ')}") from None
        ctx.uncacheable()  # the fingerprint probes installed tools, which can change under us
        requirements = attrs.requirements
        request = pylock.Request(spec.python, triton.wheel_platform(), spec.pip,
                                 ctx.read(requirements).decode(errors="replace") if requirements else None)
        lock_rel = pylock.file_name(ctx.label.name)
        lock_path = f"{ctx.package}/{lock_rel}" if ctx.package else lock_rel
        if not locking:
            spec = self._use_lock(ctx, spec, inputs, request, lock_path, triton.require_lock)
        tools = {} if locking else envbuild.tool_fingerprint(spec)  # a missing manager is exit 2, before anything runs
        file_name = f"{ctx.label.name}.tar.gz" if spec.format == "tar.gz" else ctx.label.name
        inputs["spec.json"] = ctx.write("EnvSpec", "spec.json", spec.model_dump_json().encode())
        art = ctx.run(
            "PythonEnv", [PYTHON, "-m", "tpbuild_triton.envbuild", "--spec", "spec.json",
                          "--out", f"out/{file_name}", "--log", TOOL_LOG],
            inputs=inputs, outs=[file_name], tools=tools,
            code=["tpbuild_triton.envbuild"],  # the worker (and what it imports) enters the key
            exec_properties={**triton.exec_properties(), **attrs.exec_properties},
            description=f"PythonEnv {ctx.label} ({spec.manager}, python {spec.python}"
                        f"{', locked' if spec.locked else ''})",
        )
        lock = {"file": lock_path, "python": request.python, "platform": request.platform, "pip": list(spec.pip),
                "requirements": requirements.path if requirements else None, "inputs": request.inputs(),
                "lockable": bool(spec.pip or spec.requirements or spec.locked)}
        return TargetInfo(rule=self.name, output=art,
                          values={**EnvProvider(spec.python, file_name, spec.format).values(), "lock": lock})

    @staticmethod
    def _use_lock(ctx: AnalysisContext, spec, inputs: dict[str, Input], request: pylock.Request, lock_path: str,
                  required: bool):
        """The spec to build: from the lock when there is one (declaring a fetch per wheel into `inputs`),
        else the loose spec, with a warning or, under `require_lock`, exit 2."""
        label = ctx.label
        unlockable = spec.conda or spec.environment
        if not (ctx.root / lock_path).is_file():
            if not (spec.pip or spec.requirements):
                if unlockable:
                    if required:
                        raise ctx.error(("conda",), _CONDA_UNLOCKED)
                    ctx.warn(_CONDA_WARNING)
                return spec
            if required:
                raise ctx.error((), f"no lock file {lock_path}, and [triton] require_lock = true: run "
                                    f"`tpbuild lock {label}` and commit {lock_path}")
            ctx.warn(f"not locked: its packages are resolved anew whenever it is built, so another machine or a "
                     f"later build can get other versions; run `tpbuild lock {label}` to pin them")
            return spec
        if unlockable:
            if required:
                raise ctx.error(("conda",), _CONDA_UNLOCKED)
            ctx.warn(_CONDA_WARNING)
        data = ctx.read(lock_path)
        try:
            recorded, wheels = pylock.parse(data)
        except pylock.LockError as e:
            raise UserError(f"{e}; run `tpbuild lock {label}` to write it again", at(lock_path)) from None
        if recorded != request.inputs():
            raise ctx.error((), f"{lock_path} no longer matches this env's pip, requirements, python or the "
                                f"[triton] platform: run `tpbuild lock {label}` and commit the new lock")
        if spec.requirements:
            del inputs[spec.requirements]  # the lock stands for it: the key covers what was resolved, not the request
        for w in wheels:
            fetched = ctx.run("FetchWheel", [PYTHON, "-m", "tpbuild_triton.fetch", "--url", w.url,
                                             "--sha256", w.sha256, "--out", f"out/{w.file}"],
                              inputs={}, outs=[w.file], description=f"FetchWheel {w.file}",
                              # Downloaded where the build runs, so remote workers need no index or network:
                              # the wheel reaches them as an input blob of the env action.
                              local_only=True)
            inputs[f"wheels/{w.file}"] = Artifact(fetched.action, w.file)
        inputs["locked.txt"] = ctx.write("LockedRequirements", "locked.txt", pylock.hashed_requirements(wheels))
        return spec.model_copy(update={"pip": (), "requirements": None, "locked": "locked.txt", "wheels": "wheels"})


_CONDA_WARNING = ("its conda packages are not locked (`tpbuild lock` pins pip packages only): they are resolved "
                  "anew whenever it is built")
_CONDA_UNLOCKED = ("conda packages cannot be locked by tpbuild (`tpbuild lock` pins pip packages), and [triton] "
                   "require_lock = true: move the packages to pip with manager = \"venv\", or set require_lock = false")
