"""The `[triton]` table of tpbuild.toml: which server release the models are built for.

    [triton]
    version = "24.05"   # the server release (rYY.MM); decides its default Python and the stub branch
    python = "3.11"     # optional: the Python of a custom server image
    server = "..."      # optional: a tritonserver binary for `tpbuild test`
"""

from __future__ import annotations

import re

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator

from tpbuild.plugin import AnalysisContext

SECTION = "triton"


def _python_version(v: str) -> str:
    if not re.fullmatch(r"3\.\d{1,2}", v):
        raise ValueError(f"{v!r} is not a Python minor version: write it like \"3.10\"")
    return v


# A Python minor version as the server, envs and stubs are matched by ("3.10").
PythonVersion = Annotated[str, AfterValidator(_python_version)]


class TritonSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str | None = None
    python: PythonVersion | None = None
    server: str | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, v):
        if v is not None and not re.fullmatch(r"\d{2}\.\d{2}", v):
            raise ValueError(f"{v!r} is not a Triton release: write it like \"24.05\"")
        return v

    def server_python(self) -> str | None:
        """The Python of the server image: `python` if set, else the release's default."""
        if self.python:
            return self.python
        if self.version is None:
            return None
        return default_python(self.version)


    def exec_properties(self) -> dict[str, str]:
        """The REAPI platform env and stub builds default to: the server's own image, so a cluster can
        build them where they will run (same glibc, same Python). A target's `exec_properties` add to
        it or override it (`container-image = ""` keeps the key with no image, for pools that ignore it)."""
        if self.version is None:
            return {}
        return {"container-image": f"docker://nvcr.io/nvidia/tritonserver:{self.version}-py3"}


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
        msg = (f"unknown setting {field!r}: [triton] takes version, python, server"
               if err["type"] == "extra_forbidden" else f"{field}: {err['msg'].removeprefix('Value error, ')}")
        raise ctx.section_error((SECTION, *err["loc"]), msg) from None
