"""The examples, built by the real CLI, served by a real Triton server (the nvidia-pytriton wheel's r24.10
server, CPU only, on loopback): every model READY and answering with the expected values."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.server

server = pytest.importorskip("tpbuild_triton.server")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from conftest import built_examples

    ws = built_examples(tmp_path_factory, tmp_path_factory.mktemp("e2e"))
    ws.build("//:repository", check=True)
    return ws


@pytest.fixture(scope="module")
def served(built):
    with server.TritonServer(built.out("repository"), log_path=built.root.parent / "server.log") as srv:
        ready = srv.wait_ready(["add_sub", "text_transform", "labeler", "table"], timeout=180)
        assert all(ready.values()), (ready, srv.log_text()[-4000:])
        yield srv


def test_add_sub(served):
    a = np.array([[1, 2, 3, 4]], dtype=np.float32)
    b = np.array([[10, 20, 30, 40]], dtype=np.float32)
    out = served.infer("add_sub", {"INPUT0": a, "INPUT1": b})
    np.testing.assert_allclose(out["OUTPUT0"], a + b)
    np.testing.assert_allclose(out["OUTPUT1"], a - b)


def test_bytes_model_two_versions(served):
    text = np.array([b"hello", b"triton"], dtype=np.object_)
    v1 = served.infer("text_transform", {"TEXT": text}, version="1")
    v2 = served.infer("text_transform", {"TEXT": text}, version="2")
    assert [t.decode() if isinstance(t, bytes) else t for t in v1["RESULT"]] == ["HELLO", "TRITON"]
    assert [t.decode() if isinstance(t, bytes) else t for t in v2["RESULT"]] == ["olleh", "notirt"]


def test_kept_config_and_genrule_file(served):
    out = served.infer("labeler", {"INDEX": np.array([1], dtype=np.int32)})
    label = out["LABEL"][0]
    assert (label.decode() if isinstance(label, bytes) else label) == "CAT"
    cfg = served.model_config("labeler")
    assert cfg["name"] == "labeler" and cfg["backend"] == "python"


def test_env_package_the_server_python_lacks(served):
    import importlib.util

    assert importlib.util.find_spec("tabulate") is None  # only the model's env has it
    out = served.infer("table", {"VALUES": np.array([1.5, 2.0], dtype=np.float32)})
    text = out["TABLE"][0].decode()
    assert "value" in text and "1.5" in text
    cfg = served.model_config("table")
    assert cfg["parameters"]["EXECUTION_ENV_PATH"]["string_value"] == "$$TRITON_MODEL_DIRECTORY/tabulate.tar.gz"


def test_tpbuild_test_passes_on_the_examples(built):
    """What a newcomer runs after the quick start: every example model passes its declared cases (or
    the smoke test) on a real server, and nothing is rebuilt."""
    r = built.run("test", "//...")
    assert r.returncode == 0, r.output
    assert r.statuses("executed") == []
    for case in ("//models/add_sub:add_sub sum and difference", "//models/text:text case 1",
                 "//models/text:text case 2", "//models/labeler:labeler case 1", "//models/table:table smoke"):
        assert f"PASS {case}" in r.stdout, r.stdout
    assert "5 passed, 0 failed" in r.stdout
