"""`tpbuild lock [PATTERN...] [--upgrade [PKG]] [--check]`: pin the packages of `python_env`s.

Each env the patterns reach (default `//...`; a model's env too) is resolved by uv for the env's Python
and the server's platform (`[triton] platform`), never the host's, and its lock is written beside its
BUILD.toml as `pylock.<name>.toml` (see `pylock`). Why uv: it is the one maintained resolver that
resolves for a Python and platform other than the one it runs on, and writes the standard PEP 751
format with every wheel's URL and hash; pip resolves only for itself. It is a dependency of this
command alone (`pip install 'tpbuild[lock]'`): builds read locks with the standard library.

A lock that still answers its env's spec is left alone (so running `tpbuild lock` twice changes
nothing); a stale one is resolved again keeping every pin the new spec allows (uv reads the old lock as
its preferences); `--upgrade` moves every pin to the newest allowed version, `--upgrade PKG` only PKG's.
`--check` writes nothing and exits 1 if any lock is stale, missing or unusable: the CI step that keeps
locks honest. The index is `[triton] index_url` when set (a team setting, checked in, so everyone
locks against the same index), else uv's own (`UV_DEFAULT_INDEX`, else PyPI); uv's config files are not
read, so a developer's private uv.toml cannot change what the team's lock says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tpbuild.plugin import BuildError, Command, UserError, at

from . import pylock

UV_TIMEOUT = 600


def find_uv() -> str:
    try:
        from uv import find_uv_bin
        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    path = shutil.which("uv")
    if path is None:
        raise UserError("tpbuild lock resolves with uv, which is not installed: `pip install 'tpbuild[lock]'` "
                        "(or `pip install uv`)")
    return path


class LockCommand(Command):
    name = "lock"
    help = "pin each python_env's packages for its Python and the server's platform (pylock.<name>.toml)"

    def configure(self, parser) -> None:
        parser.add_argument("patterns", nargs="*", metavar="PATTERN", help="the envs, or targets using them (default //...)")
        parser.add_argument("--upgrade", nargs="?", const="", default=None, metavar="PKG",
                            help="move every pin to the newest allowed version (only PKG's, if given)")
        parser.add_argument("--check", action="store_true",
                            help="write nothing; exit 1 when any lock is stale, missing or unusable")

    def run(self, session, args) -> int:
        from . import env

        patterns = list(args.patterns)
        if args.upgrade and args.upgrade.startswith(("//", ":")):  # `lock --upgrade //envs:a`: a pattern
            patterns.insert(0, args.upgrade)
            args.upgrade = ""
        if args.check and args.upgrade is not None:
            raise UserError("--check writes nothing, so it cannot --upgrade: give one of them")
        env.locking = True
        try:
            analysis = session.analyse(patterns or ["//..."])
        finally:
            env.locking = False
        envs = [(label, analysis.infos[label].values["lock"]) for label in sorted(analysis.infos)
                if analysis.infos[label].rule == "python_env" and analysis.infos[label].values["lock"]["lockable"]]
        if not envs:
            print("no python_env with pip packages among these targets: nothing to lock")
            return 0
        root = session.root
        index = session.section("triton").get("index_url")
        problems = 0
        for label, want in envs:
            path = root / want["file"]
            state = _state(path, want["inputs"])
            if args.check:
                if state != "up to date":
                    problems += 1
                    print(f"{state}: {label} ({want['file']}): run `tpbuild lock {label}`")
                continue
            if state == "up to date" and args.upgrade is None:
                print(f"up to date: {label} ({want['file']})")
                continue
            # The pins of a usable lock are uv's preferences; one it could not read would only stop it.
            text = _resolve(root, label, want, path if state in ("up to date", "stale") else None, index, args.upgrade)
            changed = not path.is_file() or path.read_text() != text
            if changed:
                _write(path, text)
            _, wheels = pylock.parse(text.encode())
            print(f"{'locked' if changed else 'unchanged'}: {label} ({want['file']}, "
                  f"{len({w.name for w in wheels})} packages, python {want['python']}, {want['platform']})")
        if args.check:
            print(f"{problems} of {len(envs)} locks need `tpbuild lock`" if problems else f"{len(envs)} locks up to date")
            return 1 if problems else 0
        return 0


def _state(path: Path, inputs: str) -> str:
    if not path.is_file():
        return "missing"
    data = path.read_bytes()
    try:
        recorded, _ = pylock.parse(data)
    except pylock.LockError:
        return "unusable"
    return "up to date" if recorded == inputs else "stale"


def _resolve(root: Path, label, want: dict, previous: Path | None, index: str | None, upgrade: str | None) -> str:
    """The lock uv writes for one env, with our table; exit 2 when it cannot be resolved."""
    request = pylock.Request(want["python"], want["platform"], tuple(want["pip"]),
                             (root / want["requirements"]).read_text(errors="replace") if want["requirements"] else None)
    if request.inputs() != want["inputs"]:
        raise BuildError(f"{want['requirements']} changed while `tpbuild lock` ran: run it again")
    with tempfile.TemporaryDirectory(prefix="tpbuild-lock-") as tmp:
        req_in = Path(tmp) / "requirements.in"
        lines = [f"-r {root / want['requirements']}"] if want["requirements"] else []
        req_in.write_text("".join(f"{line}\n" for line in lines + want["pip"]))
        out = Path(tmp) / "pylock.toml"  # uv insists on this name; ours may hold dots
        if previous is not None:
            shutil.copyfile(previous, out)  # uv keeps the pins it finds there wherever the spec allows
        argv = [find_uv(), "pip", "compile", str(req_in), "--python-version", want["python"],
                "--python-platform", want["platform"], "--generate-hashes", "--format", "pylock.toml",
                "--only-binary", ":all:", "--no-header", "--no-config", "--quiet", "-o", str(out)]
        if index:
            argv += ["--index-url", index]
        if upgrade == "":
            argv += ["--upgrade", "--refresh"]
        elif upgrade:
            argv += ["--upgrade-package", upgrade, "--refresh-package", upgrade]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=UV_TIMEOUT, stdin=subprocess.DEVNULL,
                               env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})
        except subprocess.TimeoutExpired:
            raise BuildError(f"{label}: uv did not resolve within {UV_TIMEOUT} s") from None
        if r.returncode != 0:
            # uv's own explanation (which package, which version, why) is the useful part.
            raise UserError(f"{label}: its packages cannot be locked for Python {want['python']} on "
                            f"{want['platform']} from wheels alone (a locked env installs no sdist), or the index "
                            "did not answer; uv says:\n" + r.stderr.strip().replace(tmp + "/", ""))
        text = pylock.with_our_table(
            "# Written by `tpbuild lock` (resolved by uv): the exact packages of this env. Do not edit;\n"
            "# commit it, and run `tpbuild lock` again after changing the env's pip or requirements.\n"
            + out.read_text(), str(label), request)
    try:
        pylock.parse(text.encode())
    except pylock.LockError as e:
        raise UserError(f"{label}: {e}", at(want["file"])) from None
    return text


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
