"""`triton_model`: one Python-backend model directory.

    <model_name>/config.pbtxt
    <model_name>/<version>/model.py   (and every other file of the version directory)
    <model_name>/<files...>

An inline `config` is rendered from Triton's own ModelConfig schema, so a typo or a bad enum is
caught here with its field path instead of at model load. An existing `config.pbtxt` is validated
and then kept byte for byte: whatever the user put in it (auto-complete, decoupled policy, custom
parameters) must reach the server unchanged.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, Literal, Union

from pydantic import field_validator, model_validator

from tpbuild.plugin import (
    PYTHON, AnalysisContext, Artifact, Attrs, Input, Label, LabelAttr, Rule, SourceAttr, SourceOrLabel, SourcePath,
    TargetInfo,
)

from . import settings

VERSION_RE = re.compile(r"^(0|[1-9][0-9]*)$")
EXCLUDED = ("__pycache__", "*.pyc")
RUNTIME = "tpbuild_runtime"
STUB = "triton_python_backend_stub"  # at the model root, the server uses it instead of its default stub
_IMPORTS_RUNTIME = re.compile(rb"^\s*(from|import)\s+tpbuild_runtime\b", re.M)


class TestCase(Attrs):
    """One `[[triton_model.<name>.test]]` table: tensors as nested lists (dtype from the config, shape
    from the nesting, strings for BYTES), or an .npz holding `input.<NAME>` and `expected.<NAME>` arrays."""

    name: str | None = None
    inputs: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    npz: SourceAttr | None = None
    version: str | None = None
    rtol: float = 1e-5
    atol: float = 1e-6

    @model_validator(mode="after")
    def _one_source(self):
        if self.npz is not None and (self.inputs or self.expected):
            raise ValueError("give either npz or inputs/expected, not both")
        if self.npz is None and not self.inputs:
            raise ValueError("a test case needs inputs (and expected), or npz")
        if self.version is not None and not VERSION_RE.match(self.version):
            raise ValueError(f"version {self.version!r} is not a version number")
        return self


class ModelAttrs(Attrs):
    model_name: str | None = None
    versions: Union[dict[str, str], tuple[str, ...]]
    config: Union[dict, str, Literal[False], None] = None  # false: no config.pbtxt, the server auto-completes
    files: tuple[SourceOrLabel, ...] = ()
    env: SourceOrLabel | None = None
    stub: LabelAttr | None = None
    test: tuple[TestCase, ...] = ()

    @field_validator("versions")
    @classmethod
    def _versions(cls, v):
        names = list(v) if isinstance(v, dict) else list(v)
        if not names:
            raise ValueError("declare at least one version, e.g. versions = [\"1\"]")
        for name in names:
            if not VERSION_RE.match(name):
                raise ValueError(f"version {name!r} is not a version number: Triton serves only directories "
                                 "named 0, 1, 2, ... (no leading zeros) and skips others silently")
        return v


class TritonModel(Rule):
    name = "triton_model"
    version = "1"
    attrs = ModelAttrs
    sections = (settings.SECTION,)

    def analyze(self, ctx: AnalysisContext, attrs: ModelAttrs) -> TargetInfo:
        from . import modelconfig  # protobuf is heavy: load it only when a model is analysed

        triton = settings.settings(ctx)
        model_name = attrs.model_name or ctx.label.name
        cfg, verbatim = self._config(ctx, attrs, model_name)
        model_file = modelconfig.default_model_filename(cfg)
        entries: list[tuple[str, Input]] = []
        stub_python = self._stub_python(ctx, attrs.stub)
        env_file = env_check = None
        if attrs.env is not None:
            env_file, env_python, env_check = self._place_env(ctx, entries, attrs.env)
            before = modelconfig.render(cfg)
            try:
                modelconfig.set_execution_env(cfg, env_file)
            except modelconfig.ConfigError as e:
                raise ctx.error(("config",), f"config.{e.field}: {e.message}") from None
            if modelconfig.render(cfg) != before:
                verbatim = None  # tpbuild added the parameter: the config is rendered, not copied
            if stub_python is not None and env_python is not None and stub_python != env_python:
                raise ctx.error(("stub",), f"{attrs.stub} is a stub for Python {stub_python}, but the env uses "
                                           f"Python {env_python}: the stub must embed the env's Python; use a "
                                           f"python_stub with python = \"{env_python}\"")
            self._check_python(ctx, triton, env_python, stub_python)
        if attrs.stub is not None:
            entries.append((STUB, self._stub(ctx, attrs.stub, env_file, env_check)))
        if attrs.config is not False:
            entries.insert(0, ("config.pbtxt", ctx.write("TritonConfig", "config.pbtxt",
                                                         verbatim or modelconfig.render(cfg))))
        elif attrs.env is not None:
            raise ctx.error(("config",), "an env needs a config.pbtxt to name it in: remove config = false")

        versions = attrs.versions if isinstance(attrs.versions, dict) else {v: v for v in attrs.versions}
        for version, rel in sorted(versions.items(), key=lambda kv: int(kv[0])):
            src = self._source(ctx, ("versions", version) if isinstance(attrs.versions, dict) else ("versions",), rel)
            if not src.is_dir:
                raise ctx.error(("versions",), f"version {version}: {rel!r} is a file; name the directory holding "
                                               f"{model_file}")
            files = ctx.files_under(src, EXCLUDED)
            if model_file not in files:
                raise ctx.error(("versions",), f"version {version}: {src.rel}/{model_file} does not exist; "
                                               f"add it (or set default_model_filename in config)")
            imports_runtime = False
            for f in files:
                entries.append((f"{version}/{f}", ctx.source(ctx.source_path(f"{src.rel}/{f}"))))
                if f.endswith(".py") and _IMPORTS_RUNTIME.search(ctx.read(f"{src.path}/{f}")):
                    imports_runtime = True
            if imports_runtime and f"{RUNTIME}.py" not in files:
                # The base class ships inside the model, so the server image needs nothing installed.
                entries.append((f"{version}/{RUNTIME}.py", ctx.write("TritonRuntime", f"{RUNTIME}.py", _runtime())))

        for item in attrs.files:
            self._place_file(ctx, entries, item)

        tree = ctx.tree("ModelDirectory", entries)
        return TargetInfo(rule=self.name, output=tree,
                          values={"model_name": model_name, "tests": [
                              {**c.model_dump(exclude={"npz"}), "npz": c.npz.path if c.npz else None,
                               "name": c.name or f"case {i + 1}"} for i, c in enumerate(attrs.test)]})

    def _config(self, ctx: AnalysisContext, attrs: ModelAttrs, model_name: str):
        from . import modelconfig

        try:
            if isinstance(attrs.config, str):
                src = self._source(ctx, ("config",), attrs.config)
                text = ctx.read(src)
                try:
                    cfg = modelconfig.parse_text(text.decode("utf-8"), model_name)
                except UnicodeDecodeError:
                    raise ctx.error(("config",), f"{src.rel} is not UTF-8 text") from None
                return cfg, text
            return modelconfig.from_table(attrs.config or {}, model_name), None
        except modelconfig.ConfigError as e:
            where = ("config", *_keypath(e.field)) if isinstance(attrs.config, dict) else ("config",)
            field = f"config.{e.field}" if e.field else "config"
            raise ctx.error(where, f"{field}: {e.message}") from None

    @staticmethod
    def _source(ctx: AnalysisContext, where: tuple, rel: str) -> SourcePath:
        try:
            return ctx.source_path(rel)
        except ValueError as e:
            raise ctx.error(where, str(e)) from None

    @staticmethod
    def _place_env(ctx: AnalysisContext, entries: list[tuple[str, Input]], env
                   ) -> tuple[str, str | None, tuple[str, Input] | None]:
        """Put the env at the model root; returns its file name, its Python when known, and what a stub
        check must see of it: a (destination, input) that places `env/<file name>` in the check's scratch
        directory (or None: nothing to check)."""
        if isinstance(env, Label):
            dep = ctx.dep(env)
            if dep.rule != "python_env":
                raise ctx.error(("env",), f"{env} is a {dep.rule}; env takes a python_env label or the path "
                                          "of a prebuilt env tarball or directory")
            name = dep.values["file_name"]
            if dep.values["format"] == "dir":
                entries.append(("", dep.output))
                return name, dep.values["python"], ("env", dep.output)  # the tree holds <name>/...
            art = Artifact(dep.output.action, name)
            entries.append((name, art))
            return name, dep.values["python"], (f"env/{name}", art)
        base = env.rel.rsplit("/", 1)[-1]
        check = None
        if env.is_dir:
            for f in ctx.files_under(env):
                src = ctx.source(ctx.source_path(f"{env.rel}/{f}"))
                entries.append((f"{base}/{f}", src))
                if f == "lib/libstdc++.so.6":  # all a stub check reads of an env
                    check = (f"env/{base}/{f}", src)
        elif base.endswith((".tar.gz", ".tgz", ".tar")):
            entries.append((base, ctx.source(env)))
            check = (f"env/{base}", ctx.source(env))
        else:
            raise ctx.error(("env",), f"{env.rel!r} is neither a directory nor a .tar.gz/.tar archive")
        return base, None, check

    @staticmethod
    def _check_python(ctx: AnalysisContext, triton: "settings.TritonSettings", env_python: str | None,
                      stub_python: str | None) -> None:
        """The seed's version rule: the stub embeds the server's Python unless the model ships its own."""
        server_python = triton.server_python()
        if env_python is None or server_python is None or env_python in (server_python, stub_python):
            return
        server = f"Triton {triton.version}" if triton.version else "the server"
        raise ctx.error(("env",), f"the env uses Python {env_python} but {server} runs Python {server_python}, "
                                  f"so its default stub cannot load it. Either build the env with python = "
                                  f"\"{server_python}\", or give this model a stub: a python_stub target built for "
                                  f"Python {env_python} (stub = \"//...\")")

    @staticmethod
    def _stub_python(ctx: AnalysisContext, stub: Label | None) -> str | None:
        if stub is None:
            return None
        dep = ctx.dep(stub)
        if dep.rule != "python_stub":
            raise ctx.error(("stub",), f"{stub} is a {dep.rule}; stub takes a python_stub label")
        return dep.values["python"]

    @staticmethod
    def _stub(ctx: AnalysisContext, stub: Label, env_file: str | None, env_check: tuple[str, Input] | None) -> Input:
        """The stub file for the model root: checked against the env's libstdc++ when the env has one
        (see `stubcheck`), the python_stub's output as it is otherwise."""
        built = Artifact(ctx.dep(stub).output.action, ctx.dep(stub).values["file_name"])
        if env_check is None:
            return built
        dest, env_input = env_check
        checked = ctx.run("StubCheck", [PYTHON, "-m", "tpbuild_triton.stubcheck", "--stub", f"stub/{STUB}",
                                        "--env", f"env/{env_file}", "--out", f"out/{STUB}"],
                          inputs={f"stub/{STUB}": built, dest: env_input}, outs=[STUB],
                          description=f"StubCheck {ctx.label}")
        return Artifact(checked.action, STUB)

    @staticmethod
    def _place_file(ctx: AnalysisContext, entries: list[tuple[str, Input]], item) -> None:
        """A label's output files land at the model root under their own names; a source file or
        directory lands there under its base name."""
        if isinstance(item, Label):
            dep = ctx.dep(item)
            if dep.output is None:
                raise ctx.error(("files",), f"{item} has no output to place in the model directory")
            entries.append(("", dep.output))
            return
        base = item.rel.rsplit("/", 1)[-1]
        taken = {d.split("/")[0] for d, _ in entries}
        if base in taken:
            raise ctx.error(("files",), f"{base!r} is already in the model directory; rename the file")
        if item.is_dir:
            for f in ctx.files_under(item, EXCLUDED):
                entries.append((f"{base}/{f}", ctx.source(ctx.source_path(f"{item.rel}/{f}"))))
        else:
            entries.append((base, ctx.source(item)))


def _keypath(field: str) -> tuple:
    """'input[0].data_type' -> ('input', 0, 'data_type'), the path tomlsource knows lines for."""
    out: list = []
    for part in field.split("."):
        m = re.match(r"^([^\[]*)((?:\[\d+\])*)$", part)
        if not m:
            out.append(part)
            continue
        if m.group(1):
            out.append(m.group(1))
        out.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return tuple(out)


def _runtime() -> bytes:
    return resources.files(RUNTIME).joinpath("__init__.py").read_bytes()
