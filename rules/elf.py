"""What a stub binary needs from the libraries it is loaded with, read from its ELF dynamic sections.

The seed checks a stub with `ldd`, which resolves libraries on the machine running it and prints a
format made for people. The dynamic section (DT_NEEDED) and the symbol versions (.gnu.version_r of
the binary, .gnu.version_d of a library) say the same thing exactly, on any machine, without running
the loader; pyelftools reads them. The two checks here are the failures seen at model load in the
field: a stub embedding another Python than the env's, and an env whose own libstdc++ (first on
LD_LIBRARY_PATH once the env is activated) is older than the one the stub was linked against.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO

from tpbuild.plugin import BuildError, UserError

# GLIBCXX version -> the first GCC (and conda-forge libstdcxx-ng) release defining it.
_GCC_OF_GLIBCXX = {21: "5", 22: "6", 23: "7", 24: "7.2", 25: "8", 26: "9", 27: "9.2", 28: "9.3", 29: "11",
                   30: "12", 31: "13", 32: "13.2", 33: "14"}


def require_pyelftools():
    try:
        from elftools.elf.elffile import ELFFile
    except ImportError:
        raise UserError("checking stubs needs pyelftools: pip install 'tpbuild[stub]'") from None
    return ELFFile


def _open(f: BinaryIO, what: str):
    from elftools.common.exceptions import ELFError

    try:
        return require_pyelftools()(f)
    except ELFError as e:
        raise BuildError(f"{what} is not an ELF binary ({e})") from None


def needed(path: Path) -> list[str]:
    """The DT_NEEDED entries: the libraries the loader must find for this binary."""
    with open(path, "rb") as f:
        dyn = _open(f, str(path)).get_section_by_name(".dynamic")
        if dyn is None:
            return []
        return [t.needed for t in dyn.iter_tags() if t.entry.d_tag == "DT_NEEDED"]


def required_versions(path: Path, library: str) -> set[str]:
    """The symbol versions `path` requires from `library` (.gnu.version_r), e.g. {"GLIBCXX_3.4.30"}."""
    from elftools.elf.gnuversions import GNUVerNeedSection

    with open(path, "rb") as f:
        elf = _open(f, str(path))
        out: set[str] = set()
        for sec in elf.iter_sections():
            if isinstance(sec, GNUVerNeedSection):
                for verneed, auxes in sec.iter_versions():
                    if verneed.name == library:
                        out.update(aux.name for aux in auxes)
        return out


def defined_versions(f: BinaryIO, what: str) -> set[str]:
    """The symbol versions a shared library defines (.gnu.version_d)."""
    from elftools.elf.gnuversions import GNUVerDefSection

    elf = _open(f, what)
    out: set[str] = set()
    for sec in elf.iter_sections():
        if isinstance(sec, GNUVerDefSection):
            for _verdef, auxes in sec.iter_versions():
                out.update(aux.name for aux in auxes)
    return out


def check_libpython(path: Path, python: str) -> str:
    """The stub must embed `libpython<python>`; returns the library it links. Exit 1 otherwise."""
    libs = needed(path)
    pattern = re.compile(rf"libpython{re.escape(python)}[a-z]*\.so(\.|$)")
    found = [lib for lib in libs if pattern.match(lib)]
    if found:
        return found[0]
    other = [lib for lib in libs if lib.startswith("libpython")]
    if other:
        raise BuildError(f"the stub links {', '.join(other)}, not libpython{python}: it was built against another "
                         f"Python. Build it with a Python {python} interpreter "
                         f"(interpreter = \"/usr/bin/python{python}\"), or set python to the version it embeds")
    raise BuildError(f"the stub links no libpython{python}.so (it needs: {', '.join(libs) or 'nothing'}): the "
                     f"interpreter it was built with has no shared libpython. Use one that has "
                     f"(Debian: apt-get install python{python}-dev, interpreter = \"/usr/bin/python{python}\")")


def _glibcxx_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.removeprefix("GLIBCXX_").split(".") if p.isdigit())


def check_glibcxx(stub: Path, libstdcxx: BinaryIO, where: str) -> None:
    """Every GLIBCXX_* version the stub requires must be defined by the env's libstdc++ (`where` names
    it), which the server puts first on LD_LIBRARY_PATH. Exit 1 with the fix otherwise."""
    wanted = {v for v in required_versions(stub, "libstdc++.so.6") if v.startswith("GLIBCXX_")}
    have = {v for v in defined_versions(libstdcxx, where) if v.startswith("GLIBCXX_")}
    missing = sorted(wanted - have, key=_glibcxx_key)
    if not missing:
        return
    newest = max(have, key=_glibcxx_key, default="none")
    need = missing[-1]
    minor = _glibcxx_key(need)[-1] if _glibcxx_key(need)[:2] == (3, 4) else None
    gcc = _GCC_OF_GLIBCXX.get(minor) if minor is not None else None
    fix = (f"conda-forge libstdcxx-ng>={gcc} (conda = [\"libstdcxx-ng>={gcc}\"])" if gcc
           else f"a conda-forge libstdcxx-ng that defines {need}")
    raise BuildError(f"the env's {where} defines GLIBCXX only up to {newest}, but the stub needs "
                     f"{', '.join(missing)}: the server puts the env's lib/ first on LD_LIBRARY_PATH, so the "
                     f"stub would fail at model load with \"version `{need}' not found\". Put {fix} in the env, or "
                     "leave lib/libstdc++.so.6 out of it")
