"""Test cases (`[[triton_model.<name>.test]]`) checked against the model's config at analysis.

A case naming a tensor the config lacks, holding a string for a TYPE_FP32 input or a shape the
config refuses would otherwise be found only by `tpbuild test`, after a server has started, and
without a line to fix. Tensors are checked as the client sends them: with the batch dimension first
when max_batch_size > 0 (1 to max_batch_size), then the config's dims (-1 takes any size).
"""

from __future__ import annotations

import io
from typing import Any, Callable

# Config data type -> what a TOML value must be, and numpy kinds an .npz array may have.
_KINDS = {
    "TYPE_BOOL": ("true or false", "b"), "TYPE_STRING": ("strings", "OSU"),
    **{f"TYPE_{t}": ("integers", "iu") for t in ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                                                 "INT64")},
    **{f"TYPE_{t}": ("numbers", "fiu") for t in ("FP16", "FP32", "FP64", "BF16")},
}


def _fits(value: Any, data_type: str) -> bool:
    if data_type == "TYPE_BOOL":
        return isinstance(value, bool)
    if data_type == "TYPE_STRING":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if data_type.startswith("TYPE_FP") or data_type == "TYPE_BF16":
        return isinstance(value, (int, float))
    return isinstance(value, int) and (not data_type.startswith("TYPE_UINT") or value >= 0)


def _shape(value: Any, leaves: list) -> list[int] | None:
    """The shape of nested lists, None when ragged; scalars are collected in `leaves`."""
    if not isinstance(value, list):
        leaves.append(value)
        return []
    shapes = [_shape(v, leaves) for v in value]
    if any(s is None for s in shapes) or any(s != shapes[0] for s in shapes[1:]):
        return None
    return [len(value), *(shapes[0] if shapes else [])]


def _shape_problem(shape: list[int], dims: list[int], max_batch_size: int) -> str | None:
    want = ([f"batch 1 to {max_batch_size}"] if max_batch_size else []) + [str(d) for d in dims]
    rest = shape[1:] if max_batch_size else shape
    if max_batch_size and (not shape or not 1 <= shape[0] <= max_batch_size):
        return f"shape {shape}: expected [{', '.join(want)}] (the first dimension is the batch)"
    if len(rest) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, rest)):
        return f"shape {shape}: expected [{', '.join(want)}]"
    return None


def check(cases, cfg: dict, read_npz: Callable[[Any], bytes], error: Callable[[tuple, str], Exception]) -> list:
    """Errors (made by `error(where, message)`, `where` a key path below the target) of every case.
    `cfg` is the config as config.pbtxt's JSON mapping; `read_npz(source)` gives an .npz's bytes."""
    inputs = {t["name"]: t for t in cfg.get("input", [])}
    outputs = {t["name"]: t for t in cfg.get("output", [])}
    if not inputs and not outputs:
        return []  # the model's auto_complete_config declares its tensors: nothing to hold cases against
    mbs = int(cfg.get("max_batch_size", 0))
    errors = []
    for i, case in enumerate(cases):
        where = ("test", i)
        if case.npz is not None:
            errors.extend(_check_npz(case, read_npz(case.npz), inputs, outputs, mbs, where, error))
            continue
        for key, specs, values in (("inputs", inputs, case.inputs), ("expected", outputs, case.expected)):
            for name, value in values.items():
                at = (*where, key, name)
                spec = specs.get(name)
                if spec is None:
                    kind = "input" if key == "inputs" else "output"
                    errors.append(error(at, f"test {key}: the config has no {kind} {name!r} (it has "
                                            f"{', '.join(sorted(specs)) or 'none'})"))
                    continue
                errors.extend(_check_value(name, value, spec, mbs, at, error))
        errors.extend(_missing(case.inputs, inputs, where, error))
    return errors


def _missing(given, inputs: dict, where: tuple, error) -> list:
    missing = [n for n, t in inputs.items() if not t.get("optional") and n not in given]
    return [error((*where, "inputs"), f"test inputs: required input {', '.join(map(repr, missing))} is missing")] \
        if missing else []


def _check_value(name: str, value: Any, spec: dict, mbs: int, at: tuple, error) -> list:
    dtype = spec.get("data_type", "TYPE_FP32")
    leaves: list = []
    shape = _shape(value, leaves)
    if shape is None:
        return [error(at, f"tensor {name}: the nested arrays are ragged; every row must have the same length")]
    out = []
    bad = next((v for v in leaves if not _fits(v, dtype)), None)
    if bad is not None:
        out.append(error(at, f"tensor {name} is {dtype}: its values must be {_KINDS.get(dtype, ('values',))[0]}, "
                             f"got {bad!r}"))
    problem = _shape_problem(shape, [int(d) for d in spec.get("dims", [])], mbs)
    if problem:
        out.append(error(at, f"tensor {name}: {problem}"))
    return out


def _check_npz(case, data: bytes, inputs: dict, outputs: dict, mbs: int, where: tuple, error) -> list:
    import numpy as np

    at = (*where, "npz")
    try:
        arrays = np.load(io.BytesIO(data), allow_pickle=True)
        names = list(arrays.files)
    except Exception as e:  # numpy raises many kinds for a file that is not an .npz
        return [error(at, f"{case.npz.rel} is not a NumPy .npz archive: {e}")]
    out, given = [], set()
    for key in names:
        kind, _, name = key.partition(".")
        specs = inputs if kind == "input" else outputs if kind == "expected" else None
        if specs is None or not name:
            out.append(error(at, f"{case.npz.rel}: array {key!r}: name arrays input.<NAME> or expected.<NAME>"))
            continue
        spec = specs.get(name)
        if spec is None:
            out.append(error(at, f"{case.npz.rel}: array {key!r}: the config has no "
                                 f"{'input' if kind == 'input' else 'output'} {name!r}"))
            continue
        if kind == "input":
            given.add(name)
        a = arrays[key]
        dtype = spec.get("data_type", "")
        if dtype in _KINDS and a.dtype.kind not in _KINDS[dtype][1]:
            out.append(error(at, f"{case.npz.rel}: array {key!r} has dtype {a.dtype}, but {name} is {dtype}"))
        problem = _shape_problem(list(a.shape), [int(d) for d in spec.get("dims", [])], mbs)
        if problem:
            out.append(error(at, f"{case.npz.rel}: array {key!r}: {problem}"))
    return out + _missing(given, inputs, where, error)
