"""The `[triton]` table of tpbuild.toml: which server release the models are built for.

    [triton]
    version = "24.05"   # the server release (rYY.MM); decides its default Python and the stub branch
    python = "3.11"     # optional: the Python of a custom server image
    server = "..."      # optional: a tritonserver binary for `tpbuild test`
    platform = "x86_64" # the server's CPU: "x86_64" (default) or "aarch64"; `tpbuild lock` resolves for it
    require_lock = false  # true: a python_env without a lock file is exit 2 (see `lock`)
    index_url = "..."   # optional: the package index `tpbuild lock` resolves against (default PyPI)
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from tpbuild.plugin import AnalysisContext

SECTION = "triton"


def _matching(regex: str, problem: str) -> AfterValidator:
    """A string setting that must match `regex`; `problem` says what it is not and how to write it."""
    def check(v: str | None) -> str | None:
        if v is not None and not re.fullmatch(regex, v):
            raise ValueError(f"{v!r} {problem}")
        return v
    return AfterValidator(check)


# A Python minor version as the server, envs and stubs are matched by ("3.10").
PythonVersion = Annotated[str, _matching(r"3\.\d{1,2}", 'is not a Python minor version: write it like "3.10"')]


class TritonSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Annotated[str | None, _matching(r"\d{2}\.\d{2}", 'is not a Triton release: write it like "24.05"')] = None
    python: PythonVersion | None = None
    server: str | None = None
    platform: Literal["x86_64", "aarch64"] = "x86_64"
    require_lock: bool = False
    index_url: Annotated[str | None, _matching(r"(https?|file)://\S+", 'is not an index URL: write it like '
                                               '"https://pypi.example.com/simple"')] = None

    def server_python(self) -> str | None:
        """The Python of the server image: `python` if set, else the release's default."""
        if self.python:
            return self.python
        if self.version is None:
            return None
        return default_python(self.version)

    def wheel_platform(self) -> str:
        """The platform locks resolve for: the server's CPU on a manylinux_2_28 glibc (Triton's images
        are Ubuntu 22.04 and later, glibc 2.35+), which also installs on any build host from glibc 2.28."""
        return f"{self.platform}-manylinux_2_28"


def default_python(release: str) -> str:
    """Checked against the NGC images (see shared notes): 20.12-23.04 -> 3.8, 23.05-24.10 -> 3.10, later 3.12."""
    yy, mm = (int(x) for x in release.split("."))
    n = yy * 100 + mm
    if n <= 2304:
        return "3.8"
    if n <= 2410:
        return "3.10"
    return "3.12"


def settings(ctx: AnalysisContext) -> TritonSettings:
    try:
        return TritonSettings.model_validate(ctx.section(SECTION))
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        msg = (f"unknown setting {field!r}: [triton] takes version, python, server, platform, require_lock, index_url"
               if err["type"] == "extra_forbidden" else f"{field}: {err['msg'].removeprefix('Value error, ')}")
        raise ctx.section_error((SECTION, *err["loc"]), msg) from None
