"""The workspace: its root, its `tpbuild.toml`, and the packages below it.

The root is the nearest ancestor holding `tpbuild.toml`. Every directory below it with a `BUILD.toml`
is a package named by its path from the root. `[workspace]`, `[cache]` and `[remote]` belong to the engine; every
other table (`[triton]`, …) belongs to a rule set and is handed to it unread, so the engine stays
ignorant of what rule sets configure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import memo, tomlsource
from .errors import UserError, at
from .layout import BUILD_FILE, OUT_DIR, STATE_DIR, WORKSPACE_FILE, find_root, sig  # noqa: F401 (re-exported)
from .observed import Observed
from .value import Frozen


class _Table(Frozen):
    """An engine table of tpbuild.toml. Its fields are its class's annotated attributes, each with its
    default (a dict's copied); `_bounds` are pydantic's constraints of a field (`Field(gt=...)`)."""

    _bounds: dict[str, dict] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        cls.__match_args__ = tuple(cls.__dict__.get("__annotations__", {}))
        super().__init_subclass__(**kwargs)

    def __init__(self, **values):
        for name in self.__match_args__:
            value = values.pop(name) if name in values else getattr(self.__class__, name)
            object.__setattr__(self, name, dict(value) if value.__class__ is dict else value)
        if values:
            raise TypeError(f"{self.__class__.__name__} has no field {next(iter(values))!r}")


# The engine's tables. A table whose values are plainly of their field's type (as nearly every
# tpbuild.toml is) is taken as is; anything else goes to pydantic, which converts what it may and
# reports what it may not, so pydantic is imported only for a tpbuild.toml that needs it.
class WorkspaceSection(_Table):
    """`[workspace]`: the patterns package discovery does not look into."""

    ignore: tuple[str, ...] = ()


class CacheSection(_Table):
    """`[cache]`: the local cache's place and bound, the shared one, and the salt every key holds."""

    dir: str | None = None
    remote: str | None = None
    remote_upload: bool = True
    salt: str = ""
    max_size: str | None = None


class RemoteSection(_Table):
    """Remote execution (REAPI); see tpbuild/reapi/service.py for where each value may also come from."""

    executor: str | None = None
    instance_name: str = ""
    exec_properties: dict[str, str] = {}  # (each instance's a copy)
    queue_timeout: float = 600.0
    _bounds = {"queue_timeout": {"gt": 0}}


def _plain(kind: str, value):
    """`value` as pydantic would make it of a field of type `kind`, when it is plainly of it; else None."""
    if kind in ("str", "str | None"):
        return value if isinstance(value, str) else None
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "float":
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if kind == "tuple[str, ...]":
        return tuple(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else None
    if kind == "dict[str, str]":
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return dict(value) if ok else None
    return None


def _section(src: tomlsource.TomlSource, name: str, cls: type, value: dict):
    kinds = cls.__annotations__  # their text (annotations are not evaluated: `from __future__`)
    plain = {}
    for key, v in value.items():
        made = _plain(kinds[key], v) if key in kinds else None
        bounds = cls._bounds.get(key, {})
        if made is None or made != made or ("gt" in bounds and not made > bounds["gt"]):
            return _validated(src, name, cls, value)
        plain[key] = made
    return cls(**plain)


def _validated(src: tomlsource.TomlSource, name: str, cls: type, value: dict):
    """The table checked by pydantic, as a model with the table's fields: the value it converts to, or
    the error at the line to change."""
    import typing

    from pydantic import ConfigDict, Field, ValidationError, create_model

    from .manifest import validation_error

    types = typing.get_type_hints(cls)
    spec = {name: (types[name], Field(getattr(cls, name), **cls._bounds.get(name, {}))) for name in cls.__match_args__}
    model = create_model(cls.__name__, __config__=ConfigDict(extra="forbid", frozen=True), **spec)
    try:
        checked = model.model_validate(value)
    except ValidationError as e:
        raise validation_error(src, (name,), e) from None
    return cls(**{k: getattr(checked, k) for k in spec})


class Workspace(Frozen):
    """A loaded tpbuild.toml with its root."""

    __slots__ = __match_args__ = ("root", "workspace", "cache", "remote", "sections", "source", "observed")
    _compared = __match_args__[:-1]

    def __init__(self, root: Path, workspace: WorkspaceSection, cache: CacheSection, remote: RemoteSection,
                 sections: dict, source: tomlsource.TomlSource, observed: Observed | None = None):
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "workspace", workspace)
        object.__setattr__(self, "cache", cache)
        object.__setattr__(self, "remote", remote)
        object.__setattr__(self, "sections", sections)  # rule-set tables, by name
        object.__setattr__(self, "source", source)
        # What this build has seen of the workspace's files (the no-op stamp's stats, see observed.py).
        object.__setattr__(self, "observed", Observed() if observed is None else observed)

    def packages(self, walked: list[tuple[str, tuple]] | None = None, misnamed: list[str] | None = None) -> list[str]:
        """Package paths, sorted (see discovery.py). `walked` collects each directory looked into with
        its `sig` from before the look: a package added since shows as a change of one of their
        mtimes. `misnamed` collects files that look meant as a manifest but are not read
        (`build.toml`), so they are reported instead of passed over."""
        from .discovery import discover

        return discover(self.root, self.workspace.ignore, self.observed, walked, misnamed)


ENGINE_SECTIONS = {"workspace": WorkspaceSection, "cache": CacheSection, "remote": RemoteSection}


def load(root: Path) -> Workspace:
    src = _source(root)
    sections: dict = {}
    parsed: dict = {}
    for name, value in src.data.items():
        if not isinstance(value, dict):
            raise src.error((name,), f"unexpected top-level key {name!r}: put settings in a table such as [cache]")
        if name in ENGINE_SECTIONS:
            parsed[name] = _section(src, name, ENGINE_SECTIONS[name], value)
        else:
            sections[name] = value
    return Workspace(
        root=root,
        workspace=parsed.get("workspace", WorkspaceSection()),
        cache=parsed.get("cache", CacheSection()),
        remote=parsed.get("remote", RemoteSection()),
        sections=sections,
        source=src,
    )


# tpbuild.toml as last parsed, with its text (in tpbuild-out's state directory, beside the no-op stamp).
PARSED, KIND, VERSION = "workspace", "workspace", 1


def _source(root: Path) -> tomlsource.TomlSource:
    """tpbuild.toml, parsed; every command reads it, and the parse of the same text is remembered, so
    that a build after an edit imports no TOML parser (tomli, and the datetime it brings, were 3 ms
    of a 0.19 s edit at 1,000 models). The memo is keyed by the whole text: any edit is a miss. A
    file whose values JSON would not give back as they are (a date, nan) is parsed every time."""
    text = tomlsource.read(root / WORKSPACE_FILE, WORKSPACE_FILE)
    state = root / STATE_DIR
    saved = memo.load(state / PARSED, KIND, VERSION)
    if isinstance(saved, dict) and saved.get("text") == text:
        return tomlsource.TomlSource(WORKSPACE_FILE, saved["data"], {tuple(k): n for k, n in saved["lines"]})
    src = tomlsource.parse(text, WORKSPACE_FILE)
    try:
        plain = json.loads(json.dumps(src.data)) == src.data
    except (TypeError, ValueError):
        plain = False
    if plain and state.is_dir():  # never made here: `tpbuild query` in a workspace never built writes nothing
        # Not saved (a full disk): parsed again next time.
        memo.save(state / PARSED, KIND, VERSION, {"text": text, "data": src.data,
                                                  "lines": [[list(k), n] for k, n in src.lines.items()]},
                  state / "tmp", "the parsed tpbuild.toml")
    return src


# The cache directory is tpbuild's alone. tpbuild makes it (or adopts a missing or empty one) and
# leaves MARKER in it; a non-empty directory without the marker is not a tpbuild cache, and tpbuild
# neither writes into it nor deletes from it. `clean --cache` removes only the names below, and the
# directory itself only if tpbuild made it.
MARKER = ".tpbuild-cache"
CACHE_NAMES = ("cas", "ac", "tmp", "workspaces", "sha256", "quarantine", "id", MARKER)


def cache_dir(ws: Workspace, flag: str | None) -> Path:
    """The local cache directory; exit 2 naming the setting if it is the workspace, holds it, or is $HOME."""
    if flag:
        path, where = Path(flag).expanduser().resolve(), None
        what = f"--cache-dir {flag}"
    elif os.environ.get("TPBUILD_CACHE_DIR"):
        env = os.environ["TPBUILD_CACHE_DIR"]
        path, where, what = Path(env).expanduser().resolve(), None, f"TPBUILD_CACHE_DIR={env}"
    elif ws.cache.dir:
        path = (ws.root / Path(ws.cache.dir).expanduser()).resolve()
        where = at(ws.source.path, ws.source.line_of(("cache", "dir")))
        what = f"[cache] dir = {ws.cache.dir!r}"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path, where, what = Path(base).resolve() / "tpbuild", None, "the default cache directory"
    home = Path.home().resolve()
    if path == ws.root or ws.root.is_relative_to(path):
        raise UserError(f"{what}: the cache directory {path} is the workspace {ws.root} or holds it; "
                        "tpbuild owns its cache directory, so pick a directory of its own, e.g. ~/.cache/tpbuild",
                        where)
    if path == home:
        raise UserError(f"{what}: the cache directory {path} is your home directory; pick a directory of "
                        "its own, e.g. ~/.cache/tpbuild", where)
    return path


def is_cache(path: Path) -> bool:
    """Whether `path` carries tpbuild's marker (so tpbuild may delete what it keeps there)."""
    return _marker(path) is not None


def _marker(path: Path) -> dict | None:
    try:
        data = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tpbuild_cache") == 1 else None


def _foreign(path: Path) -> list[str]:
    """What in `path` is not tpbuild's: anything but the names a cache holds (a cache made before the
    marker existed holds only those) and a marker being written by a concurrent build."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n not in CACHE_NAMES and not n.startswith(f"{MARKER}."))


def claim_cache(path: Path) -> Path:
    """Make sure `path` is a tpbuild cache: made here with the marker, or a missing or empty directory
    adopted with it; exit 2 naming it when it holds anything else."""
    if _marker(path) is not None:
        return path
    created = False
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            created = True
        except FileExistsError:
            pass  # a concurrent build made it: adopt it below as they do
        except OSError as e:
            raise UserError(f"cannot create the cache directory {path}: {e.strerror}") from None
    elif not path.is_dir():
        raise UserError(f"the cache directory {path} is not a directory; point --cache-dir, TPBUILD_CACHE_DIR "
                        "or [cache] dir elsewhere")
    foreign = _foreign(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise UserError(f"{path} is not empty and is not a tpbuild cache (no {MARKER} in it; it holds {shown}): "
                        "tpbuild uses only a directory of its own; point --cache-dir, TPBUILD_CACHE_DIR or "
                        "[cache] dir at a new or empty directory")
    tmp = path / f"{MARKER}.{os.getpid()}.{os.urandom(4).hex()}"
    try:
        tmp.write_text(json.dumps({"tpbuild_cache": 1, "created": created}) + "\n")
        try:
            os.link(tmp, path / MARKER)  # the first build to claim it decides; the others read theirs
        except FileExistsError:
            pass
    except OSError as e:
        raise UserError(f"cannot write to the cache directory {path}: {e.strerror}") from None
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    return path


def refuse_foreign(path: Path) -> None:
    """Exit 2 if `path` is a directory tpbuild may not clean: not marked, and holding what is not tpbuild's."""
    if path.exists() and _marker(path) is None and _foreign(path):
        raise UserError(f"{path} is not a tpbuild cache (no {MARKER} in it); not deleting anything in it")


def clean_cache(path: Path) -> list[str]:
    """Remove what tpbuild put in its cache directory, and the directory if tpbuild made it; returns
    what went. Exit 2 (removing nothing) for a directory that is not a tpbuild cache."""
    from .atomic import remove

    refuse_foreign(path)
    if not path.exists():
        return []
    marker = _marker(path)
    foreign = _foreign(path)
    gone = []
    for name in CACHE_NAMES:
        if name == MARKER:
            continue
        p = path / name
        if os.path.lexists(p):
            remove(p)
            gone.append(str(p))
    if marker is not None and marker.get("created") and not foreign:
        remove(path / MARKER)
        try:
            path.rmdir()
            gone.append(str(path))
        except OSError:
            pass  # something appeared in it meanwhile: keep it
    return gone


def memo_dir(cache_dir: Path, root: Path) -> Path:
    """Where a workspace's stat memo and analysis memo live: in the cache, not in tpbuild-out, so that
    deleting tpbuild-out (to restore outputs from the cache) does not also throw away what makes the
    restore fast."""
    import xxhash

    return cache_dir / "workspaces" / xxhash.xxh3_64_hexdigest(str(root).encode())


def temp_dirs(cache_dir: Path, root: Path) -> tuple[Path, ...]:
    """The temp space a build of `root` writes in (`atomic.py`), where a build sweeps away what dead
    builds left: every build that reads its memos, and a no-op stamp's hit (`noop.Stamp.replay`)."""
    return cache_dir / "tmp", memo_dir(cache_dir, root) / "tmp", root / STATE_DIR / "tmp"
