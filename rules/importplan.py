"""The plan of a `tpbuild import`: which directories of an existing model repository become
`triton_model` packages, which files each takes, what each BUILD.toml says, and what is left out and why.

Planning reads SRC and writes nothing (`importer` carries a plan out), so `--dry-run` shows exactly
what an import would do. The aim is a workspace whose build gives back SRC file for file: configs
are kept byte for byte (`config = "config.pbtxt"`), a model without a config gets `config = false`,
every other file of the model directory is a version file or a `files` entry. The exceptions are
named in the plan, never silent: bytecode (the build leaves it out), an `EXECUTION_ENV_PATH` that
had to be rewritten so the env sits at the model root as `triton_model` places it, files that could
not be imported (symlinks leading out of SRC are never followed, unreadable and special files, names
tpbuild reserves). A model the build would refuse (a bad config, a version directory without its
model file) is not imported at all: the reason is listed, to fix in SRC before importing again.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from tpbuild.plugin import BUILD_FILE, BuildError, UserError

from . import elf, envinfo, tomlwrite
from .model import STUB, VERSION_RE

CONFIG = "config.pbtxt"
ENV_PARAM = "EXECUTION_ENV_PATH"
ENV_PREFIX = "$$TRITON_MODEL_DIRECTORY"
ENV_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]")
_LIBPYTHON = re.compile(r"^libpython(3\.\d+)[a-z]*\.so")


@dataclass(frozen=True)
class FileCopy:
    dest: str      # path inside the package
    src: Path      # the file read
    movable: bool  # a plain file of the model directory: --move renames it; one reached through a
                   # symlink, or shared with other models, is copied
    content: bytes | None = None  # written instead of src's bytes (a config whose env path was rewritten)


@dataclass
class ModelImport:
    name: str      # the model's name: its directory in SRC
    package: str   # the package directory (and target) name
    files: list[FileCopy]
    build_toml: str
    summary: str   # one line for the plan


@dataclass
class Plan:
    src: Path
    models: list[ModelImport] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # other backends: "name: why"
    refused: list[str] = field(default_factory=list)   # Python models the build would refuse: "name: why"
    problems: list[str] = field(default_factory=list)  # files not imported, clashes
    notes: list[str] = field(default_factory=list)     # differences from SRC the build will show


def plan(src: Path, shown: str, *, inline_config: bool = False) -> Plan:
    """`shown`: SRC as the user wrote it, for messages."""
    root = _repository(src, shown)
    p = Plan(root)
    packages: dict[str, str] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        name = entry.name
        if name.startswith("."):
            continue  # .git, .ipynb_checkpoints: not models, and the server skips them too
        path = Path(entry.path)
        via_link = entry.is_symlink()
        if via_link:
            real = _follow(path, root, name, p.problems)
            if real is None:
                continue
            path = real
        if not path.is_dir():
            p.notes.append(f"{name}: not a model directory: not imported")
            continue
        if not _looks_like_model(path):
            p.notes.append(f"{name}/: no {CONFIG} and no version directory: not a model, not imported")
            continue
        package = _package_name(name)
        if package in packages:
            p.problems.append(f"{name}/: its package name {package!r} is taken by {packages[package]}/ "
                              "(names are reduced to letters, digits, '_', '-', '.'): not imported")
            continue
        m = _Model(root, name, package, path, via_link, p).build(inline_config)
        if m is not None:
            packages[package] = name
            p.models.append(m)
    if not p.models and not p.skipped and not p.refused:
        raise UserError(f"{shown} is not a model repository: none of its directories holds a {CONFIG} or a "
                        "version directory (1/, 2/, ...) with a model file")
    return p


def _repository(src: Path, shown: str) -> Path:
    if not os.path.lexists(src):
        raise UserError(f"{shown}: no such directory: name an existing model repository")
    try:
        root = src.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        raise UserError(f"{shown} is a symlink loop: name the model repository itself") from None
    except OSError as e:
        raise UserError(f"{shown}: {e.strerror.lower() if e.strerror else e}: name the model repository "
                        "itself" + (" (a symlink loop?)" if src.is_symlink() else "")) from None
    if not root.is_dir():
        raise UserError(f"{shown} is a file: name the model repository, the directory holding one directory per model")
    try:
        os.listdir(root)
    except OSError as e:
        raise UserError(f"{shown}: cannot list it ({e.strerror})") from None
    if (root / CONFIG).is_file() or any(_has_model_file(d) for d in _version_dirs(root)):
        raise UserError(f"{shown} looks like one model (it holds {CONFIG} or 1/model.py): name the repository "
                        f"that holds it, {root.parent}")
    return root


def _version_dirs(path: Path) -> list[Path]:
    try:
        return [e for e in path.iterdir() if VERSION_RE.match(e.name) and e.is_dir()]
    except OSError:
        return []


def _has_model_file(version: Path) -> bool:
    return (version / "model.py").is_file()


def _looks_like_model(path: Path) -> bool:
    return (path / CONFIG).exists() or bool(_version_dirs(path))


def _package_name(name: str) -> str:
    safe = _NAME_OK.sub("_", name)
    return "_" + safe if safe.startswith(".") else safe  # hidden directories are no packages


def _follow(path: Path, root: Path, rel: str, problems: list[str]) -> Path | None:
    """Where a symlink inside SRC leads, if that is inside SRC; else a problem and None."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        problems.append(f"{rel}: a dangling symlink or a symlink loop: not imported")
        return None
    if not real.is_relative_to(root):
        problems.append(f"{rel}: a symlink leading out of SRC (to {os.readlink(path)}): not followed, not imported")
        return None
    return real


class _Model:
    """One model directory of SRC, planned."""

    def __init__(self, root: Path, name: str, package: str, path: Path, via_link: bool, p: Plan):
        self.root, self.name, self.package, self.path, self.p = root, name, package, path, p
        self.files: list[FileCopy] = []
        self.dirs: list[str] = []
        self.notes: list[str] = []
        self.problems: list[str] = []  # the plan's only if the model is imported or refused, not skipped
        self._config_text: bytes | None = None
        self.refused = False
        self.dropped_links: list[str] = []  # symlinks not followed, by their path in the model
        self._walk(path, "", (path,), movable=not via_link)

    # -- scanning --------------------------------------------------------------------------------

    def _walk(self, path: Path, rel: str, stack: tuple[Path, ...], movable: bool) -> None:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as e:
            self.problems.append(f"{self.name}/{rel}: cannot list it ({e.strerror}): not imported")
            return
        for e in entries:
            r = f"{rel}/{e.name}" if rel else e.name
            where = f"{self.name}/{r}"
            if e.name == BUILD_FILE:
                self.problems.append(f"{where}: {BUILD_FILE} is the name of tpbuild's manifests (it would make "
                                       "its directory a package): not imported; rename it in SRC")
                continue
            target, file_movable = Path(e.path), movable
            if e.is_symlink():
                target = _follow(target, self.root, where, self.problems)
                if target is None:
                    self.dropped_links.append(r)
                    continue
                file_movable = False
            try:
                st = target.stat()
            except OSError as err:
                self.problems.append(f"{where}: {err.strerror}: not imported")
                continue
            if stat.S_ISDIR(st.st_mode):
                if any(target == s or s.is_relative_to(target) for s in stack):
                    self.problems.append(f"{where}: a symlink loop (it leads to {target.name}/, which holds it): "
                                           "not followed")
                    continue
                self.dirs.append(r)
                self._walk(target, r, (*stack, target), file_movable)
            elif not stat.S_ISREG(st.st_mode):
                self.problems.append(f"{where}: not a regular file (a FIFO, socket or device): not imported")
            elif (why := _unreadable(target)) is not None:
                self.problems.append(f"{where}: unreadable ({why}): not imported")
            else:
                self.files.append(FileCopy(r, target, file_movable))

    # -- planning --------------------------------------------------------------------------------

    def build(self, inline_config: bool) -> ModelImport | None:
        m = self._plan(inline_config)
        if m is not None or self.refused:
            self.p.problems.extend(self.problems)
        if m is not None:
            self.p.notes.extend(self.notes)
        return m

    def _plan(self, inline_config: bool) -> ModelImport | None:
        from google.protobuf import text_format

        from . import modelconfig

        has_config = self._has(CONFIG)
        if not has_config and os.path.lexists(self.path / CONFIG):  # without it, the model would change meaning
            return self._refuse(f"its {CONFIG} cannot be imported (see files not imported)")
        text = self._file(CONFIG).src.read_bytes() if has_config else None
        versions = sorted({d for d in self.dirs if "/" not in d and VERSION_RE.match(d)}, key=int)
        cfg = modelconfig.model_config_pb2.ModelConfig()
        try:
            if text is not None:
                text_format.Parse(text.decode("utf-8"), cfg)
        except UnicodeDecodeError:
            return self._refuse(f"{CONFIG} is not UTF-8 text")
        except text_format.ParseError as e:
            return self._refuse(f"{CONFIG} does not parse as Triton's ModelConfig (at line:column {e})")
        model_file = modelconfig.default_model_filename(cfg)
        if cfg.platform or cfg.backend not in ("", "python"):
            self.p.skipped.append(f"{self.name}: " + (f"platform {cfg.platform!r}" if cfg.platform
                                                      else f"backend {cfg.backend!r}"))
            return None
        if not cfg.backend and not (model_file.endswith(".py") and any(self._has(f"{v}/{model_file}")
                                                                        for v in versions)):
            self.p.skipped.append(f"{self.name}: no backend set and no {model_file} in a version directory "
                                  "(the server infers another backend)")
            return None
        try:
            modelconfig.validate(cfg, self.name)
        except modelconfig.ConfigError as e:
            return self._refuse(f"{CONFIG}: {e}" if has_config else e.message)
        missing = [v for v in versions if not self._has(f"{v}/{model_file}")]
        if missing:
            return self._refuse(f"version director{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)} "
                                f"without {model_file}: the server cannot load "
                                f"{'them' if len(missing) > 1 else 'it'}; add it or remove the directory")
        if not versions:
            return self._refuse("no version directory (1/, 2/, ...): the server has nothing to load")

        env_attr, suggestion = self._env(cfg, text)
        if self.refused:
            return None
        if env_attr is not None and self._config_text != text:
            cfg = modelconfig.parse_text(self._config_text.decode("utf-8"), self.name)
            self.files = [f for f in self.files if f.dest != CONFIG] + \
                [FileCopy(CONFIG, self._file(CONFIG).src, self._file(CONFIG).movable, self._config_text)]
        self._drop_bytecode(env_attr)
        self._note_empty_dirs()
        stub = self._stub()
        root_items = sorted({f.dest.split("/")[0] for f in self.files} - {CONFIG, *versions}
                            - ({env_attr} if env_attr else set()) - ({STUB} if stub else set()))
        for item in [i for i in root_items if i.startswith(("~", ":"))]:
            self.problems.append(f"{self.name}/{item}: a name tpbuild cannot give as a source (it starts with "
                                   f"{item[0]!r}): not imported")
            self.files = [f for f in self.files if f.dest.split("/")[0] != item]
            root_items.remove(item)
        for item in root_items:
            if re.fullmatch(r"0[0-9]+", item) and item in self.dirs:
                self.notes.append(f"{self.name}/{item}/: the server skips version names with a leading 0; "
                                  "kept as a plain directory")

        target = self.package
        attrs: dict = {}
        if target != self.name:
            attrs["model_name"] = self.name
        attrs["versions"] = versions
        config_table = None
        if not has_config:
            attrs["config"] = False
        elif inline_config:
            config_table = self._inline(cfg)
        if has_config and config_table is None:
            attrs["config"] = CONFIG
        if root_items:
            attrs["files"] = root_items
        if env_attr is not None:
            attrs["env"] = env_attr
        if stub is not None:
            attrs["stub"] = f":{target}_stub"
        comments = {"config": "no config.pbtxt: the server auto-completes it, as before"} if not has_config else {}
        parts = [f"# Imported by `tpbuild import` from the model directory {self.name}/.\n",
                 tomlwrite.table(("triton_model", target), attrs, comments)]
        if config_table is not None:
            parts.append("\n" + tomlwrite.table(("triton_model", target, "config"), config_table))
            self.files = [f for f in self.files if f.dest != CONFIG]
            self.notes.append(f"{self.name}/{CONFIG}: now an inline table in BUILD.toml; the build renders it "
                              "in canonical text (same config, other bytes)")
        if stub is not None:
            python, lib = stub
            parts.append("\n" + tomlwrite.table(("python_stub", f"{target}_stub"),
                                                {"python": python, "prebuilt": STUB},
                                                {"python": f"read from the stub's ELF: it links {lib}"}))
        if suggestion:
            parts.append("\n" + suggestion)
        build_toml = "".join(parts)
        tomllib.loads(build_toml)  # a bug in rendering would otherwise surface only at the first build
        what = ["config.pbtxt kept" if has_config and config_table is None else
                "inline config" if has_config else "no config (auto-complete)",
                f"version{'s' if len(versions) > 1 else ''} {', '.join(versions)}"]
        if root_items:
            what.append(f"files {', '.join(root_items)}")
        if env_attr:
            what.append(f"env {env_attr}")
        if stub:
            what.append(f"stub for Python {stub[0]}")
        return ModelImport(self.name, self.package, sorted(self.files, key=lambda f: f.dest), build_toml,
                           "; ".join(what))

    def _refuse(self, why: str) -> None:
        self.p.refused.append(f"{self.name}: {why}")
        self.refused = True

    def _has(self, dest: str) -> bool:
        return any(f.dest == dest for f in self.files)

    def _file(self, dest: str) -> FileCopy:
        return next(f for f in self.files if f.dest == dest)

    def _drop_bytecode(self, env_dir: str | None) -> None:
        """The build leaves `__pycache__` and `*.pyc` out of versions and `files` (an env keeps its own)."""
        def bytecode(dest: str) -> bool:
            parts = dest.split("/")
            return (env_dir is None or parts[0] != env_dir) and ("__pycache__" in parts or dest.endswith(".pyc"))

        dropped = [f.dest for f in self.files if bytecode(f.dest)]
        if dropped:
            self.files = [f for f in self.files if not bytecode(f.dest)]
            self.notes.append(f"{self.name}/: {len(dropped)} bytecode file(s) (__pycache__, *.pyc) left out: "
                              "the server recompiles them")

    def _note_empty_dirs(self) -> None:
        holding = {"/".join(f.dest.split("/")[:i]) for f in self.files for i in range(1, f.dest.count("/") + 1)}
        empty = [d for d in self.dirs if d not in holding and d.rsplit("/", 1)[-1] != "__pycache__"]
        if empty:
            self.notes.append(f"{self.name}/: empty directories are not kept (a build places files): "
                              f"{', '.join(d + '/' for d in empty)}")

    def _stub(self) -> tuple[str, str] | None:
        """(Python, libpython) of a custom stub at the model root, read from its ELF; None (the file stays
        a plain `files` entry) when there is none or its Python cannot be read."""
        if not self._has(STUB):
            return None
        try:
            libs = elf.needed(self._file(STUB).src)
        except (BuildError, UserError) as e:
            self.notes.append(f"{self.name}/{STUB}: {e.message}; kept as a plain file, not a python_stub")
            return None
        for lib in libs:
            if m := _LIBPYTHON.match(lib):
                return m.group(1), lib
        self.notes.append(f"{self.name}/{STUB}: links no libpython3.X (it needs {', '.join(libs) or 'nothing'}), "
                          "so its Python is unknown; kept as a plain file, not a python_stub")
        return None

    # -- the env ---------------------------------------------------------------------------------

    def _env(self, cfg, text: bytes | None) -> tuple[str | None, str]:
        """The `env` attribute and a commented python_env suggestion (sets `_config_text`). Where the env is not
        at the model root as `$$TRITON_MODEL_DIRECTORY/<file>`, it is placed there and the config's value
        rewritten (reported); where it is outside SRC or cannot be placed, the config is kept as written."""
        if ENV_PARAM not in cfg.parameters:
            return None, ""
        value = cfg.parameters[ENV_PARAM].string_value
        where = f"{self.name}/{CONFIG}: {ENV_PARAM} {value!r}"
        rel = None
        if value.startswith(ENV_PREFIX + "/"):
            rel = posixpath.normpath(value[len(ENV_PREFIX) + 1:])
        elif value.startswith("/") and f"/{self.name}/" in value:
            tail = value.rsplit(f"/{self.name}/", 1)[1]  # an absolute path into this model's directory
            rel = posixpath.normpath(tail) if (self.path / tail).exists() else None
        if rel is None:
            self.notes.append(f"{where}: not inside the model directory; kept as written (the server must have "
                              "the env at that path), not managed as an env")
            return None, ""
        candidate = self.path / rel
        if rel.startswith("../"):  # shared with other models, elsewhere in SRC
            real = _follow_quiet(candidate, self.root)
            if real is None or not real.is_file():
                self.notes.append(f"{where}: leads out of SRC or to nothing; kept as written, not managed as an env")
                return None, ""
            source = FileCopy(real.name, real, movable=False)
        elif self._has(rel):
            source = self._file(rel)
        elif rel in self.dirs:
            source = None  # an unpacked env directory (r23.07+)
            links = [r for r in self.dropped_links if r.startswith(rel + "/")]
            if links:
                self._refuse(f"its env directory {rel}/ holds symlinks that cannot be imported ({', '.join(links)}; "
                             "a venv's python links to its base interpreter), and the env would not work without "
                             "them: pack it into a tarball (venv-pack, conda-pack) and import again")
                return None, ""
        else:
            self.notes.append(f"{where}: no such file in the model directory; kept as written, not managed as an env")
            return None, ""
        base = posixpath.basename(rel)
        if source is not None and not base.endswith(ENV_SUFFIXES):
            self.notes.append(f"{where}: not a .tar.gz/.tar archive; kept as written, not managed as an env")
            return None, ""
        env_path = source.src if source is not None else self.path / rel
        canonical = f"{ENV_PREFIX}/{base}"
        if rel != base or value != canonical:
            taken = {f.dest.split("/")[0] for f in self.files if not (f.dest == rel or f.dest.startswith(rel + "/"))}
            if base in taken or source is None:
                self.notes.append(f"{where}: the env cannot be placed at the model root as {base} "
                                  f"({'a directory deeper down' if source is None else 'that name is taken'}); "
                                  "kept as written, not managed as an env")
                return None, ""
            new = self._rewrite(text, value, canonical)
            if new is None:
                return None, ""
            self.files = [f for f in self.files if f.dest != rel] + [FileCopy(base, source.src, source.movable)]
            self._config_text = new
            self.notes.append(f"{where} normalised to {canonical!r}: the env is placed at the model root "
                              f"(it was at {rel}); this config is no longer byte-identical to SRC")
        else:
            self._config_text = text
        return base, self._suggest(base, env_path)

    def _rewrite(self, text: bytes, old: str, new: str) -> bytes | None:
        """The config with one string value replaced, everything else (comments, layout) as it was."""
        from . import modelconfig

        for quote in ('"', "'"):
            needle = f"{quote}{old}{quote}".encode()
            if text.count(needle) == 1:
                out = text.replace(needle, f"{quote}{new}{quote}".encode())
                cfg = modelconfig.parse_text(out.decode("utf-8"), self.name)
                if cfg.parameters[ENV_PARAM].string_value == new:
                    return out
        self.notes.append(f"{self.name}/{CONFIG}: {ENV_PARAM} {old!r} could not be rewritten in place (the value "
                          "is escaped or appears more than once); kept as written, not managed as an env")
        return None

    def _suggest(self, base: str, env_path: Path) -> str:
        try:
            info = envinfo.read(env_path)
        except envinfo.EnvReadError as e:
            self.notes.append(f"{self.name}/{base}: {e}; no python_env suggested")
            return ""
        if info.python is None:
            self.notes.append(f"{self.name}/{base}: no Python found in it (no lib/python3.X, conda-meta or "
                              "pyvenv.cfg); no python_env suggested")
            return ""
        attrs: dict = {"python": info.python, "manager": info.manager or "venv"}
        if info.interpreter:
            attrs["interpreter"] = info.interpreter
        if info.conda:
            attrs["conda"] = list(info.conda)
        if info.channels:
            attrs["channels"] = list(info.channels)
        if info.pip:
            attrs["pip"] = list(info.pip)
        kind = {"conda": "a conda env", "venv": "a venv"}.get(info.manager, "an env of unknown kind")
        body = tomlwrite.table(("python_env", f"{self.package}_env"), attrs)
        head = (f"A python_env tpbuild could build instead of the prebuilt {base} ({kind} for Python {info.python};\n"
                "its top-level packages and their versions as found in it). To switch, uncomment this target, check\n"
                f"it, set env = \":{self.package}_env\" above, and remove {base}.\n")
        return "".join(f"# {line}\n" if line else "#\n" for line in (head + body).splitlines())

    # -- inline config ---------------------------------------------------------------------------

    def _inline(self, cfg) -> dict | None:
        """The config as a TOML table, if reading that table back gives the same ModelConfig."""
        from . import modelconfig

        table = config_table(cfg)
        if table.get("name") == self.name:
            del table["name"]  # the rule fills in both
        if table.get("backend") == "python":
            del table["backend"]
        body = tomlwrite.table(("triton_model", "m", "config"), table)
        try:
            back = modelconfig.from_table(tomllib.loads(body)["triton_model"]["m"]["config"], self.name)
        except (tomllib.TOMLDecodeError, modelconfig.ConfigError):
            back = None
        want = modelconfig.model_config_pb2.ModelConfig()
        want.CopyFrom(cfg)
        want.name = want.name or self.name
        if not want.backend and not want.platform:
            want.backend = "python"
        if back is None or modelconfig.render(back) != modelconfig.render(want):
            self.notes.append(f"{self.name}/{CONFIG}: kept as a file: as an inline table it would not read back "
                              "as the same config")
            return None
        return table


def _follow_quiet(path: Path, root: Path) -> Path | None:
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.is_relative_to(root) else None


def _unreadable(path: Path) -> str | None:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as e:
        return e.strerror
    return None


def config_table(msg) -> dict:
    """A ModelConfig as the inline `config` table: config.pbtxt's field names, enum names, and
    parameters in the `KEY = "value"` shorthand."""
    out: dict = {}
    for fd, value in msg.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            vf = fd.message_type.fields_by_name["value"]
            out[fd.name] = {str(k): _field_value(vf, value[k]) for k in sorted(value)}
            if fd.name == "parameters" and msg.DESCRIPTOR.name == "ModelConfig":
                out[fd.name] = {k: v["string_value"] if set(v) == {"string_value"} else v
                                for k, v in out[fd.name].items()}
        elif fd.is_repeated:
            out[fd.name] = [_field_value(fd, v) for v in value]
        else:
            out[fd.name] = _field_value(fd, value)
    return out


def _field_value(fd, value):
    if fd.message_type is not None:
        return config_table(value)
    if fd.enum_type is not None:
        return fd.enum_type.values_by_number[value].name
    return value
