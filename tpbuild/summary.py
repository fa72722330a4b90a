"""The Markdown summary (`--summary FILE`) a CI job appends to its page (`$GITHUB_STEP_SUMMARY`).

Appended, never rewritten: a job runs several tpbuild steps into one summary file. Targets are counted
by where their results came from — built (something executed), local cache, remote cache (nothing
executed, something fetched) — because that is what tells a reviewer the shared cache did its job.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .scheduler import Status

SLOWEST = 5


def target_origin(statuses: set[Status]) -> str:
    if statuses & {Status.FAILED, Status.SKIPPED}:
        return "failed"
    if Status.EXECUTED in statuses:
        return "built"
    return "remote cache" if Status.REMOTE in statuses else "local cache"


def build_markdown(result, title: str) -> str:
    counts = {"built": 0, "local cache": 0, "remote cache": 0, "failed": 0}
    for label in result.analysis.order:
        counts[target_origin({result.outcomes[a.id].status for a in result.analysis.declared_of(label)})] += 1
    executed = sorted((o for o in result.outcomes.values() if o.status in (Status.EXECUTED, Status.FAILED)),
                      key=lambda o: -o.seconds)[:SLOWEST]
    lines = [f"### {title}: {'succeeded' if result.success else 'FAILED'}", "",
             "| targets | built | local cache | remote cache | failed | time |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |",
             f"| {len(result.analysis.order)} | {counts['built']} | {counts['local cache']} | "
             f"{counts['remote cache']} | {counts['failed']} | {result.seconds:.1f} s |", ""]
    if executed:
        lines += ["| slowest actions | status | seconds |", "| --- | --- | ---: |"]
        lines += [f"| `{o.action.owner}` {o.action.mnemonic} | {o.status.value} | {o.seconds:.2f} |" for o in executed]
        lines.append("")
    return "\n".join(lines) + "\n"


def tests_markdown(rows: list[tuple[str, str, bool, str]]) -> str:
    """rows: (target, case, passed, message)."""
    passed = sum(1 for r in rows if r[2])
    lines = [f"**Tests: {passed} passed, {len(rows) - passed} failed**", "",
             "| target | case | result |", "| --- | --- | --- |"]
    for target, case, ok, message in rows:
        text = "PASS" if ok else f"FAIL: {_cell(message)}"
        lines.append(f"| `{target}` | {_cell(case)} | {text} |")
    return "\n".join(lines) + "\n\n"


def _cell(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= 200 else text[:197] + "..."


def append(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise UserError(f"--summary {path}: {e.strerror}: give a file that can be written") from None
