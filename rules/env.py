"""`python_env`: a packed Python environment for EXECUTION_ENV_PATH, built once per distinct spec.

The rule only declares the build; `envbuild` (run as a subprocess action) creates, packs and checks
the env. The key holds the whole spec, the requirements/environment files' content and the tools'
fingerprint (manager version, base interpreter, platform), so a change to any of them rebuilds the
env once, and every model that uses it is re-wired without rebuilding other envs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationError

from tpbuild.plugin import PYTHON, TOOL_LOG, AnalysisContext, Attrs, Rule, SourceAttr, TargetInfo

from .providers import EnvProvider
from .settings import settings


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
    version = "1"
    attrs = EnvAttrs

    def analyze(self, ctx: AnalysisContext, attrs: EnvAttrs) -> TargetInfo:
        from . import envbuild

        inputs = {}
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
        tools = envbuild.tool_fingerprint(spec)  # a missing manager is exit 2, before anything runs
        file_name = f"{ctx.label.name}.tar.gz" if spec.format == "tar.gz" else ctx.label.name
        inputs["spec.json"] = ctx.write("EnvSpec", "spec.json", spec.model_dump_json().encode())
        art = ctx.run(
            "PythonEnv", [PYTHON, "-m", "tpbuild_triton.envbuild", "--spec", "spec.json",
                          "--out", f"out/{file_name}", "--log", TOOL_LOG],
            inputs=inputs, outs=[file_name], tools=tools,
            code=["tpbuild_triton.envbuild"],  # the worker (and what it imports) enters the key
            exec_properties={**settings(ctx).exec_properties(), **attrs.exec_properties},
            description=f"PythonEnv {ctx.label} ({spec.manager}, python {spec.python})",
        )
        return TargetInfo(rule=self.name, output=art,
                          values=EnvProvider(spec.python, file_name, spec.format).values())
