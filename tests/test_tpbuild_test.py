"""`tpbuild test` through the real CLI against a real Triton server: declared cases, smoke tests,
a failing expected value, a model that does not load, JUnit output."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

pytestmark = pytest.mark.server

TOML = '[triton]\nversion = "24.10"\npython = "3.11"\n'

DOUBLE = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("Y", (x * 2).astype(DTYPE))]))
        return out
"""

CONFIG = """
[triton_model.{name}.config]
max_batch_size = 4
input = [{{ name = "X", data_type = "TYPE_FP32", dims = [-1] }}]
output = [{{ name = "Y", data_type = "TYPE_FP32", dims = [-1] }}]
"""


def add_model(ws, name, body=DOUBLE, dtype="np.float32", tests=""):
    ws.write(f"models/{name}/BUILD.toml", f'[triton_model.{name}]\nversions = ["1"]\n'
             + CONFIG.format(name=name) + tests)
    ws.write(f"models/{name}/1/model.py", body.replace("DTYPE", dtype))


def test_cases_smoke_failures_and_junit(ws, tmp_path):
    ws.write("tpbuild.toml", TOML)
    add_model(ws, "good", tests="""
[[triton_model.good.test]]
name = "doubles"
inputs = { X = [[1.0, 2.5]] }
expected = { Y = [[2.0, 5.0]] }
""")
    add_model(ws, "wrong", tests="""
[[triton_model.wrong.test]]
name = "wrong value"
inputs = { X = [[1.0]] }
expected = { Y = [[3.0]] }
""")
    add_model(ws, "smoky")                       # no cases: a smoke test from the config
    add_model(ws, "badtype", dtype="np.int32")   # smoke test catches the dtype
    # Fails in initialize, which no build-time check can foresee (a model without TritonPythonModel
    # or with a syntax error is refused by the build itself).
    add_model(ws, "broken", body="class TritonPythonModel:\n    def initialize(self, args):\n"
                                 "        raise RuntimeError('cannot initialize this model')\n")
    junit = tmp_path / "junit.xml"
    r = ws.run("test", "//models/...", "--junit", str(junit), timeout=600)
    assert r.returncode == 1, r.output
    out = r.stdout
    assert "PASS //models/good:good doubles" in out
    assert "PASS //models/smoky:smoky smoke" in out
    assert "FAIL //models/wrong:wrong wrong value: Y: [[2.0]], expected [[3.0]]" in out
    assert "FAIL //models/badtype:badtype smoke: output Y: dtype int32, config says TYPE_FP32" in out
    assert "FAIL //models/broken:broken (broken): did not load" in out
    assert "cannot initialize this model" in out  # the server log of the failing model
    assert "3 failed" in out and "2 passed" in out
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "2" and suite.get("errors") == "1"
    names = {(tc.get("classname"), tc.get("name")) for tc in suite.iter("testcase")}
    assert ("//models/good:good", "doubles") in names and ("//models/broken:broken", "load") in names


def test_passing_run_exits_0_and_tests_repository_members(ws):
    ws.write("tpbuild.toml", TOML)
    add_model(ws, "good")
    ws.write("BUILD.toml", '[model_repository.repo]\nmodels = ["//models/..."]\n')
    r = ws.run("test", "//:repo", timeout=600)
    assert r.returncode == 0, r.output
    assert "PASS //models/good:good smoke" in r.stdout and "1 passed, 0 failed" in r.stdout


@pytest.mark.parametrize("case,needle", [
    ('inputs = { X = [[1.0]] }\nnpz = "c.npz"\n', "either npz or inputs"),
    ('expected = { Y = [[1.0]] }\n', "needs inputs"),
    ('inputs = { X = [[1.0]] }\nversion = "01"\n', "not a version number"),
    ('inputs = { X = [[1.0]] }\ncolour = 1\n', "unknown attribute"),
])
def test_bad_test_cases_exit_2(ws, case, needle):
    ws.write("tpbuild.toml", TOML)
    add_model(ws, "m", tests=f"\n[[triton_model.m.test]]\n{case}")
    ws.write("models/m/c.npz", "")
    r = ws.run("test", "//models/...")
    assert r.returncode == 2 and "models/m/BUILD.toml:" in r.stderr and needle in r.stderr, r.stderr
