"""Checks a stub against the env it will run with, in the model that puts them together.

    python -m tpbuild_triton.stubcheck --stub STUB --env ENV --out OUTPATH

Why here and not in `python_stub`: the stub does not know which envs it will meet, and the failure
depends on both. The server activates the env before starting the stub, with the env's `lib/` first
on LD_LIBRARY_PATH; an env that ships an older `lib/libstdc++.so.6` (conda's, typically) then shadows
the system's, and the stub dies at model load with "GLIBCXX_3.4.30 not found". Reading the stub's
required versions and the env library's defined ones finds that at build time. The checked stub is
this action's output, so a model directory cannot exist without the check having passed; the output
has the stub's bytes and so shares its blob in the cache.

ENV is an env directory or a .tar.gz/.tar archive; an env without `lib/libstdc++.so.6` passes (the
system's library is the one the stub was linked against).
"""

from __future__ import annotations

import argparse
import io
import os
import posixpath
import shutil
import sys
import tarfile
from pathlib import Path
from typing import BinaryIO

from tpbuild.plugin import BuildError, TpbuildError

from . import elf

LIBSTDCXX = "lib/libstdc++.so.6"
_MAX_LINKS = 16


def _from_dir(env: Path) -> BinaryIO | None:
    path = env / LIBSTDCXX
    if not path.exists():  # also a symlink pointing nowhere: the loader would skip it too
        return None
    return open(path, "rb")


def _from_tar(env: Path) -> BinaryIO | None:
    """The library's bytes, following symlinks inside the archive (lib/libstdc++.so.6 -> .so.6.0.32)."""
    with tarfile.open(env) as tar:
        members = {posixpath.normpath(m.name.removeprefix("./")): m for m in tar.getmembers()}
        name = LIBSTDCXX
        for _ in range(_MAX_LINKS):
            m = members.get(name)
            if m is None:
                return None
            if m.issym():
                name = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
                continue
            if m.islnk():
                name = posixpath.normpath(m.linkname.removeprefix("./"))
                continue
            f = tar.extractfile(m)
            return io.BytesIO(f.read()) if f else None
    raise BuildError(f"{env}: {LIBSTDCXX} is a loop of symlinks")


def env_libstdcxx(env: Path) -> BinaryIO | None:
    return _from_dir(env) if env.is_dir() else _from_tar(env)


def check(stub: Path, env: Path, out: Path) -> None:
    lib = env_libstdcxx(env)
    if lib is not None:
        with lib:
            elf.check_glibcxx(stub, lib, f"{env.name}/{LIBSTDCXX}")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(stub, out)
    os.chmod(out, 0o755)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tpbuild_triton.stubcheck",
                                 description="Check a stub against a model's env.")
    ap.add_argument("--stub", required=True, type=Path)
    ap.add_argument("--env", required=True, type=Path, help="an env directory or .tar.gz/.tar")
    ap.add_argument("--out", required=True, type=Path, help="where the checked stub goes")
    args = ap.parse_args(argv)
    try:
        check(args.stub, args.env, args.out)
    except TpbuildError as e:
        print(e.render(), file=sys.stderr)
        return e.exit_code
    except (OSError, tarfile.TarError) as e:
        print(f"cannot read the env {args.env}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
