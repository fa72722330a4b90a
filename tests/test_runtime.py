"""BaseTritonPythonModel without a server.

`triton_python_backend_utils` exists only inside a running Triton (it is the stub's embedded module),
so these tests give the runtime a minimal stand-in with the same names (Tensor, InferenceResponse,
TritonError, Logger) to check its own logic quickly. What only the real backend decides (error
responses reaching a client, the dynamic batcher) is covered on the real server in test_runtime_server.py.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest


class Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors}
        self.error = error


class TritonError:
    def __init__(self, message):
        self.message = message


class Logger:
    lines: list = []

    @classmethod
    def _log(cls, level, msg):
        cls.lines.append((level, msg))

    log_info = classmethod(lambda cls, m: cls._log("info", m))
    log_warn = classmethod(lambda cls, m: cls._log("warn", m))
    log_error = classmethod(lambda cls, m: cls._log("error", m))


class Request:
    def __init__(self, **arrays):
        self._tensors = [Tensor(n, a) for n, a in arrays.items()]

    def inputs(self):
        return self._tensors


@pytest.fixture(autouse=True)
def pb_utils(monkeypatch):
    mod = types.ModuleType("triton_python_backend_utils")
    for cls in (Tensor, InferenceResponse, TritonError, Logger):
        setattr(mod, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", mod)
    Logger.lines = []
    return mod


def make(infer, config: dict, batched: bool = False):
    from tpbuild_runtime import BaseTritonPythonModel

    calls = []

    class Model(BaseTritonPythonModel):
        def infer(self, inputs):
            calls.append({k: v.copy() for k, v in inputs.items()})
            return infer(inputs)

    Model.batched = batched
    m = Model()
    m.initialize({"model_config": json.dumps(config)})
    return m, calls


BATCHED = {"name": "m", "max_batch_size": 8,
           "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [2]}],
           "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [2]}]}


def test_specs_from_the_config():
    cfg = {"name": "m", "max_batch_size": 0,
           "input": [{"name": "T", "data_type": "TYPE_STRING", "dims": [-1], "optional": True},
                     {"name": "R", "data_type": "TYPE_INT8", "dims": [4], "reshape": {"shape": [2, 2]}}],
           "output": [{"name": "O", "data_type": "TYPE_BOOL", "dims": [1]}]}
    m, _ = make(lambda i: {}, cfg)
    t, r = m.input_specs["T"], m.input_specs["R"]
    assert (t.dtype, t.dims, t.optional) == (np.dtype(object), (-1,), True)
    assert (r.dtype, r.dims, r.optional) == (np.dtype(np.int8), (2, 2), False)
    assert m.output_specs["O"].dtype == np.dtype(bool) and m.max_batch_size == 0


def test_unsupported_dtype_and_decoupled_are_refused_at_load():
    with pytest.raises(ValueError, match="no numpy type for TYPE_BF16"):
        make(lambda i: {}, {**BATCHED, "input": [{"name": "X", "data_type": "TYPE_BF16", "dims": [1]}]})
    with pytest.raises(ValueError, match="decoupled"):
        make(lambda i: {}, {**BATCHED, "model_transaction_policy": {"decoupled": True}})


def test_batched_execution_joins_and_splits():
    m, calls = make(lambda i: {"Y": i["X"] * 2}, BATCHED, batched=True)
    reqs = [Request(X=np.full((n, 2), n, dtype=np.float32)) for n in (1, 3, 2)]
    responses = m.execute(reqs)
    assert len(calls) == 1 and calls[0]["X"].shape == (6, 2)
    for n, resp in zip((1, 3, 2), responses):
        assert resp.error is None
        np.testing.assert_array_equal(resp.outputs["Y"], np.full((n, 2), 2 * n, dtype=np.float32))


def test_one_failing_request_gets_its_own_error_and_the_others_are_answered():
    def infer(i):
        if (i["X"] < 0).any():
            raise ValueError("negative input")
        return {"Y": i["X"] + 1}

    m, calls = make(infer, BATCHED, batched=True)
    good, bad = Request(X=np.ones((1, 2), np.float32)), Request(X=-np.ones((2, 2), np.float32))
    r_good, r_bad = m.execute([good, bad])
    assert len(calls) == 3  # the joint call, then each request alone
    assert r_good.error is None and r_good.outputs["Y"].tolist() == [[2, 2]]
    assert r_bad.error.message == "infer raised ValueError: negative input"
    assert any(level == "error" and "negative input" in msg for level, msg in Logger.lines)


def test_requests_that_cannot_be_joined_run_one_by_one():
    m, calls = make(lambda i: {"Y": i["X"]}, {**BATCHED, "input": [{"name": "X", "data_type": "TYPE_FP32",
                                                                    "dims": [-1]}],
                                              "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]}]},
                    batched=True)
    out = m.execute([Request(X=np.ones((1, 2), np.float32)), Request(X=np.ones((1, 3), np.float32))])
    assert [c["X"].shape for c in calls] == [(1, 2), (1, 3)]
    assert [r.outputs["Y"].shape for r in out] == [(1, 2), (1, 3)]


@pytest.mark.parametrize("result, message", [
    ({"Y": np.ones((1, 2), np.float64)}, "dtype float64, which cannot be cast safely to TYPE_FP32"),
    ({"Y": np.ones((1, 3), np.float32)}, "shape [1, 3], but the config wants [1, 2]"),
    ({"Y": np.ones((2, 2), np.float32)}, "shape [2, 2], but the config wants [1, 2]"),
    ({}, "infer returned no output 'Y'"),
    ({"Y": np.ones((1, 2), np.float32), "Z": np.ones(1)}, "output 'Z', which the config does not declare"),
    ([1, 2], "infer returned list; return a dict"),
])
def test_outputs_are_checked_against_the_config(result, message):
    m, _ = make(lambda i: result, BATCHED)
    (resp,) = m.execute([Request(X=np.ones((1, 2), np.float32))])
    assert resp.error is not None and message in resp.error.message and resp.outputs == {}


def test_safe_casts_and_strings_are_converted():
    cfg = {"name": "m", "max_batch_size": 0,
           "input": [{"name": "X", "data_type": "TYPE_INT32", "dims": [2]}],
           "output": [{"name": "F", "data_type": "TYPE_FP64", "dims": [2]},
                      {"name": "S", "data_type": "TYPE_STRING", "dims": [2]}]}
    m, _ = make(lambda i: {"F": i["X"].astype(np.int16), "S": np.array(["a", "b"])}, cfg)
    (resp,) = m.execute([Request(X=np.array([1, 2], np.int32))])
    assert resp.error is None
    assert resp.outputs["F"].dtype == np.float64 and resp.outputs["S"].dtype == object
