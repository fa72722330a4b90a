"""`tpbuild import SRC`: adopt an existing Triton model repository as BUILD.toml packages.

    tpbuild import SRC [--into DIR] [--dry-run] [--inline-config] [--move] [--triton-version V]

The workspace is the one holding the current directory (or `-C DIR`); where there is none, that
directory becomes one (a `tpbuild.toml` is written). Each Python-backend model of SRC becomes a
package `DIR/<model>/` (default `models/`), and a root `model_repository` target covers them all.
What goes where is decided by `importplan`, which reads SRC and writes nothing; this module prints
the plan and carries it out.

Carrying it out never overwrites and never leaves half an import behind: every destination is checked
first (one that exists refuses the whole import, exit 2), the packages are assembled in a hidden
staging directory beside them and renamed into place, and a failure or an interrupt undoes everything
done so far (files moved by `--move` go back to SRC).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from pydantic import ValidationError

from tpbuild.plugin import BUILD_FILE, OUT_DIR, WORKSPACE_FILE, BuildError, Command, UserError, find_root

from . import importplan, settings, tomlwrite

DEFAULT_INTO = "models"
REPOSITORY = "repository"
_PKG_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")


class ImportCommand(Command):
    name = "import"
    help = "turn an existing model repository into BUILD.toml packages"
    needs_workspace = False

    def configure(self, parser) -> None:
        parser.add_argument("src", metavar="SRC", help="the model repository to import")
        parser.add_argument("--into", metavar="DIR", help=f"where the model packages go (default: {DEFAULT_INTO}/ "
                                                          "at the workspace root)")
        parser.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
        parser.add_argument("--inline-config", action="store_true",
                            help="configs as inline tables in BUILD.toml, where they read back the same")
        parser.add_argument("--move", action="store_true", help="move the files out of SRC instead of copying them")
        parser.add_argument("--triton-version", metavar="V", help="[triton] version for a new tpbuild.toml (24.10)")

    def run(self, session, args) -> int:
        start = Path(getattr(args, "directory", None) or ".").resolve()
        if args.triton_version is not None:
            try:
                settings.TritonSettings(version=args.triton_version)
            except ValidationError as e:
                raise UserError(f"--triton-version: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        try:
            root, new_workspace = find_root(start), False
        except UserError:
            root, new_workspace = start, True
        src = start / args.src
        into = self._into(root, start, args.into)
        plan = importplan.plan(src, args.src, inline_config=args.inline_config)
        if into.is_relative_to(plan.src) or plan.src.is_relative_to(into):
            raise UserError(f"--into {args.into or DEFAULT_INTO} and SRC {args.src} overlap: import into a "
                            "directory outside SRC")
        rel = into.relative_to(root).as_posix()
        rel = "" if rel == "." else rel
        taken = [m for m in plan.models if os.path.lexists(into / m.package)]
        if taken:
            names = ", ".join(f"{_pkg(rel, m.package)}/" for m in taken)
            raise UserError(f"{names} already exist{'s' if len(taken) == 1 else ''}: tpbuild import never "
                            f"overwrites; remove {'it' if len(taken) == 1 else 'them'}, or import --into another "
                            "directory. Nothing was written")
        writes = self._root_files(root, new_workspace, rel, args.triton_version, plan)
        print(render(plan, rel, root, writes, args.dry_run))
        if not plan.models:
            raise UserError("nothing to import: every model of SRC was skipped or refused (see above)")
        if args.dry_run:
            print("dry run: nothing written")
            return 0
        try:
            write(plan, into, writes, move=args.move)
        except OSError as e:  # SRC changed under the import, or the disk is full
            raise BuildError(f"the import failed ({e.strerror}: {e.filename}) and was undone: nothing was written"
                             + (", every moved file is back in SRC" if args.move else "")) from None
        print(f"imported {len(plan.models)} model(s) into {rel or '.'}/ of the workspace {root}")
        if (root / BUILD_FILE) in writes:
            print(f"build the repository: tpbuild -C {root} build //:{REPOSITORY}")
        return 0

    @staticmethod
    def _into(root: Path, start: Path, into: str | None) -> Path:
        path = (start / into).resolve() if into else root / DEFAULT_INTO
        if not path.is_relative_to(root):
            raise UserError(f"--into {into}: outside the workspace {root}; name a directory inside it")
        parts = path.relative_to(root).parts
        if parts[:1] == (OUT_DIR,):
            raise UserError(f"--into {into}: inside {OUT_DIR}/, which tpbuild owns; name another directory")
        bad = [p for p in parts if not _PKG_PART.match(p) or p.startswith(".")]
        if bad:
            raise UserError(f"--into {into}: {bad[0]!r} cannot be part of a package path (use letters, digits, "
                            "'_', '-', '.', not starting with '.')")
        if path.exists() and not path.is_dir():
            raise UserError(f"--into {into}: a file, not a directory")
        return path

    @staticmethod
    def _root_files(root: Path, new_workspace: bool, rel: str, version: str | None, plan) -> dict[Path, str]:
        """tpbuild.toml (for a new workspace) and the root BUILD.toml with the repository target, unless
        they exist: a user's files are never rewritten (the plan says what to add by hand)."""
        out: dict[Path, str] = {}
        if new_workspace:
            out[root / WORKSPACE_FILE] = (tomlwrite.table(("triton",), {"version": version}) if version else
                                          "# The tpbuild workspace (see the README's manifest reference).\n")
        elif version is not None:
            plan.notes.append(f"{WORKSPACE_FILE} exists and is left as it is: set [triton] version = "
                              f"\"{version}\" in it yourself if it says otherwise")
        pattern = f"//{rel}/..." if rel else "//..."
        table = tomlwrite.table(("model_repository", REPOSITORY), {"models": [pattern]})
        if not (root / BUILD_FILE).exists():
            out[root / BUILD_FILE] = "# The model repository: tpbuild build //:repository\n" + table
        else:
            plan.notes.append(f"{BUILD_FILE} at the workspace root exists and is left as it is; for a repository "
                              f"of the imported models, add:\n      " + table.replace("\n", "\n      ").rstrip())
        return out


def render(plan, rel: str, root: Path, writes: dict[Path, str], dry_run: bool) -> str:
    lines = [f"{'plan' if dry_run else 'import'}: {plan.src} -> {_pkg(rel, '')}/ of the workspace {root}"]
    width = max((len(_pkg(rel, m.package)) for m in plan.models), default=0)
    for m in plan.models:
        lines.append(f"  {_pkg(rel, m.package):<{width}}  <- {m.name}/  ({m.summary})")
    for title, items in (
            ("skipped, not Python-backend models (tpbuild builds Python-backend repositories)", plan.skipped),
            ("not imported: the build would refuse them (fix them in SRC and import them again)", plan.refused),
            ("files not imported", plan.problems),
            ("notes (where the built repository differs from SRC, and why)", plan.notes)):
        if items:
            lines.append(f"{title}:")
            lines.extend(f"  {item}" for item in items)
    for path in writes:
        lines.append(f"writes {path.relative_to(root)}")
    return "\n".join(lines)


def write(plan, into: Path, writes: dict[Path, str], *, move: bool) -> None:
    created: list[Path] = []  # directories this import made
    moved: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    written: list[Path] = []
    missing = []
    d = into
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        d.mkdir()
        created.append(d)
    staging = Path(tempfile.mkdtemp(prefix=".tpbuild-import-", dir=into))
    try:
        for m in plan.models:
            (staging / m.package).mkdir()
            (staging / m.package / BUILD_FILE).write_text(m.build_toml)
        # Copies before moves: a symlink elsewhere in SRC may lead to a file that a move takes away.
        for m in plan.models:
            for f in m.files:
                dest = staging / m.package / f.dest
                dest.parent.mkdir(parents=True, exist_ok=True)
                if f.content is not None:
                    dest.write_bytes(f.content)
                    shutil.copymode(f.src, dest)
                elif not (move and f.movable):
                    shutil.copy2(f.src, dest)
        for m, f in [(m, f) for m in plan.models for f in m.files if move and f.movable]:
            # A rewritten file's original is kept aside until the import is complete.
            dest = staging / m.package / f.dest if f.content is None else staging / ".replaced" / str(len(moved))
            dest.parent.mkdir(exist_ok=True)
            shutil.move(f.src, dest)
            moved.append((f.src, dest))
        for m in plan.models:
            final = into / m.package
            if os.path.lexists(final):
                raise UserError(f"{final} appeared while importing: nothing was imported")
            os.rename(staging / m.package, final)
            placed.append(final)
        for path, text in writes.items():
            with open(path, "x") as f:
                written.append(path)
                f.write(text)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for final in reversed(placed):
            os.rename(final, staging / final.name)
        for src, dest in reversed(moved):
            shutil.move(dest, src)
        shutil.rmtree(staging, ignore_errors=True)
        for d in reversed(created):
            shutil.rmtree(d, ignore_errors=True)
        raise
    shutil.rmtree(staging)  # empty but for originals a rewritten file replaced
    if move:
        _prune(plan.src, {src for src, _ in moved})


def _prune(top: Path, moved: set[Path]) -> None:
    """After --move: remove the directories of SRC that moving emptied (and only those)."""
    dirs = {p for src in moved for p in src.parents if p != top and p.is_relative_to(top)}
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass  # something stayed in it


def _pkg(rel: str, package: str) -> str:
    return "/".join(p for p in (rel, package) if p) or "."


