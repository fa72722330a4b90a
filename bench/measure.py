"""Running one build command and what it cost: wall time, and peak RSS from the kernel's own accounting.

`os.wait4` returns the rusage of the waited child including every descendant it waited for, and its
`ru_maxrss` is the largest resident set among them: for make or ninja that is the largest of the
processes they spawned, for doit the largest of its workers, for tpbuild its one process. No polling,
so a short-lived peak is never missed.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class BenchError(Exception):
    """A build command failed or its output is wrong: the numbers would mean nothing."""


@dataclass
class Sample:
    wall_s: float
    peak_rss_mb: float
    # tpbuild only, parsed from what it prints anyway (no --report, which would add work to the run):
    executed: int | None = None
    build_s: float | None = None          # build.run: scheduling and materializing, after analysis
    action_s: float | None = None         # sum of the executed actions' own times
    summary: str = ""

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()
                if v is not None and v != ""}


@dataclass
class Command:
    """A build command of one tool in one workspace."""

    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None

    def run(self) -> Sample:
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        env.update(self.env)
        log_dir = self.log_dir or self.cwd.parent
        log_dir.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)
        out_path, err_path = log_dir / f"{slug}.stdout", log_dir / f"{slug}.stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            t0 = time.perf_counter()
            p = subprocess.Popen(self.argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            _, status, usage = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen so it does not wait again
        stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
        if p.returncode != 0:
            tail = "\n".join((stdout + stderr).splitlines()[-15:])
            raise BenchError(f"{self.name} exited with code {p.returncode} in {self.cwd}:\n{tail}\n"
                             f"(full output: {out_path}, {err_path})")
        sample = Sample(wall, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux
        if self.name.startswith("tpbuild"):
            _parse_tpbuild(sample, stdout, stderr)
        return sample


_SUMMARY_RE = re.compile(r"^Built \d+/\d+ targets, \d+ actions: (\d+) executed.* in ([0-9.]+)s$", re.M)
_ACTION_RE = re.compile(r"^\[\d+/\d+\] .* \(([0-9.]+)s\)$", re.M)


def _parse_tpbuild(sample: Sample, stdout: str, stderr: str) -> None:
    m = _SUMMARY_RE.search(stdout)
    if m is None:
        raise BenchError(f"tpbuild printed no 'Built ...' summary; its output format changed:\n{stdout[-500:]}")
    sample.summary = m.group(0)
    sample.executed = int(m.group(1))
    sample.build_s = float(m.group(2))
    sample.action_s = sum(float(s) for s in _ACTION_RE.findall(stderr))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
