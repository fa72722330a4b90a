"""If it builds, it loads: a corpus of broken (and borderline-valid) workspaces, each built by the real
CLI. Every case either is refused (exit 2, a message naming a file and line, no traceback, no pydantic
vocabulary) or builds, and then the real Triton server (the nvidia-pytriton wheel's r24.10, CPU only,
one server for the whole corpus in explicit mode) loads the model READY. A case that builds and then
fails to load is a failure of tpbuild's checks.

The config cases follow the rules of triton-inference-server/core src/model_config_utils.cc
(ValidateModelConfig, ValidateIOShape, ValidateBatchIO, ValidateInstanceGroup, r24.10 and later),
at least one refusal per rule that applies to a Python-backend model, with valid neighbours that
must load.
"""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import Workspace

REFUSE, LOAD = "refuse", "load"
# Released words only: pydantic's own vocabulary must never reach a user.
JARGON = ("dict[", "tuple", "valid dictionary", "Input should be", "Traceback", "pydantic")
FILE_LINE = re.compile(r"^error: [^\s:]+(\.toml|\.pbtxt|\.py):\d+(:\d+)?: ", re.M)

MODEL_PY = """\
class TritonPythonModel:
    def initialize(self, args):
        self.args = args

    def execute(self, requests):
        return []
"""
WORKSPACE = '[triton]\nversion = "24.10"\npython = "3.11"\ngpus = 0\n'  # the wheel's server: r24.10, CPU only
IN = '{ name = "IN", data_type = "TYPE_FP32", dims = [2] }'
OUT = '{ name = "OUT", data_type = "TYPE_FP32", dims = [2] }'


def case(expect: str, config: str = "", *, says: str = "", inputs: str | None = None, outputs: str | None = None,
         mbs: int | None = 4, attrs: str = "", after: str = "", files: dict | None = None, workspace: str = WORKSPACE,
         manifest: str | None = None):
    """A workspace with one model `//m:m`: `config` adds TOML lines to its config table, `attrs` to the
    target's table, `after` more tables; `files` adds or replaces files (`1/model.py` is MODEL_PY)."""
    body = manifest
    if body is None:
        head = '[triton_model.m]\nmodel_name = "@MODEL@"\nversions = ["1"]\n' + attrs
        table = [f"max_batch_size = {mbs}"] if mbs is not None else []
        table += [f"input = [{inputs if inputs is not None else IN}]", f"output = [{outputs if outputs is not None else OUT}]"]
        body = head + "\n[triton_model.m.config]\n" + "\n".join(table) + "\n" + textwrap.dedent(config) + "\n" + after
    return {"expect": expect, "says": says, "files": {"m/BUILD.toml": body, "m/1/model.py": MODEL_PY, **(files or {})},
            "workspace": workspace}


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


SEQ = 'sequence_batching = {{ control_input = [{0}] }}'
START = '{ name = "START", control = [{ kind = "CONTROL_SEQUENCE_START", int32_false_true = [0, 1] }] }'
PBTXT_BAD = ('backend: "python"\nmax_batch_size: 4\ninput [\n  {\n    name: "IN"\n    data_type: TYPE_FP32\n'
             '    dims: [ 0 ]\n  }\n]\noutput [ { name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] } ]\n')

CASES = {
    # -- tensors: ValidateIOShape, ValidateModelInput/Output ------------------------------------------
    "dims-zero": case(REFUSE, inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [0] }', says="input[0].dims[0]"),
    "dims-below-minus-one": case(REFUSE, outputs='{ name = "OUT", data_type = "TYPE_FP32", dims = [-2] }',
                                 says="output[0].dims[0]"),
    "dims-wildcard": case(LOAD, inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [-1, 3] }'),
    "dims-empty": case(REFUSE, inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [] }', says="dims"),
    "no-data-type": case(REFUSE, inputs='{ name = "IN", dims = [2] }', says="data_type"),
    "no-tensor-name": case(REFUSE, inputs='{ data_type = "TYPE_FP32", dims = [2] }', says="name"),
    "duplicate-input": case(REFUSE, inputs=f"{IN}, {IN}", says="unique"),
    "duplicate-output": case(REFUSE, outputs=f"{OUT}, {OUT}", says="unique"),
    "same-name-input-output": case(LOAD, outputs='{ name = "IN", data_type = "TYPE_FP32", dims = [2] }'),
    "reshape-count": case(REFUSE, inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [4], reshape = { shape = [3] } }',
                          says="reshape"),
    "reshape-ok": case(LOAD, inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [4], reshape = { shape = [2, 2] } }'),
    "reshape-zero": case(REFUSE, inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [2], reshape = { shape = [0] } }',
                         says="reshape"),
    "reshape-empty-no-batching": case(REFUSE, mbs=0, says="scalar",
                                      inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [1], reshape = { shape = [] } }'),
    "reshape-empty-batching": case(LOAD, inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [1], reshape = { shape = [] } }'),
    "reshape-wildcard-runs": case(REFUSE, says="runs between",
                                  inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [2, -1], reshape = { shape = [-1, 2] } }'),
    "reshape-wildcard-number": case(REFUSE, says="number of variable-size",
                                    inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [-1], reshape = { shape = [-1, -1] } }'),
    "reshape-wildcard-ok": case(LOAD, inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [2, 4, -1, 6], '
                                             'reshape = { shape = [8, -1, 1, 6] } }'),
    "format-nhwc-dims": case(REFUSE, inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [2], format = "FORMAT_NHWC" }',
                             says="3 dims"),
    "format-nhwc-ok": case(LOAD, inputs='{ name = "IN", data_type = "TYPE_FP32", dims = [2, 2, 3], format = "FORMAT_NHWC" }'),
    "shape-tensor": case(REFUSE, inputs='{ name = "IN", data_type = "TYPE_INT32", dims = [2], is_shape_tensor = true }',
                         says="TensorRT"),
    "non-linear-io": case(REFUSE, outputs='{ name = "OUT", data_type = "TYPE_FP32", dims = [2, 2, 2], '
                                          'is_non_linear_format_io = true }', says="TensorRT"),
    "optional-input": case(LOAD, inputs=f'{IN}, {{ name = "OPT", data_type = "TYPE_STRING", dims = [1], optional = true }}'),
    # -- batching: ValidateModelConfig ------------------------------------------------------------------
    "max-batch-negative": case(REFUSE, mbs=-1, says="max_batch_size"),
    "no-batching": case(LOAD, mbs=0),
    "preferred-too-big": case(REFUSE, "dynamic_batching = { preferred_batch_size = [8] }", says="preferred"),
    "preferred-zero": case(REFUSE, "dynamic_batching = { preferred_batch_size = [0] }", says="preferred"),
    "preferred-without-batching": case(REFUSE, "dynamic_batching = { preferred_batch_size = [1] }", mbs=0,
                                       says="preferred"),
    "preferred-ok": case(LOAD, "dynamic_batching = { preferred_batch_size = [2, 4], max_queue_delay_microseconds = 100 }"),
    "priority-default-too-high": case(REFUSE, "dynamic_batching = { priority_levels = 2, default_priority_level = 3 }",
                                      says="default_priority_level"),
    "priority-default-unset": case(REFUSE, "dynamic_batching = { priority_levels = 2 }", says="default_priority_level"),
    "priority-policy-level": case(REFUSE, "dynamic_batching = { priority_levels = 2, default_priority_level = 1, "
                                          "priority_queue_policy = { 5 = { max_queue_size = 4 } } }",
                                  says="priority level 5"),
    "priority-ok": case(LOAD, "dynamic_batching = { priority_levels = 2, default_priority_level = 1, "
                              "priority_queue_policy = { 2 = { max_queue_size = 4 } } }"),
    "preserve-ordering-levels": case(REFUSE, "dynamic_batching = { preserve_ordering = true, priority_levels = 2, "
                                             "default_priority_level = 1 }", says="one priority level"),
    "preserve-ordering-delay": case(REFUSE, "dynamic_batching = { preserve_ordering = true, default_queue_policy = "
                                            "{ timeout_action = \"DELAY\", default_timeout_microseconds = 100 } }",
                                    says="DELAY"),
    "preserve-ordering-ok": case(LOAD, "dynamic_batching = { preserve_ordering = true }"),
    # -- sequence batching --------------------------------------------------------------------------------
    "seq-ok": case(LOAD, SEQ.format(START)),
    "seq-control-no-name": case(REFUSE, SEQ.format('{ control = [{ kind = "CONTROL_SEQUENCE_START", '
                                                   'int32_false_true = [0, 1] }] }'), says="name"),
    "seq-control-tensor-twice": case(REFUSE, SEQ.format(
        f'{START}, {{ name = "START", control = [{{ kind = "CONTROL_SEQUENCE_END", int32_false_true = [0, 1] }}] }}'),
        says="one tensor serves one control"),
    "seq-control-kind-twice": case(REFUSE, SEQ.format(
        f'{START}, {{ name = "START2", control = [{{ kind = "CONTROL_SEQUENCE_START", int32_false_true = [0, 1] }}] }}'),
        says="set twice"),
    "seq-start-no-values": case(REFUSE, SEQ.format('{ name = "S", control = [{ kind = "CONTROL_SEQUENCE_START" }] }'),
                                says="exactly one of"),
    "seq-start-two-kinds": case(REFUSE, SEQ.format('{ name = "S", control = [{ kind = "CONTROL_SEQUENCE_START", '
                                                   'int32_false_true = [0, 1], fp32_false_true = [0.0, 1.0] }] }'),
                                says="exactly one of"),
    "seq-start-three-values": case(REFUSE, SEQ.format('{ name = "S", control = [{ kind = "CONTROL_SEQUENCE_READY", '
                                                      'int32_false_true = [0, 1, 2] }] }'), says="exactly 2"),
    "seq-corrid-false-true": case(REFUSE, SEQ.format('{ name = "C", control = [{ kind = "CONTROL_SEQUENCE_CORRID", '
                                                     'data_type = "TYPE_UINT64", int32_false_true = [0, 1] }] }'),
                                  says="takes a data_type"),
    "seq-corrid-type": case(REFUSE, SEQ.format('{ name = "C", control = [{ kind = "CONTROL_SEQUENCE_CORRID", '
                                               'data_type = "TYPE_FP32" }] }'), says="TYPE_UINT64"),
    "seq-corrid-ok": case(LOAD, SEQ.format('{ name = "C", control = [{ kind = "CONTROL_SEQUENCE_CORRID", '
                                           'data_type = "TYPE_UINT64" }] }')),
    "seq-oldest-preferred": case(REFUSE, "sequence_batching = { oldest = { max_candidate_sequences = 4, "
                                         "preferred_batch_size = [16] } }", says="preferred"),
    "seq-oldest-ok": case(LOAD, "sequence_batching = { oldest = { max_candidate_sequences = 4, "
                                "preferred_batch_size = [2] } }"),
    "seq-direct-utilization": case(REFUSE, "sequence_batching = { direct = { minimum_slot_utilization = 1.5 } }",
                                   says="minimum_slot_utilization"),
    "seq-response-cache": case(REFUSE, "sequence_batching = {}\nresponse_cache = { enable = true }",
                               says="sequence batching"),
    "decoupled-response-cache": case(REFUSE, "model_transaction_policy = { decoupled = true }\n"
                                             "response_cache = { enable = true }", says="decoupled"),
    "decoupled-ok": case(LOAD, "model_transaction_policy = { decoupled = true }"),
    "ensemble-scheduling": case(REFUSE, 'ensemble_scheduling = { step = [{ model_name = "x", model_version = -1 }] }',
                                says="ensemble"),
    # -- batch inputs and outputs: ValidateBatchIO ---------------------------------------------------------
    "batch-input-sources": case(REFUSE, 'batch_input = [{ kind = "BATCH_ELEMENT_COUNT", target_name = ["N"], '
                                        'data_type = "TYPE_FP32" }]', says="1 source input"),
    "batch-input-type": case(REFUSE, 'batch_input = [{ kind = "BATCH_ELEMENT_COUNT", target_name = ["N"], '
                                     'data_type = "TYPE_INT64", source_input = ["IN"] }]', says="TYPE_INT32"),
    "batch-input-unknown-source": case(REFUSE, 'batch_input = [{ kind = "BATCH_ELEMENT_COUNT", target_name = ["N"], '
                                               'data_type = "TYPE_FP32", source_input = ["NOPE"] }]', says="NOPE"),
    "batch-output-unknown-target": case(REFUSE, 'batch_output = [{ kind = "BATCH_SCATTER_WITH_INPUT_SHAPE", '
                                                'target_name = ["NOPE"], source_input = ["IN"] }]', says="NOPE"),
    "batch-output-target-twice": case(REFUSE, 'batch_output = [{ kind = "BATCH_SCATTER_WITH_INPUT_SHAPE", '
                                              'target_name = ["OUT", "OUT"], source_input = ["IN"] }]', says="twice"),
    # -- instance groups: ValidateInstanceGroup after NormalizeInstanceGroup --------------------------------
    "gpu-on-cpu-server": case(REFUSE, 'instance_group = [{ kind = "KIND_GPU" }]', says="KIND_GPU"),
    "gpu-id-missing": case(REFUSE, 'instance_group = [{ kind = "KIND_GPU", gpus = [3] }]',
                           workspace=WORKSPACE.replace("gpus = 0", "gpus = 2"), says="GPU 3"),
    "cpu-with-gpus": case(REFUSE, 'instance_group = [{ kind = "KIND_CPU", gpus = [0] }]', says="remove gpus"),
    "model-kind-with-gpus": case(REFUSE, 'instance_group = [{ kind = "KIND_MODEL", gpus = [0] }]', says="remove gpus"),
    "count-negative": case(REFUSE, 'instance_group = [{ kind = "KIND_CPU", count = -1 }]', says="count"),
    "count-two": case(LOAD, 'instance_group = [{ kind = "KIND_CPU", count = 2 }]'),
    "kind-auto": case(LOAD, 'instance_group = [{ kind = "KIND_AUTO" }]'),
    "profile": case(REFUSE, 'instance_group = [{ kind = "KIND_CPU", profile = ["0"] }]', says="TensorRT"),
    "instance-name-chars": case(REFUSE, 'instance_group = [{ name = "a;b", kind = "KIND_CPU" }]',
                                workspace=WORKSPACE.replace("24.10", "25.08"), says="instance group name"),
    # -- the rest of the config --------------------------------------------------------------------------
    "metrics-before-24.11": case(REFUSE, 'model_metrics = { metric_control = [] }', says="24.11"),
    "metrics-no-family": case(REFUSE, 'model_metrics = { metric_control = [{ metric_identifier = { family = "" }, '
                                      'histogram_options = { buckets = [1.0] } }] }',
                              workspace=WORKSPACE.replace("24.10", "25.01"), says="family"),
    "version-policy-missing": case(REFUSE, "version_policy = { specific = { versions = [2] } }", says="version 2"),
    "version-policy-ok": case(LOAD, "version_policy = { specific = { versions = [1] } }"),
    "default-model-filename-dot": case(REFUSE, 'default_model_filename = "model.v2.py"', says=".py"),
    "default-model-filename-ok": case(LOAD, 'default_model_filename = "main.py"',
                                      files={"m/1/main.py": MODEL_PY, "m/1/model.py": None}),
    "platform": case(REFUSE, 'platform = "pytorch_libtorch"', says="platform"),
    "backend-other": case(REFUSE, 'backend = "onnxruntime"', says="backend"),
    "name-mismatch": case(REFUSE, 'name = "other"', says="differs"),
    "model-name-chars": case(REFUSE, manifest='[triton_model.m]\nmodel_name = "a(b)"\nversions = ["1"]\n',
                             workspace=WORKSPACE.replace("24.10", "25.08"), says="model name"),
    "unknown-field": case(REFUSE, "max_batch = 4", says="max_batch_size"),
    "bad-enum": case(REFUSE, inputs='{ name = "IN", data_type = "TYPE_FLOAT", dims = [2] }', says="did you mean 'TYPE_FP32'"),
    "pbtxt-dims-zero": case(REFUSE, manifest='[triton_model.m]\nmodel_name = "@MODEL@"\nversions = ["1"]\n'
                                             'config = "config.pbtxt"\n',
                            files={"m/config.pbtxt": PBTXT_BAD}, says="m/config.pbtxt:7: input[0].dims[0]"),
    "pbtxt-ok": case(LOAD, manifest='[triton_model.m]\nmodel_name = "@MODEL@"\nversions = ["1"]\nconfig = "config.pbtxt"\n',
                     files={"m/config.pbtxt": PBTXT_BAD.replace("[ 0 ]", "[ 2 ]")}),
    "pbtxt-bom": case(REFUSE, manifest='[triton_model.m]\nmodel_name = "@MODEL@"\nversions = ["1"]\n'
                                       'config = "config.pbtxt"\n',
                      files={"m/config.pbtxt": "\ufeff" + PBTXT_BAD.replace("[ 0 ]", "[ 2 ]")}, says="m/config.pbtxt:1"),
    "pbtxt-syntax": case(REFUSE, manifest='[triton_model.m]\nmodel_name = "@MODEL@"\nversions = ["1"]\n'
                                          'config = "config.pbtxt"\n',
                         files={"m/config.pbtxt": 'backend: "python"\nmax_batch_size: [\n'}, says="m/config.pbtxt:2"),
    # -- Python code ------------------------------------------------------------------------------------------
    "syntax-error": case(REFUSE, files={"m/1/model.py": MODEL_PY + "\ndef broken(:\n"}, says="m/1/model.py:8:12"),
    "syntax-error-in-helper": case(REFUSE, files={"m/1/helper.py": "x = (\n"}, says="m/1/helper.py:1"),
    "no-model-class": case(REFUSE, files={"m/1/model.py": "class Model:\n    pass\n"}, says="TritonPythonModel"),
    "except-star-on-3.10": case(REFUSE, files={"m/1/model.py": MODEL_PY + "\ntry:\n    pass\nexcept* ValueError:\n    pass\n"},
                                workspace=WORKSPACE.replace('python = "3.11"', 'python = "3.10"'), says="3.10"),
    "match-on-3.11": case(LOAD, files={"m/1/model.py": MODEL_PY + "\nmatch 1:\n    case 1:\n        pass\n"}),
    "model-class-from-helper": case(LOAD, files={"m/1/model.py": "from impl import TritonPythonModel  # noqa\n",
                                                 "m/1/impl.py": MODEL_PY}),
    # -- test cases, checked at analysis ------------------------------------------------------------------------
    "test-unknown-input": case(REFUSE, after='[[triton_model.m.test]]\ninputs = { NOPE = [[1.0, 2.0]] }\n',
                               says="no input 'NOPE'"),
    "test-unknown-output": case(REFUSE, after='[[triton_model.m.test]]\ninputs = { IN = [[1.0, 2.0]] }\n'
                                              'expected = { NOPE = [[1.0]] }\n', says="no output 'NOPE'"),
    "test-string-for-fp32": case(REFUSE, after='[[triton_model.m.test]]\ninputs = { IN = [["a", "b"]] }\n',
                                 says="TYPE_FP32"),
    "test-shape": case(REFUSE, after='[[triton_model.m.test]]\ninputs = { IN = [[1.0, 2.0, 3.0]] }\n', says="shape"),
    "test-batch-too-big": case(REFUSE, after='[[triton_model.m.test]]\ninputs = { IN = [' + ", ".join(["[1.0, 2.0]"] * 5)
                               + '] }\n', says="the first dimension is the batch"),
    "test-no-batch-dim": case(REFUSE, after='[[triton_model.m.test]]\ninputs = { IN = [1.0, 2.0] }\n', says="batch"),
    "test-missing-input": case(REFUSE, inputs=f'{IN}, {{ name = "B", data_type = "TYPE_INT32", dims = [1] }}',
                               after='[[triton_model.m.test]]\ninputs = { IN = [[1.0, 2.0]] }\n', says="'B'"),
    "test-ragged": case(REFUSE, after='[[triton_model.m.test]]\ninputs = { IN = [[1.0, 2.0], [1.0]] }\n',
                        says="ragged"),
    "test-npz-dtype": case(REFUSE, after='[[triton_model.m.test]]\nnpz = "case.npz"\n', says="dtype",
                           files={"m/case.npz": _npz(**{"input.IN": np.array([["a", "b"]])})}),
    "test-npz-unknown-array": case(REFUSE, after='[[triton_model.m.test]]\nnpz = "case.npz"\n', says="'input.NOPE'",
                                   files={"m/case.npz": _npz(**{"input.NOPE": np.ones((1, 2), np.float32)})}),
    "test-npz-ok": case(LOAD, after='[[triton_model.m.test]]\nnpz = "case.npz"\n',
                        files={"m/case.npz": _npz(**{"input.IN": np.ones((1, 2), np.float32),
                                                     "expected.OUT": np.ones((1, 2), np.float32)})}),
    "test-ok": case(LOAD, after='[[triton_model.m.test]]\ninputs = { IN = [[1.0, 2.0]] }\n'
                                'expected = { OUT = [[1.0, 2.0]] }\n'),
    # -- manifests and settings, in the user's words -------------------------------------------------------------
    "versions-integers": case(REFUSE, manifest='[triton_model.m]\nversions = [1]\n', says="an array of strings"),
    "versions-empty": case(REFUSE, manifest='[triton_model.m]\nversions = []\n', says="at least one version"),
    "version-leading-zero": case(REFUSE, manifest='[triton_model.m]\nversions = ["03"]\n',
                                 files={"m/03/model.py": MODEL_PY}, says="'03'"),
    "version-dir-missing-model": case(REFUSE, manifest='[triton_model.m]\nversions = ["2"]\n',
                                      files={"m/2/other.py": "x = 1\n"}, says="2/model.py"),
    "label-without-slashes": case(REFUSE, attrs='env = "envs:tabulate"\n', says="//envs:tabulate"),
    "bom": case(REFUSE, manifest='\ufeff[triton_model.m]\nversions = ["1"]\n', says="byte order mark"),
    "toml-syntax": case(REFUSE, manifest='[triton_model.m]\nversions = ["1"\n', says="invalid TOML"),
    "unknown-rule": case(REFUSE, manifest='[triton_modle.m]\nversions = ["1"]\n', says="unknown rule"),
    "unknown-attribute": case(REFUSE, attrs='vesrions = ["1"]\n', says="vesrions"),
    "pip-string": case(REFUSE, manifest='[python_env.e]\npython = "3.11"\npip = "tabulate"\n',
                       says='write pip = ["tabulate"]'),
    "config-not-a-table": case(REFUSE, manifest='[triton_model.m]\nversions = ["1"]\nconfig = 3\n', says="a table"),
    "triton-version-unknown": case(REFUSE, workspace='[triton]\nversion = "24.99"\n', says="24.12"),
    "triton-gpus-negative": case(REFUSE, workspace='[triton]\ngpus = -1\n', says="gpus"),
}


def test_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert sum(c["expect"] == LOAD for c in CASES.values()) >= 15


def _write(root: Path, name: str, spec: dict) -> None:
    (root / "tpbuild.toml").write_text(spec["workspace"], encoding="utf-8")
    for rel, content in spec["files"].items():
        p = root / rel
        if content is None:
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content.replace("@MODEL@", name), encoding="utf-8")


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    """One real server for the whole corpus, started on first use, models loaded one by one."""
    server = pytest.importorskip("tpbuild_triton.server")
    repo = tmp_path_factory.mktemp("corpus-repo")
    holder: dict = {}
    yield lambda: holder.get("srv") or holder.setdefault("srv", _start(server, repo)), repo
    if "srv" in holder:
        holder["srv"].stop()


def _start(server, repo: Path):
    try:
        server.find_server()
    except Exception as e:  # noqa: BLE001 - the wheel is an optional extra
        pytest.skip(f"no Triton server: {e}")
    srv = server.TritonServer(repo, explicit_models=True, log_path=repo.parent / "corpus-server.log")
    srv.start()
    return srv


@pytest.mark.server
@pytest.mark.parametrize("name", sorted(CASES))
def test_case_is_refused_with_a_line_or_loads(name, tmp_path, triton):
    spec = CASES[name]
    model = "c_" + re.sub(r"\W", "_", name)
    root = tmp_path / "ws"
    root.mkdir()
    _write(root, model, spec)
    ws = Workspace(root, tmp_path / "cache")
    r = ws.build("//...", report=False)
    for word in JARGON:
        assert word not in r.output, r.output
    if r.returncode == 2:
        assert spec["expect"] == REFUSE, f"refused, but the server loads it:\n{r.stderr}"
        assert FILE_LINE.search(r.stderr), f"no file:line in:\n{r.stderr}"
        assert spec["says"] in r.stderr, r.stderr
        return
    assert r.returncode == 0, r.output
    assert spec["expect"] == LOAD, f"built, but the server refuses it (expected a refusal: {spec['says']})"
    get, repo = triton
    srv = get()
    (repo / model).symlink_to(ws.out("m/m"))
    try:
        srv.load(model, timeout=120)
    except Exception as e:  # noqa: BLE001 - the server's refusal is this test's failure
        pytest.fail(f"built, but the server does not load it: {e}\n{srv.log_text()[-3000:]}")
    try:
        assert srv.is_model_ready(model), srv.log_text()[-3000:]
    finally:
        srv.unload(model)
