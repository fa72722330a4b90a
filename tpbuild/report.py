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


def to_json(result: BuildResult | None, error: str | None = None) -> dict:
    if result is None:
        return {"success": False, "error": error, "targets": {}, "actions": []}
    decoded = result.analysis.decoded_packages()  # by the build, before anything here reads an action
    actions = []
    for label in result.analysis.order:
        for a in result.analysis.declared_of(label):
            o = result.outcomes[a.id]
            item = {"target": str(label), "mnemonic": a.mnemonic, "key": o.key, "status": o.status.value,
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
        "targets": {str(lbl): {"status": t.status.value, "outputs": t.outputs} for lbl, t in result.targets.items()},
        "actions": actions,
        "analysis": {"targets": len(result.analysis.order), "reanalysed": result.analysis.reanalysed,
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
