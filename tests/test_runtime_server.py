"""BaseTritonPythonModel inside a real Triton server (the nvidia-pytriton wheel's r24.10, CPU only, on
loopback): models built by the real CLI, whose model.py only imports `tpbuild_runtime` and lets the
triton_model rule ship it. Covers what the backend's real pb_utils decides and a stand-in cannot: error
responses reaching the client, str arrays as BYTES, optional inputs, the dynamic batcher really handing
several requests to one execute call, and a decoupled config refused at load."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.server

server = pytest.importorskip("tpbuild_triton.server")

RUNTIME = Path(__file__).resolve().parent.parent / "runtime" / "tpbuild_runtime" / "__init__.py"
QUEUE_DELAY_S = 0.3  # long enough for concurrent requests to land in one batch on a busy machine

MODELS = {
    # One infer call per execute; ROWS tells the test how many rows that call saw.
    "scale": ("""
        [triton_model.scale]
        versions = ["1"]

        [triton_model.scale.config]
        max_batch_size = 8
        input = [{ name = "X", data_type = "TYPE_FP32", dims = [2] }]
        output = [
          { name = "Y", data_type = "TYPE_FP32", dims = [2] },
          { name = "ROWS", data_type = "TYPE_INT64", dims = [1] },
        ]
        instance_group = [{ kind = "KIND_CPU", count = 1 }]
        dynamic_batching = { max_queue_delay_microseconds = %d }
        """ % int(QUEUE_DELAY_S * 1e6), """
        import numpy as np
        from tpbuild_runtime import BaseTritonPythonModel


        class TritonPythonModel(BaseTritonPythonModel):
            batched = True

            def setup(self):
                self.factor = np.float32(2)
                self.logger.log_info(f"scale: inputs {list(self.input_specs)}")

            def infer(self, inputs):
                x = inputs["X"]
                if (x < 0).any():
                    raise ValueError("negative input")
                return {"Y": x * self.factor, "ROWS": np.full((len(x), 1), len(x))}
        """),
    # MODE picks what infer gets wrong.
    "checked": ("""
        [triton_model.checked]
        versions = ["1"]

        [triton_model.checked.config]
        max_batch_size = 0
        input = [{ name = "MODE", data_type = "TYPE_INT32", dims = [1] }]
        output = [{ name = "OUT", data_type = "TYPE_FP32", dims = [2] }]
        """, """
        import numpy as np
        from tpbuild_runtime import BaseTritonPythonModel


        class TritonPythonModel(BaseTritonPythonModel):
            def infer(self, inputs):
                mode = int(inputs["MODE"][0])
                return [
                    {"OUT": np.array([1, 2], dtype=np.float16)},  # cast safely to FP32
                    {"OUT": np.array([1, 2], dtype=np.float64)},
                    {"OUT": np.zeros(3, dtype=np.float32)},
                    {},
                ][mode]
        """),
    # BYTES both ways, an optional input, and str results.
    "text": ("""
        [triton_model.text]
        versions = ["1"]

        [triton_model.text.config]
        max_batch_size = 0
        input = [
          { name = "TEXT", data_type = "TYPE_STRING", dims = [-1] },
          { name = "SUFFIX", data_type = "TYPE_STRING", dims = [1], optional = true },
        ]
        output = [{ name = "OUT", data_type = "TYPE_STRING", dims = [-1] }]
        """, """
        import numpy as np
        from tpbuild_runtime import BaseTritonPythonModel


        class TritonPythonModel(BaseTritonPythonModel):
            def infer(self, inputs):
                suffix = inputs["SUFFIX"][0].decode() if "SUFFIX" in inputs else ""
                return {"OUT": np.array([t.decode().upper() + suffix for t in inputs["TEXT"]])}
        """),
    "stream": ("""
        [triton_model.stream]
        versions = ["1"]

        [triton_model.stream.config]
        max_batch_size = 0
        input = [{ name = "X", data_type = "TYPE_FP32", dims = [1] }]
        output = [{ name = "Y", data_type = "TYPE_FP32", dims = [1] }]
        model_transaction_policy = { decoupled = true }
        """, """
        from tpbuild_runtime import BaseTritonPythonModel


        class TritonPythonModel(BaseTritonPythonModel):
            def infer(self, inputs):
                return {"Y": inputs["X"]}
        """),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from conftest import Workspace

    tmp = tmp_path_factory.mktemp("runtime")
    ws = Workspace(tmp / "ws", tmp / "cache")
    ws.write("tpbuild.toml", '[triton]\nversion = "24.10"\npython = "3.11"\n')
    ws.write("BUILD.toml", '[model_repository.repo]\nmodels = ["//models/..."]\n')
    for name, (build, model) in MODELS.items():
        ws.write(f"models/{name}/BUILD.toml", build)
        ws.write(f"models/{name}/1/model.py", model)
    ws.build("//...", check=True)
    repo = ws.out("repo")
    for name in MODELS:  # the rule ships the runtime next to each model.py that imports it
        assert (repo / name / "1" / "tpbuild_runtime.py").read_bytes() == RUNTIME.read_bytes()
    with server.TritonServer(repo, log_path=tmp / "server.log") as srv:
        ready = srv.wait_ready(list(MODELS), timeout=180)
        assert ready == {**{n: True for n in MODELS}, "stream": False}, (ready, srv.log_text()[-4000:])
        yield srv


def _concurrently(srv, model: str, feeds: list[dict]) -> list:
    """Send all requests at once so the dynamic batcher puts them into one execute call; each result is
    the outputs or the InferenceError."""
    def one(feed):
        try:
            return srv.infer(model, feed)
        except server.InferenceError as e:
            return e

    with ThreadPoolExecutor(len(feeds)) as pool:
        return list(pool.map(one, feeds))


def _logged(srv, text: str, within: float = 30) -> bool:
    """Whether the server logs `text` (soon): a model's log lines reach tritonserver's log through the
    stub's message queue, after the response that follows them may already have been answered."""
    deadline = time.monotonic() + within
    while text not in srv.log_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_batched_execution_joins_the_requests(served):
    xs = [np.array([[i, i + 0.5]], dtype=np.float32) for i in range(4)]
    results = _concurrently(served, "scale", [{"X": x} for x in xs])
    for x, out in zip(xs, results):
        assert isinstance(out, dict), out
        np.testing.assert_allclose(out["Y"], 2 * x)
    assert max(int(out["ROWS"][0, 0]) for out in results) > 1  # infer ran on several requests at once
    assert _logged(served, "scale: inputs ['X']")  # setup ran and logged through the backend


def test_one_failing_request_of_a_batch_leaves_the_others_answered(served):
    xs = [np.array([[1, 2]], dtype=np.float32), np.array([[-1, 2]], dtype=np.float32),
          np.array([[3, 4], [5, 6]], dtype=np.float32)]
    good1, bad, good2 = _concurrently(served, "scale", [{"X": x} for x in xs])
    assert isinstance(bad, server.InferenceError)
    assert "infer raised ValueError: negative input" in bad.message
    np.testing.assert_allclose(good1["Y"], 2 * xs[0])
    np.testing.assert_allclose(good2["Y"], 2 * xs[2])
    assert good2["ROWS"].tolist() == [[2], [2]]  # retried on its own after the joint call failed
    assert _logged(served, "running them one by one"), served.log_text()[-3000:]


def test_safe_cast_is_applied(served):
    out = served.infer("checked", {"MODE": np.array([0], dtype=np.int32)})
    assert out["OUT"].dtype == np.float32 and out["OUT"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("mode, message", [
    (1, "output 'OUT' has dtype float64, which cannot be cast safely to TYPE_FP32"),
    (2, "output 'OUT' has shape [3], but the config wants [2]"),
    (3, "infer returned no output 'OUT'"),
])
def test_wrong_outputs_are_a_clear_per_request_error(served, mode, message):
    with pytest.raises(server.InferenceError) as e:
        served.infer("checked", {"MODE": np.array([mode], dtype=np.int32)})
    assert message in e.value.message


def test_bytes_and_optional_inputs(served):
    text = np.array([b"hello", b"triton"], dtype=np.object_)
    out = served.infer("text", {"TEXT": text})
    assert out["OUT"].tolist() == [b"HELLO", b"TRITON"]
    out = served.infer("text", {"TEXT": text, "SUFFIX": np.array([b"!"], dtype=np.object_)})
    assert out["OUT"].tolist() == [b"HELLO!", b"TRITON!"]


def test_decoupled_model_is_refused_at_load(served):
    state, reason = served.model_states()["stream"]
    assert state == "UNAVAILABLE"
    assert "model 'stream' is decoupled, which BaseTritonPythonModel does not support" in reason
