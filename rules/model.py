"""`triton_model`: one Python-backend model directory.

    <model_name>/config.pbtxt
    <model_name>/<version>/model.py   (and every other file of the version directory)
    <model_name>/<files...>

An inline `config` is rendered from Triton's own ModelConfig schema, so a typo or a bad enum is
caught here with its field path instead of at model load. An existing `config.pbtxt` is validated
and then kept byte for byte: whatever the user put in it (auto-complete, decoupled policy, custom
parameters) must reach the server unchanged.

What the server would refuse at load is refused here instead, all of it in one pass: the config
against the server's own rules for the release (`modelconfig.validate`), each version's code against
the grammar of the Python that will run it and the model class (`pycheck`), the declared test cases
against the config (`testcase`), and, as an action, the model's imports against its env.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, Literal, Union

from pydantic import field_validator, model_validator

from tpbuild.plugin import (
    PYTHON, AnalysisContext, Artifact, Attrs, Input, Label, LabelAttr, Rule, SourceAttr, SourceOrLabel, SourcePath,
    TargetInfo, TpbuildError, UserError, at, collected,
)

from . import settings
from .providers import EnvProvider, StubProvider

VERSION_RE = re.compile(r"^(0|[1-9][0-9]*)$")
EXCLUDED = ("__pycache__", "*.pyc")
RUNTIME = "tpbuild_runtime"
STUB = "triton_python_backend_stub"  # at the model root, the server uses it instead of its default stub


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
                hint = (f"; to serve directory {name!r} as version {int(name)}, write versions = "
                        f"{{ {int(name)} = \"{name}\" }}" if name.isdecimal() else "")
                raise ValueError(f"version {name!r} is not a version number: Triton serves only directories "
                                 f"named 0, 1, 2, ... (no leading zeros) and skips others silently{hint}")
        return v


class TritonModel(Rule):
    name = "triton_model"
    version = "2"  # 2: with an env, config.pbtxt comes through the ImportCheck action
    attrs = ModelAttrs
    sections = (settings.SECTION,)

    def analyze(self, ctx: AnalysisContext, attrs: ModelAttrs) -> TargetInfo:
        from . import modelconfig  # protobuf is heavy: load it only when a model is analysed
        # Also run as `python -m tpbuild_triton.pycheck`, which must find it not yet imported.
        from . import pycheck, testcase

        triton = settings.settings(ctx)
        model_name = attrs.model_name or ctx.label.name
        versions = attrs.versions if isinstance(attrs.versions, dict) else {v: v for v in attrs.versions}
        problems: list[TpbuildError] = []  # independent of each other: all reported together
        try:
            cfg, verbatim = self._config(ctx, attrs, model_name, triton, tuple(versions))
        except TpbuildError as e:  # the code is still checked; what needs the config is not
            problems.append(e)
            cfg = verbatim = None
        model_file = modelconfig.default_model_filename(cfg) if cfg is not None else None
        entries: list[tuple[str, Input]] = []
        stub_python = self._stub_python(ctx, attrs.stub)
        env_file = env_check = env_python = env_input = None
        if attrs.env is not None:
            env_file, env_python, env_check, env_input = self._place_env(ctx, entries, attrs.env)
            is_dir = not env_file.endswith((".tar.gz", ".tgz", ".tar"))
            if is_dir and triton.version and settings.release_number(triton.version) < settings.ENV_DIR_SINCE:
                raise ctx.error(("env",), f"Triton {triton.version} takes EXECUTION_ENV_PATH only as a tarball (a "
                                          "directory from 23.07): use format = \"tar.gz\" or a .tar.gz")
            if cfg is not None:
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
        if attrs.config is False:
            if attrs.env is not None:
                problems.append(ctx.error(("config",), "an env needs a config.pbtxt to name it in: "
                                                       "remove config = false"))
        elif cfg is not None:
            entries.insert(0, ("config.pbtxt", ctx.write("TritonConfig", "config.pbtxt",
                                                         verbatim or modelconfig.render(cfg))))

        python = env_python or triton.server_python()
        imports: list[dict] = []  # for the env check: each model file's module-level imports
        for version, rel in sorted(versions.items(), key=lambda kv: int(kv[0])):
            where = ("versions", version) if isinstance(attrs.versions, dict) else ("versions",)
            try:
                src = self._source(ctx, where, rel)
            except TpbuildError as e:
                problems.append(e)
                continue
            if not src.is_dir:
                problems.append(ctx.error(where, f"version {version}: {rel!r} is a file; name the directory "
                                                 f"holding {model_file or 'model.py'}"))
                continue
            files = ctx.files_under(src, EXCLUDED)
            if model_file is not None and model_file not in files:
                problems.append(ctx.error(where, f"version {version}: {src.rel}/{model_file} does not exist; "
                                                 f"add it (or set default_model_filename in config)"))
            imports_runtime = False
            model_imports: dict = {}
            for f in files:
                entries.append((f"{version}/{f}", ctx.source(ctx.source_path(f"{src.rel}/{f}"))))
                if f.endswith(".py"):
                    # Facts, not bytes: an edit that keeps them re-analyses nothing (tpbuild.facts).
                    path, is_model = f"{src.path}/{f}", f == model_file
                    facts = ctx.file_facts(path, pycheck.source_facts, path, python, is_model, attrs.env is not None)
                    problems.extend(UserError(msg, at(path, line, col)) for line, col, msg in facts["problems"])
                    imports_runtime = imports_runtime or facts["runtime"]
                    model_imports = facts.get("imports", model_imports)
            model_path = f"{src.path}/{model_file}" if model_file else None
            # Importable beside the model: its version directory's modules, and the model directory's.
            beside = {f.split("/")[0].removesuffix(".py") for f in files} | {RUNTIME}
            imports.append({"file": model_path, "imports": model_imports, "beside": sorted(beside)})
            if imports_runtime and f"{RUNTIME}.py" not in files:
                # The base class ships inside the model, so the server image needs nothing installed.
                entries.append((f"{version}/{RUNTIME}.py", ctx.write("TritonRuntime", f"{RUNTIME}.py", _runtime())))

        for item in attrs.files:
            self._place_file(ctx, entries, item)
        if cfg is not None:
            problems.extend(testcase.check(attrs.test, modelconfig.to_dict(cfg), ctx.read, ctx.error))
        if problems:
            raise collected(problems)
        # The model directory is on sys.path too: modules placed at its root by `files` are importable.
        at_root = {d.split("/")[0].removesuffix(".py") for d, _ in entries if d and not VERSION_RE.match(d.split("/")[0])}
        for item in imports:
            item["beside"] = sorted({*item["beside"], *at_root})
        if env_input is not None and any(i["imports"] for i in imports):
            self._check_imports(ctx, attrs.env, env_file, env_input, imports, entries)

        tree = ctx.tree("ModelDirectory", entries)
        return TargetInfo(rule=self.name, output=tree,
                          values={"model_name": model_name, "tests": [
                              {**c.model_dump(exclude={"npz"}), "npz": c.npz.path if c.npz else None,
                               "name": c.name or f"case {i + 1}"} for i, c in enumerate(attrs.test)]})

    def _config(self, ctx: AnalysisContext, attrs: ModelAttrs, model_name: str, triton, versions: tuple):
        """The config, and its bytes when they ship verbatim. A refusal names the BUILD.toml line of
        the field (an inline config) or the config.pbtxt line (a file)."""
        from . import modelconfig

        rules = {"release": triton.version, "gpus": triton.gpus, "versions": versions}
        src = text = None
        try:
            if isinstance(attrs.config, str):
                src = self._source(ctx, ("config",), attrs.config)
                text = ctx.read(src)
                if text.startswith(b"\xef\xbb\xbf"):
                    raise UserError("the file starts with a UTF-8 byte order mark (BOM), which the server's "
                                    "protobuf parser refuses: save it as UTF-8 without BOM", at(src.path, 1))
                try:
                    cfg = modelconfig.parse_text(text.decode("utf-8"), model_name, **rules)
                except UnicodeDecodeError:
                    raise ctx.error(("config",), f"{src.rel} is not UTF-8 text") from None
                return cfg, text
            return modelconfig.from_table(attrs.config or {}, model_name, **rules), None
        except modelconfig.ConfigErrors as e:
            raise collected([self._config_error(ctx, src, text, err) for err in e.errors]) from None
        except modelconfig.ConfigError as e:
            raise self._config_error(ctx, src, text, e) from None

    @staticmethod
    def _config_error(ctx: AnalysisContext, src, text, e) -> TpbuildError:
        from . import modelconfig

        if src is None:  # an inline table of BUILD.toml
            field = f"config.{e.field}" if e.field else "config"
            return ctx.error(("config", *_keypath(e.field)), f"{field}: {e.message}")
        lines = modelconfig.pbtxt_lines(text.decode("utf-8", "replace"))
        path = modelconfig.pbtxt_keypath(_keypath(e.field)) if e.field else ()
        line = e.line or next((lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in lines), None)
        return UserError(f"{e.field}: {e.message}" if e.field else e.message, at(src.path, line))

    @staticmethod
    def _check_imports(ctx: AnalysisContext, env, env_file: str, env_input: tuple[str, Input], imports: list[dict],
                       entries: list[tuple[str, Input]]) -> None:
        """The model files' imports resolved in the env, as an action (cached on the env's bytes and the
        imports): its output, a copy of the config, replaces the config in the model directory, so the
        directory cannot exist without the check having passed."""
        import json

        spec = {"env": str(env) if isinstance(env, Label) else env.path, "models": imports}
        spec_art = ctx.write("ImportSpec", "imports.json", json.dumps(spec, sort_keys=True).encode())
        config = entries[0][1]
        checked = ctx.run("ImportCheck", [PYTHON, "-m", "tpbuild_triton.pycheck", "--spec", "imports.json",
                                          "--env", f"env/{env_file}", "--config", "config.pbtxt",
                                          "--out", "out/config.pbtxt"],
                          inputs={"imports.json": spec_art, env_input[0]: env_input[1], "config.pbtxt": config},
                          outs=["config.pbtxt"], code=["tpbuild_triton.pycheck"],
                          description=f"ImportCheck {ctx.label} in {spec['env']}")
        entries[0] = ("config.pbtxt", Artifact(checked.action, "config.pbtxt"))

    @staticmethod
    def _source(ctx: AnalysisContext, where: tuple, rel: str) -> SourcePath:
        try:
            return ctx.source_path(rel)
        except ValueError as e:
            raise ctx.error(where, str(e)) from None

    @staticmethod
    def _place_env(ctx: AnalysisContext, entries: list[tuple[str, Input]], env
                   ) -> tuple[str, str | None, tuple[str, Input] | None, tuple[str, Input] | None]:
        """Put the env at the model root; returns its file name, its Python when known, what a stub
        check must see of it: a (destination, input) that places `env/<file name>` in the check's scratch
        directory (or None: nothing to check), and the same for the whole env, for the import check
        (None for a source directory, which is not one input)."""
        if isinstance(env, Label):
            dep = ctx.dep(env)
            if dep.rule != "python_env":
                raise ctx.error(("env",), f"{env} is a {dep.rule}; env takes a python_env label or the path "
                                          "of a prebuilt env tarball or directory")
            provided = EnvProvider.of(dep)
            name = provided.file_name
            if provided.format == "dir":
                entries.append(("", dep.output))
                return name, provided.python, ("env", dep.output), ("env", dep.output)  # the tree holds <name>/...
            art = Artifact(dep.output.action, name)
            entries.append((name, art))
            return name, provided.python, (f"env/{name}", art), (f"env/{name}", art)
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
        return base, None, check, (None if env.is_dir else check)

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
        return StubProvider.of(dep).python

    @staticmethod
    def _stub(ctx: AnalysisContext, stub: Label, env_file: str | None, env_check: tuple[str, Input] | None) -> Input:
        """The stub file for the model root: checked against the env's libstdc++ when the env has one
        (see `stubcheck`), the python_stub's output as it is otherwise."""
        built = Artifact(ctx.dep(stub).output.action, StubProvider.of(ctx.dep(stub)).file_name)
        if env_check is None:
            return built
        dest, env_input = env_check
        checked = ctx.run("StubCheck", [PYTHON, "-m", "tpbuild_triton.stubcheck", "--stub", f"stub/{STUB}",
                                        "--env", f"env/{env_file}", "--out", f"out/{STUB}"],
                          inputs={f"stub/{STUB}": built, dest: env_input}, outs=[STUB],
                          code=["tpbuild_triton.stubcheck"],
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
