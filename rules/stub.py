"""`python_stub`: a `triton_python_backend_stub` for a Python other than the server's, built once.

A model whose env runs another Python than the server image needs a stub compiled against that
Python in its directory. The rule declares one `run` action (see `stubbuild`): a cmake build of a
python_backend checkout (`source`), of a git clone at the commit `ref` resolves to (`git`), or only
the checks of a stub built elsewhere (`prebuilt`). Its key holds the sources' content (or the commit),
the cmake arguments, the interpreter's version and ABI, the compiler and cmake versions and the
platform, so the stub is rebuilt exactly when one of them changes and shared through the cache
otherwise. The env-dependent check (GLIBCXX) belongs to the model, which knows the env: see `stubcheck`.
"""

from __future__ import annotations

import os
import re

from pydantic import field_validator, model_validator

from tpbuild.plugin import PYTHON, TOOL_LOG, AnalysisContext, Attrs, Input, Rule, SourceAttr, TargetInfo, UserError

from . import elf, settings, stubbuild
from .providers import StubProvider
from .settings import PythonVersion

SOURCE_EXCLUDE = (".git", "__pycache__", "*.pyc")


class StubAttrs(Attrs):
    python: PythonVersion
    interpreter: str | None = None
    source: SourceAttr | None = None
    git: str | None = None
    ref: str | None = None
    prebuilt: SourceAttr | None = None
    branch: str | None = None
    gpu: bool = False
    cmake_args: tuple[str, ...] = ()
    exec_properties: dict[str, str] = {}  # REAPI platform for remote builds, over [triton]'s default

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9._/-]+", v):
            raise ValueError(f"branch {v!r} is not a git branch name like \"r24.10\"")
        return v

    @model_validator(mode="after")
    def _one_source(self):
        given = [n for n in ("source", "git", "prebuilt") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of source (a python_backend checkout in the package), git (a "
                             "repository URL, with ref) or prebuilt (a stub file)"
                             + (f"; got {' and '.join(given)}" if given else ""))
        if self.ref is not None and self.git is None:
            raise ValueError("ref applies to git sources only: remove it")
        if self.prebuilt is not None:
            built_only = [n for n in ("interpreter", "branch", "cmake_args") if getattr(self, n)]
            if built_only or self.gpu:
                raise ValueError(f"{', '.join(built_only + (['gpu'] if self.gpu else []))} only apply when the "
                                 "stub is built (source or git), not to a prebuilt one: remove them")
        return self


class PythonStub(Rule):
    name = "python_stub"
    version = "1"
    attrs = StubAttrs
    sections = (settings.SECTION,)

    def analyze(self, ctx: AnalysisContext, attrs: StubAttrs) -> TargetInfo:
        inputs: dict[str, Input] = {}
        fields: dict = {"python": attrs.python}
        if attrs.prebuilt is not None:
            if attrs.prebuilt.is_dir:
                raise ctx.error(("prebuilt",), f"{attrs.prebuilt.rel!r} is a directory; name the stub file itself")
            inputs["prebuilt/" + stubbuild.STUB] = ctx.source(attrs.prebuilt)
            fields.update(kind="prebuilt", prebuilt="prebuilt/" + stubbuild.STUB)
        else:
            branch = attrs.branch or self._default_branch(ctx)
            fields.update(branch=branch, gpu=attrs.gpu, cmake_args=attrs.cmake_args)
            if attrs.source is not None:
                if not attrs.source.is_dir:
                    raise ctx.error(("source",), f"{attrs.source.rel!r} is a file; source names a python_backend "
                                                 "checkout directory")
                base = f"{attrs.source.rel}/" if attrs.source.rel else ""  # "" when source = "."
                for f in ctx.files_under(attrs.source, SOURCE_EXCLUDE):
                    inputs[f"src/{f}"] = ctx.source(ctx.source_path(base + f))
                fields.update(kind="source", source="src")
            else:
                fields.update(kind="git", git=attrs.git)
        try:
            if fields["kind"] == "git":
                fields["commit"] = stubbuild.resolve_ref(attrs.git, attrs.ref or fields["branch"])
            if fields["kind"] != "prebuilt":
                ctx.uncacheable()  # tool probes (and a git ref) can change under us
                fields["interpreter"] = stubbuild.find_python(attrs.python, attrs.interpreter).path
            spec = stubbuild.StubSpec.model_validate(fields)
            tools = stubbuild.tool_fingerprint(spec)
            elf.require_pyelftools()  # the checks need it: say so now, not after a build
        except UserError as e:
            where = {"git": ("git",), "prebuilt": ("prebuilt",)}.get(fields["kind"], ("python",))
            raise ctx.error(where, e.message) from None
        inputs["spec.json"] = ctx.write("StubSpec", "spec.json", spec.model_dump_json().encode())
        art = ctx.run(
            "PythonStub", [PYTHON, "-m", "tpbuild_triton.stubbuild", "--spec", "spec.json",
                           "--out", f"out/{stubbuild.STUB}", "--log", TOOL_LOG],
            inputs=inputs, outs=[stubbuild.STUB], tools=tools,
            code=["tpbuild_triton.stubbuild"],  # the worker (and what it imports) enters the key
            # cmake would take CC/CXX from the caller's environment, which the action does not inherit.
            env={k: os.environ[k] for k in ("CC", "CXX") if os.environ.get(k)},
            exec_properties={**settings.settings(ctx).exec_properties(), **attrs.exec_properties},
            description=f"PythonStub {ctx.label} ({fields['kind']}, python {attrs.python})",
        )
        return TargetInfo(rule=self.name, output=art, values=StubProvider(attrs.python, stubbuild.STUB).values())

    @staticmethod
    def _default_branch(ctx: AnalysisContext) -> str:
        version = settings.settings(ctx).version
        if version is None:
            raise ctx.error(("python",), "the stub must be built from the server's rYY.MM branch: set branch = "
                                         "\"r24.10\", or [triton] version in tpbuild.toml")
        return f"r{version}"
