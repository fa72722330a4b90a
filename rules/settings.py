"""The `[triton]` table of tpbuild.toml: which server release the models are built for.

    [triton]
    version = "24.05"   # the server release (rYY.MM); decides its default Python, config rules, stub branch
    python = "3.11"     # optional: the Python of a custom server image (overrides the release's)
    gpus = 0            # optional: how many GPUs the server has; 0 refuses KIND_GPU instance groups
    server = "..."      # optional: a tritonserver binary for `tpbuild test`
    platform = "x86_64" # the server's CPU: "x86_64" (default) or "aarch64"; `tpbuild lock` resolves for it
    require_lock = false  # true: a python_env without a lock file is exit 2 (see `lock`)
    index_url = "..."   # optional: the package index `tpbuild lock` resolves against (default PyPI)

A release must be one Triton shipped: a typo such as "24.99" would otherwise pick a default Python
and a set of config rules for a server that does not exist.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from tpbuild.plugin import AnalysisContext, describe_validation_error

SECTION = "triton"
# Monthly NGC releases, 20.12 (the first with the Python backend's EXECUTION_ENV_PATH) through the newest
# branch of triton-inference-server/core tpbuild's rules were checked against.
FIRST, LAST = (20, 12), (26, 6)
# (first release, Python of the server image), newest last; checked against the NGC images (shared notes).
_PYTHON_SINCE = ((2012, "3.8"), (2305, "3.10"), (2411, "3.12"))
ENV_DIR_SINCE = 2307  # python_backend reads EXECUTION_ENV_PATH as a directory (not only a tarball) from r23.07


def releases() -> list[str]:
    out = []
    yy, mm = FIRST
    while (yy, mm) <= LAST:
        out.append(f"{yy:02d}.{mm:02d}")
        yy, mm = (yy + 1, 1) if mm == 12 else (yy, mm + 1)
    return out


def release_number(release: str) -> int:
    """"24.10" -> 2410, for comparing releases."""
    yy, mm = release.split(".")
    return int(yy) * 100 + int(mm)


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
    gpus: int | None = Field(default=None, ge=0)

    @field_validator("version")
    @classmethod
    def _version(cls, v):
        if v is None:
            return v
        if not re.fullmatch(r"\d{2}\.\d{2}", v):
            raise ValueError(f"{v!r} is not a Triton release: write it like \"24.05\"")
        known = releases()
        if v not in known:
            months = lambda r: int(r[:2]) * 12 + min(int(r[3:]), 12)  # noqa: E731 - "24.99" is nearest 24.12
            nearest = sorted(sorted(known, key=lambda r: abs(months(r) - months(v)))[:3])
            raise ValueError(f"{v!r} is not a Triton release tpbuild knows ({known[0]} to {known[-1]}); "
                             f"the nearest are {', '.join(nearest)}. For a custom server image, name the "
                             "release it is built from and set python")
        return v

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


    def exec_properties(self) -> dict[str, str]:
        """The REAPI platform env and stub builds default to: the server's own image, so a cluster can
        build them where they will run (same glibc, same Python). A target's `exec_properties` add to
        it or override it (`container-image = ""` keeps the key with no image, for pools that ignore it)."""
        if self.version is None:
            return {}
        return {"container-image": f"docker://nvcr.io/nvidia/tritonserver:{self.version}-py3"}


def default_python(release: str) -> str:
    n = release_number(release)
    python = _PYTHON_SINCE[0][1]
    for since, py in _PYTHON_SINCE:
        if n >= since:
            python = py
    return python


def settings(ctx: AnalysisContext) -> TritonSettings:
    try:
        return TritonSettings.model_validate(ctx.section(SECTION))
    except ValidationError as e:
        err = e.errors()[0]
        if err["type"] == "extra_forbidden":
            msg = (f"unknown setting {'.'.join(map(str, err['loc']))!r}: [triton] takes version, python, gpus, "
                   "server, platform, require_lock, index_url")
        else:
            msg = describe_validation_error(err, TritonSettings)
        raise ctx.section_error((SECTION, *err["loc"]), msg) from None
