"""`genrule`: a bash command for steps no rule covers (exporting weights, generating label files).

It is the engine's one built-in rule and registers through the same entry-point group as any rule set.
Sources are placed in the scratch directory at their paths from the workspace root, a dependency's
output files below its label path (`models/x/x/...`); `$SRCS` lists them all, `$OUTS` the declared
outputs (below `out/`), and `$OUT` the single output when there is exactly one. `timeout` bounds how
long the command may run; `exec_properties` name the platform a remote executor must run it on.
"""

from __future__ import annotations

import functools
import platform
import subprocess

from pydantic import PositiveFloat, field_validator

from .plugin import OUT, AnalysisContext, Attrs, Label, Rule, SourceOrLabel, SourcePath, TargetInfo


class GenruleAttrs(Attrs):
    srcs: tuple[SourceOrLabel, ...] = ()
    outs: tuple[str, ...]
    cmd: str
    timeout: PositiveFloat | None = None  # seconds
    exec_properties: dict[str, str] = {}

    @field_validator("outs")
    @classmethod
    def _outs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("declare at least one output in outs")
        for o in v:
            if not o or o.startswith("/") or ".." in o.split("/"):
                raise ValueError(f"output {o!r} must be a relative path inside the target's output directory")
        if len(set(v)) != len(v):
            raise ValueError("outs lists the same output twice")
        return v


@functools.lru_cache(maxsize=1)
def _bash_fingerprint() -> dict:
    try:
        version = subprocess.run(["bash", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        version = "bash not found"
    return {"bash": version, "machine": platform.machine(), "system": platform.system()}


class Genrule(Rule):
    name = "genrule"
    version = "1"
    attrs = GenruleAttrs

    def analyze(self, ctx: AnalysisContext, attrs: GenruleAttrs) -> TargetInfo:
        inputs = {}
        for src in attrs.srcs:
            if isinstance(src, Label):
                dep = ctx.dep(src)
                if dep.output is None:
                    raise ctx.error(("srcs",), f"{src} has no output to use as a source")
                inputs[src.path] = dep.output
            elif isinstance(src, SourcePath):
                if src.is_dir:
                    for rel in ctx.files_under(src):
                        p = f"{src.path}/{rel}"
                        inputs[p] = ctx.source(ctx.source_path(f"{src.rel}/{rel}"))
                else:
                    inputs[src.path] = ctx.source(src)
        outs = [f"{OUT}/{o}" for o in attrs.outs]
        env = {"SRCS": " ".join(sorted(inputs)), "OUTS": " ".join(outs)}
        if len(outs) == 1:
            env["OUT"] = outs[0]
        art = ctx.run("Genrule", ["bash", "-e", "-o", "pipefail", "-c", attrs.cmd], inputs=inputs,
                      outs=list(attrs.outs), env=env, tools=_bash_fingerprint(), timeout=attrs.timeout,
                      exec_properties=attrs.exec_properties, description=f"Genrule {ctx.label}")
        return TargetInfo(rule=self.name, output=art)


RULES = [Genrule]
