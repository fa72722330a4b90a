"""`BaseTritonPythonModel`: a Triton Python-backend model written as `infer(inputs) -> outputs` on numpy arrays.

    from tpbuild_runtime import BaseTritonPythonModel

    class TritonPythonModel(BaseTritonPythonModel):
        batched = True                  # optional, see below

        def setup(self):                # optional: runs once at load, after the config is read
            self.scale = 2.0

        def infer(self, inputs):
            return {"Y": inputs["X"] * self.scale}

tpbuild copies this file next to every model.py that imports it, so the server needs nothing installed.
That is why it is one small module depending only on numpy and the backend's `triton_python_backend_utils`
(which exists only inside the server), and why it keeps to the syntax of the oldest Python a Triton image
ships (3.8).

For every request of an `execute` call:
- the inputs become a dict name -> array (TYPE_STRING as object arrays of bytes; an optional input the
  client left out is absent from the dict);
- the outputs of `infer` are checked against the config before anything is sent: every declared output
  present and no other name, a dtype numpy casts *safely* to the declared one (float64 for a TYPE_FP32
  output is refused, not silently rounded; str and bytes arrays are fine for TYPE_STRING), and the shape
  of dims (-1 = any size), after the request's batch size when max_batch_size > 0;
- a request that fails (infer raised, or its outputs do not match the config) gets its own error response
  saying why, and the other requests are still answered. The server log gets the error too, with the
  traceback.

`batched = True` (with max_batch_size > 0) is the point of dynamic batching: the requests the batcher put
into one `execute` call are concatenated along the batch dimension, `infer` runs once and its outputs are
split back per request. `infer` must then treat rows independently. When the requests cannot be joined
(different inputs present, different non-batch shapes) or the joint call fails, each request runs on its
own, so only a failing request gets an error; `infer` then sees the other requests twice.

Decoupled models (any number of responses per request) need the response-sender API; they are refused at load.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass

import numpy as np

__all__ = ["BaseTritonPythonModel", "TensorSpec"]

_NUMPY = {
    "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16, "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8, "TYPE_INT16": np.int16, "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64, "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the model config, as `infer` sees it."""

    name: str
    data_type: str  # the config's name, e.g. "TYPE_FP32"
    dtype: np.dtype  # object for TYPE_STRING: arrays of bytes
    dims: tuple[int, ...]  # without the batch dimension, `reshape` applied; -1 = any size
    optional: bool = False

    @classmethod
    def from_config(cls, entry: dict) -> "TensorSpec":
        data_type = entry.get("data_type", "TYPE_INVALID")
        if data_type not in _NUMPY:
            raise ValueError(f"{entry['name']}: BaseTritonPythonModel has no numpy type for {data_type}; "
                             f"use one of {', '.join(_NUMPY)} or write execute() yourself")
        # The model sees `reshape.shape` (Triton converts from and to `dims` at the edges).
        dims = entry["reshape"].get("shape", []) if "reshape" in entry else entry.get("dims", [])
        return cls(entry["name"], data_type, np.dtype(_NUMPY[data_type]), tuple(int(d) for d in dims),
                   bool(entry.get("optional", False)))


class _Mismatch(Exception):
    """Outputs that do not match the config: the model's mistake, reported without a traceback."""


class BaseTritonPythonModel:
    """Subclass it as `TritonPythonModel`, write `infer` (and `setup` if the model loads anything).

    After `initialize`: `model_config` (the parsed config dict), `max_batch_size`, `input_specs` and
    `output_specs` (name -> TensorSpec, in config order) and `logger` (the backend's `pb_utils.Logger`:
    `log_info`, `log_warn`, `log_error`, `log_verbose`, all writing to the server log).
    """

    batched = False

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils  # only inside the server, or a test's stand-in

        self._pb = pb_utils
        self.logger = pb_utils.Logger
        self.model_config = json.loads(args["model_config"])
        if self.model_config.get("model_transaction_policy", {}).get("decoupled"):
            raise ValueError(f"model {self.model_config.get('name')!r} is decoupled, which BaseTritonPythonModel "
                             "does not support: write execute() with the response sender instead")
        self.max_batch_size = int(self.model_config.get("max_batch_size", 0))
        self.input_specs = {e["name"]: TensorSpec.from_config(e) for e in self.model_config.get("input", [])}
        self.output_specs = {e["name"]: TensorSpec.from_config(e) for e in self.model_config.get("output", [])}
        self.setup()

    def setup(self) -> None:
        """Load weights, open files: runs once at load, after the config is read."""

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{type(self).__name__} must define infer(self, inputs) -> dict of outputs")

    def execute(self, requests: list) -> list:
        if self.batched and self.max_batch_size > 0 and len(requests) > 1:
            responses = self._execute_joined(requests)
            if responses is not None:
                return responses
        return [self._execute_one(r) for r in requests]

    # -- one request ------------------------------------------------------------------------------------

    def _execute_one(self, request):
        try:
            inputs = _inputs(request)
            outputs = self.infer(inputs)
        except Exception as e:
            self.logger.log_error(f"infer failed:\n{traceback.format_exc()}")
            return self._error(f"infer raised {type(e).__name__}: {e}")
        try:
            return self._response(self._checked(outputs, self._batch_size(inputs)))
        except _Mismatch as e:
            self.logger.log_error(str(e))
            return self._error(str(e))

    def _batch_size(self, inputs: dict) -> int:
        """The request's batch size, -1 when the model has no batch dimension or it is unknown (no inputs)."""
        if self.max_batch_size <= 0 or not inputs:
            return -1
        return next(iter(inputs.values())).shape[0]

    # -- the requests of one execute call, joined ----------------------------------------------------------

    def _execute_joined(self, requests: list):
        """One infer call over all requests, or None when that is not possible and each must run alone."""
        try:
            feeds = [_inputs(r) for r in requests]
        except Exception:
            return None  # the request at fault gets its error on its own
        first = feeds[0]
        if not first or any(f.keys() != first.keys() for f in feeds):
            return None
        for name, arr in first.items():
            if any(f[name].shape[1:] != arr.shape[1:] or f[name].dtype != arr.dtype for f in feeds):
                return None
        sizes = [self._batch_size(f) for f in feeds]
        joined = {name: np.concatenate([f[name] for f in feeds]) for name in first}
        try:
            outputs = self._checked(self.infer(joined), sum(sizes))
        except Exception as e:
            self.logger.log_warn(f"infer over {len(requests)} joined requests failed ({type(e).__name__}: {e}); "
                                 "running them one by one")
            return None
        bounds = np.cumsum([0] + sizes)
        return [self._response({n: a[lo:hi] for n, a in outputs.items()}) for lo, hi in zip(bounds, bounds[1:])]

    # -- outputs ---------------------------------------------------------------------------------------------

    def _checked(self, outputs, batch_size: int) -> dict:
        """The outputs cast to the config's dtypes, or _Mismatch saying what is wrong and what to return."""
        if not isinstance(outputs, dict):
            raise _Mismatch(f"infer returned {type(outputs).__name__}; return a dict of output name -> array")
        declared = ", ".join(self.output_specs) or "none"
        for name in outputs:
            if name not in self.output_specs:
                raise _Mismatch(f"infer returned output {name!r}, which the config does not declare "
                                f"(its outputs: {declared})")
        checked = {}
        for name, spec in self.output_specs.items():
            if name not in outputs:
                raise _Mismatch(f"infer returned no output {name!r}; the config declares {declared}")
            arr = np.asarray(outputs[name])
            if spec.data_type == "TYPE_STRING":
                if arr.dtype.kind not in "OSU":
                    raise _Mismatch(f"output {name!r} has dtype {arr.dtype}, but it is TYPE_STRING in the config; "
                                    "return an array of bytes or str")
                arr = arr.astype(np.object_)
            elif arr.dtype != spec.dtype:
                if not np.can_cast(arr.dtype, spec.dtype, casting="safe"):
                    raise _Mismatch(f"output {name!r} has dtype {arr.dtype}, which cannot be cast safely to "
                                    f"{spec.data_type} ({spec.dtype}); return it as {spec.dtype} "
                                    f"(e.g. .astype(np.{spec.dtype.type.__name__}))")
                arr = arr.astype(spec.dtype)
            want = ((batch_size,) if self.max_batch_size > 0 else ()) + spec.dims
            if arr.ndim != len(want) or any(w not in (-1, s) for s, w in zip(arr.shape, want)):
                batch = "the batch size, then " if self.max_batch_size > 0 else ""
                raise _Mismatch(f"output {name!r} has shape {list(arr.shape)}, but the config wants {list(want)} "
                                f"({batch}dims {list(spec.dims)}; -1 is any size)")
            checked[name] = arr
        return checked

    def _response(self, outputs: dict):
        pb = self._pb
        # The backend copies the array's buffer as it is: hand it C order (a copy keeps 0-d arrays 0-d).
        return pb.InferenceResponse(output_tensors=[
            pb.Tensor(n, a if a.flags.c_contiguous else a.copy(order="C")) for n, a in outputs.items()])

    def _error(self, message: str):
        return self._pb.InferenceResponse(output_tensors=[], error=self._pb.TritonError(message))


def _inputs(request) -> dict:
    return {t.name(): t.as_numpy() for t in request.inputs()}
