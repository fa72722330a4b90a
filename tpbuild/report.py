"""The JSON build report (`--report FILE`), written on success and on failure alike.

Its shape is a contract with CI scripts, so it is built here in one place from the build's values:
target status `built | failed | skipped`, action status `executed | cached | remote | failed | skipped`,
paths relative to the workspace root. An executed action names where it ran: `"executor": "local"` or
`"remote"`, and `"worker"` when the remote executor says which of its workers it was. An action that
ran, came from the remote cache, or was found under a key that moved since the last build says why
(`"why"`, see `explain`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .build import BuildResult
from .scheduler import Status


def to_json(result: BuildResult | None, error: str | None = None, rows: tuple | None = None) -> dict:
    """`rows`: for a delta build, which holds part of the graph, its whole as (the actions in build
    order as (target, mnemonic, outcome), the targets' results, the count of targets), see
    `incremental.report_rows`."""
    if result is None:
        return {"success": False, "error": error, "targets": {}, "actions": []}
    decoded = result.analysis.decoded_packages()  # by the build, before anything here reads an action
    if rows is None:
        a = result.analysis
        rows = ([(str(label), d.mnemonic, result.outcomes[d.id]) for label in a.order for d in a.declared_of(label)],
                {str(lbl): {"status": t.status.value, "outputs": t.outputs} for lbl, t in result.targets.items()},
                len(a.order))
    actions = []
    for target, mnemonic, o in rows[0]:
        item = {"target": target, "mnemonic": mnemonic, "key": o.key, "status": o.status.value,
                "seconds": round(o.seconds, 4)}
        if o.executed_by is not None:
            item["executor"] = o.executed_by.where.value
            if o.executed_by.worker:
                item["worker"] = o.executed_by.worker
        if o.why:
            item["why"] = o.why
        if o.error is not None and o.status is Status.FAILED:
            item["error"] = o.error.render()
        actions.append(item)
    return {
        "success": result.success if error is None else False,
        **({"error": error} if error else {}),
        "targets": rows[1],
        "actions": actions,
        "analysis": {"targets": rows[2], "reanalysed": result.analysis.reanalysed,
                     "reanalysed_packages": len(result.analysis.reanalysed_packages),
                     "decoded_packages": decoded},
        "execution": result.execution,
        "files": result.files,
        "seconds": round(result.seconds, 3),
        "warnings": result.warnings,
        **({"cache": result.cache} if result.cache else {}),
    }


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
