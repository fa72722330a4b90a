"""`tpbuild import` through the real CLI: a hand-made python_backend repository (explicit, auto-completed,
decoupled models, helper modules and data files, a venv-pack'ed env tarball, the nvidia-pytriton wheel's
real stub, an ONNX model) adopted into a workspace whose build gives SRC back file for file, served by
the real Triton server; and everything that must be reported, refused or left alone."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import Workspace

SYS_PY = "/usr/bin/python3.11"  # Debian's, as the env tests use: the env's base interpreter on the server too
STUB = "triton_python_backend_stub"

ADD_SUB_CONFIG = """\
# Hand-written: comments, odd spacing and field order must survive byte for byte.
backend: "python"
name:    "add_sub"
max_batch_size: 8
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ] },
  { name: "INPUT1", data_type: TYPE_FP32, dims: [ 4 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }
]
instance_group [{ kind: KIND_CPU, count: 1 }]
dynamic_batching { }
"""

ADD_SUB_PY = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            a = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(r, "INPUT1").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", a + b),
                                                   pb_utils.Tensor("OUTPUT1", a - b)]))
        return out
"""

AUTO_PY = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        config.add_input({"name": "X", "data_type": "TYPE_FP32", "dims": [2]})
        config.add_output({"name": "Y", "data_type": "TYPE_FP32", "dims": [2]})
        config.set_max_batch_size(0)
        return config

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() * 2)]) for r in requests]
"""

DECOUPLED_CONFIG = """\
backend: "python"
model_transaction_policy { decoupled: True }
input [{ name: "IN", data_type: TYPE_INT32, dims: [ 1 ] }]
output [{ name: "OUT", data_type: TYPE_INT32, dims: [ 1 ] }]
"""

DECOUPLED_PY = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            sender = r.get_response_sender()
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            for i in range(2):
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x + i)]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""

HELPER_CONFIG = """\
backend: "python"
input [{ name: "INDEX", data_type: TYPE_INT32, dims: [ 1 ] }]
output [{ name: "LABEL", data_type: TYPE_STRING, dims: [ 1 ] }]
"""

HELPER_PY = """\
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from labels import load  # 1/labels.py, next to this file


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.dirname(__file__)
        self.labels = load(os.path.join(here, "..", "labels.txt"))  # a data file at the model root
        with open(os.path.join(here, "data", "suffix.txt")) as f:  # and one in the version directory
            self.suffix = f.read().strip()

    def execute(self, requests):
        out = []
        for r in requests:
            i = int(pb_utils.get_input_tensor_by_name(r, "INDEX").as_numpy()[0])
            label = (self.labels[i] + self.suffix).encode()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("LABEL", np.array([label], dtype=np.object_))]))
        return out
"""

STRING_OUT_CONFIG = """\
backend: "python"
input [{ name: "X", data_type: TYPE_INT32, dims: [ 1 ] }]
output [{ name: "TEXT", data_type: TYPE_STRING, dims: [ 1 ] }]
"""

ENV_PARAMETER = """\
parameters: {
  key: "EXECUTION_ENV_PATH",
  value: {string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz"}
}
"""

# The least a model file must hold for the build to accept it (a TritonPythonModel class at module level).
MINIMAL_PY = "class TritonPythonModel:\n    pass\n"

TEXT_PY = """\
import numpy as np
import triton_python_backend_utils as pb_utils


def text():
    {body}


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("TEXT", np.array([text().encode()], dtype=np.object_))])
                for r in requests]
"""


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


def python_repository(src: Path, env_tarball: Path | None = None, stub: Path | None = None) -> None:
    """The hand-made repository a team arrives with."""
    write(src, {
        "add_sub/config.pbtxt": ADD_SUB_CONFIG,
        "add_sub/1/model.py": ADD_SUB_PY,
        "auto/1/model.py": AUTO_PY,
        "decoupled/config.pbtxt": DECOUPLED_CONFIG,
        "decoupled/1/model.py": DECOUPLED_PY,
        "helper/config.pbtxt": HELPER_CONFIG,
        "helper/1/model.py": HELPER_PY,
        "helper/1/labels.py": "def load(path):\n    with open(path) as f:\n        return f.read().split()\n",
        "helper/1/data/suffix.txt": "!\n",
        "helper/labels.txt": "BIRD\nCAT\nDOG\n",
        "custom/config.pbtxt": STRING_OUT_CONFIG + 'default_model_filename: "my_model.py"\n'
                               "version_policy: { all { } }\n",
        "custom/1/my_model.py": TEXT_PY.replace("{body}", "return 'one'"),
        "custom/2/my_model.py": TEXT_PY.replace("{body}", "return 'two'"),
        "onnx/config.pbtxt": 'name: "onnx"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n',
        "onnx/1/model.onnx": b"\x08\x07 not really onnx",
    })
    if env_tarball is not None:
        body = "import tabulate\n    return tabulate.__version__"
        write(src, {"withenv/config.pbtxt": STRING_OUT_CONFIG + ENV_PARAMETER,
                    "withenv/1/model.py": TEXT_PY.replace("{body}", body)})
        shutil.copyfile(env_tarball, src / "withenv" / "env.tar.gz")
    if stub is not None:
        body = "import sys\n    return '%d.%d' % sys.version_info[:2]"
        write(src, {"stubbed/config.pbtxt": STRING_OUT_CONFIG, "stubbed/1/model.py": TEXT_PY.replace("{body}", body)})
        shutil.copyfile(stub, src / "stubbed" / STUB)
        os.chmod(src / "stubbed" / STUB, 0o755)


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[bytes, bool]]:
    """rel path -> (bytes, executable) of every file below root, following symlinks as the server would."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if not rel.startswith(skip):
                out[rel] = (p.read_bytes(), bool(p.stat().st_mode & stat.S_IXUSR))
    return out


def new_workspace(tmp_path: Path, name: str = "adopted") -> Workspace:
    root = tmp_path / name
    root.mkdir()
    return Workspace(root, tmp_path / "cache")


@pytest.fixture(scope="session")
def env_tarball(tmp_path_factory):
    """A team's hand-made env: a venv on Debian's Python 3.11 with numpy<2 (the r24.10 stubs need it) and
    tabulate (which the test's own Python lacks), packed with venv-pack."""
    if not os.path.exists(SYS_PY):
        pytest.skip(f"needs {SYS_PY} (tools/test.sh installs it)")
    venv_pack = pytest.importorskip("venv_pack")
    d = tmp_path_factory.mktemp("env")
    subprocess.run([SYS_PY, "-m", "venv", "--without-pip", str(d / "venv")], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(d / "venv/bin/python"), "install", "--quiet",
                    "--disable-pip-version-check", "numpy<2", "tabulate==0.9.0"], check=True)
    venv_pack.pack(prefix=str(d / "venv"), output=str(d / "env.tar.gz"), compress_level=1,
                   filters=[("exclude", "lib/python3.11/site-packages/numpy/*/tests/*")])
    return d / "env.tar.gz"


@pytest.fixture(scope="session")
def wheel_stub():
    server = pytest.importorskip("tpbuild_triton.server")
    return server.find_server().stub_for("3.11")  # the nvidia-pytriton wheel's real stub for Python 3.11


# -- the whole repository, built and served -----------------------------------------------------------


@pytest.mark.server
@pytest.mark.slow
def test_imported_repository_builds_back_to_src_and_the_real_server_loads_it(tmp_path, env_tarball, wheel_stub):
    import numpy as np

    from tpbuild_triton import server

    src = tmp_path / "src"
    python_repository(src, env_tarball, wheel_stub)
    ws = new_workspace(tmp_path)
    r = ws.run("import", str(src), "--triton-version", "24.10", check=True)
    out = r.stdout
    for model in ("add_sub", "auto", "custom", "decoupled", "helper", "stubbed", "withenv"):
        assert f"models/{model}" in out, out
    assert "skipped, not Python-backend models" in out and "onnx: platform 'onnxruntime_onnx'" in out
    assert not (ws.root / "models/onnx").exists()
    assert (ws.root / "tpbuild.toml").read_text() == '[triton]\nversion = "24.10"\n'
    assert 'models = ["//models/..."]' in (ws.root / "BUILD.toml").read_text()

    # What the BUILD.toml files say.
    auto = (ws.root / "models/auto/BUILD.toml").read_text()
    assert "config = false" in auto and not (ws.root / "models/auto/config.pbtxt").exists()
    helper = (ws.root / "models/helper/BUILD.toml").read_text()
    assert 'config = "config.pbtxt"' in helper and 'files = ["labels.txt"]' in helper
    stubbed = (ws.root / "models/stubbed/BUILD.toml").read_text()
    assert 'stub = ":stubbed_stub"' in stubbed
    assert '[python_stub.stubbed_stub]\npython = "3.11"  # read from the stub\'s ELF: it links libpython3.11' in stubbed
    withenv = (ws.root / "models/withenv/BUILD.toml").read_text()
    assert 'env = "env.tar.gz"' in withenv
    numpy_dist = next((env_tarball.parent / "venv/lib/python3.11/site-packages").glob("numpy-*.dist-info"))
    numpy_version = numpy_dist.name.removesuffix(".dist-info").split("-")[1]
    assert ('# [python_env.withenv_env]\n# python = "3.11"\n# manager = "venv"\n'
            '# interpreter = "/usr/bin/python3.11"\n'
            f'# pip = ["numpy=={numpy_version}", "tabulate==0.9.0"]\n') in withenv, withenv

    r = ws.build(check=True)
    built = ws.out("repository")
    expected = tree(src, skip=("onnx/",))
    assert tree(built) == expected  # file for file, byte for byte, the stub still executable

    with server.TritonServer(built, log_path=tmp_path / "server.log") as srv:
        names = ["add_sub", "auto", "custom", "decoupled", "helper", "stubbed", "withenv"]
        ready = srv.wait_ready(names, timeout=240)
        assert all(ready.values()), (ready, srv.log_text()[-4000:])
        a = np.array([[1, 2, 3, 4]], dtype=np.float32)
        got = srv.infer("add_sub", {"INPUT0": a, "INPUT1": a * 10})
        np.testing.assert_allclose(got["OUTPUT1"], a - a * 10)
        assert srv.model_config("auto")["input"][0]["name"] == "X"  # auto-completed from model.py, as before
        np.testing.assert_allclose(srv.infer("auto", {"X": np.array([1, 2], dtype=np.float32)})["Y"], [2, 4])
        assert srv.model_config("decoupled")["model_transaction_policy"]["decoupled"] is True
        label = srv.infer("helper", {"INDEX": np.array([1], dtype=np.int32)})["LABEL"][0]
        assert label in (b"CAT!", "CAT!")
        one = np.array([1], dtype=np.int32)
        assert srv.infer("withenv", {"X": one})["TEXT"][0] in (b"0.9.0", "0.9.0")  # only the env has tabulate
        assert srv.infer("stubbed", {"X": one})["TEXT"][0] in (b"3.11", "3.11")
        for version, text in (("1", "one"), ("2", "two")):  # default_model_filename, both versions served
            assert srv.infer("custom", {"X": one}, version=version)["TEXT"][0] in (text, text.encode())



# -- the plan, refusals, bad input ----------------------------------------------------------------


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    src = tmp_path / "src"
    python_repository(src)
    ws = new_workspace(tmp_path)
    r = ws.run("import", "../src", "--dry-run", check=True)  # relative to -C, as if started there
    assert r.stdout.splitlines()[0] == f"plan: {src} -> models/ of the workspace {ws.root}"
    assert "  models/add_sub    <- add_sub/  (config.pbtxt kept; version 1)" in r.stdout
    assert "  models/custom     <- custom/  (config.pbtxt kept; versions 1, 2)" in r.stdout
    assert "  models/auto       <- auto/  (no config (auto-complete); version 1)" in r.stdout
    assert "  models/helper     <- helper/  (config.pbtxt kept; version 1; files labels.txt)" in r.stdout
    assert "onnx: platform 'onnxruntime_onnx'" in r.stdout
    assert "writes tpbuild.toml" in r.stdout and "writes BUILD.toml" in r.stdout
    assert r.stdout.rstrip().endswith("dry run: nothing written")
    assert list(ws.root.iterdir()) == []


def test_second_import_into_the_same_directory_refuses_and_changes_nothing(tmp_path):
    src = tmp_path / "src"
    python_repository(src)
    ws = new_workspace(tmp_path)
    ws.run("import", str(src), check=True)
    before = tree(ws.root)
    (src / "add_sub/1/model.py").write_text("# changed since the first import\n")
    r = ws.run("import", str(src))
    assert r.returncode == 2
    assert ("error: models/add_sub/, models/auto/, models/custom/, models/decoupled/, models/helper/ already exist: "
            "tpbuild import never overwrites") in r.stderr
    assert tree(ws.root) == before
    assert not [p for p in (ws.root / "models").iterdir() if p.name.startswith(".")]  # no staging left behind


@pytest.mark.parametrize("make, message", [
    (lambda t: t / "missing", "missing: no such directory"),
    (lambda t: (t / "file").write_text("x") and t / "file", "file is a file: name the model repository"),
    (lambda t: (t / "empty").mkdir() or t / "empty", "empty is not a model repository"),
    (lambda t: write(t / "docs", {"README.md": "x", "notes/a.txt": "y"}) or t / "docs",
     "docs is not a model repository: none of its directories holds a config.pbtxt"),
    (lambda t: write(t / "one", {"config.pbtxt": 'backend: "python"\n', "1/model.py": "x = 1\n"}) or t / "one",
     "one looks like one model (it holds config.pbtxt or 1/model.py): name the repository that holds it"),
    (lambda t: os.symlink(t / "loop", t / "loop") or t / "loop", "loop is a symlink loop"),
])
def test_bad_src_exits_2_with_a_clear_message(tmp_path, make, message):
    src = make(tmp_path)
    ws = new_workspace(tmp_path)
    r = ws.run("import", str(src))
    assert r.returncode == 2, r.output
    assert r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert list(ws.root.iterdir()) == []


def test_models_the_build_would_refuse_are_listed_and_the_rest_imported(tmp_path):
    src = tmp_path / "src"
    write(src, {
        "good/1/model.py": AUTO_PY,
        "good/triton_python_backend_stub": "#!/bin/sh\nexec real_stub \"$@\"\n",  # a wrapper, not an ELF stub
        "noversion/config.pbtxt": 'backend: "python"\n',
        "noversion/1/model.py": AUTO_PY,
        "noversion/2/weights.bin": "not a model file",
        "badname/config.pbtxt": 'name: "other"\nbackend: "python"\n',
        "badname/1/model.py": AUTO_PY,
        "garbage/config.pbtxt": "this is { not pbtxt",
        "garbage/1/model.py": AUTO_PY,
        "tf/config.pbtxt": 'backend: "tensorflow"\n',
        "bad$name/1/model.py": AUTO_PY,
        "tf/1/model.savedmodel/saved_model.pb": "x",
    })
    ws = new_workspace(tmp_path)
    r = ws.run("import", str(src), check=True)
    assert "not imported: the build would refuse them" in r.stdout
    assert "noversion: version directory 2 without model.py: the server cannot load it" in r.stdout
    assert "badname: config.pbtxt: name: name 'other' differs from the model name 'badname'" in r.stdout
    assert "garbage: config.pbtxt does not parse as Triton's ModelConfig" in r.stdout
    assert "tf: backend 'tensorflow'" in r.stdout
    assert "bad$name: model name 'bad$name': Triton refuses the characters '$'" in r.stdout
    assert sorted(p.name for p in (ws.root / "models").iterdir()) == ["good"]
    assert "good/triton_python_backend_stub: " in r.stdout and "is not an ELF binary" in r.stdout
    assert "kept as a plain file, not a python_stub" in r.stdout
    assert 'files = ["triton_python_backend_stub"]' in (ws.root / "models/good/BUILD.toml").read_text()
    ws.build(check=True)
    assert ws.out("repository/good/triton_python_backend_stub").read_text().startswith("#!/bin/sh")

    shutil.rmtree(src / "good")
    r = new_workspace(tmp_path, "again").run("import", str(src))
    assert r.returncode == 2 and "nothing to import: every model of SRC was skipped or refused" in r.stderr


# -- what is reported, never followed or overwritten -------------------------------------------------


def test_symlinks_special_files_and_name_clashes_are_reported_never_followed(tmp_path):
    src = tmp_path / "src"
    python_repository(src)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside SRC\n")
    write(tmp_path / "elsewhere", {"config.pbtxt": 'backend: "python"\n', "1/model.py": AUTO_PY})
    write(src, {"common/shared.py": "SHARED = 1\n", "add_sub/1/BUILD.toml": "[x]\n",
                "a b/1/model.py": AUTO_PY, "a_b/1/model.py": AUTO_PY, "linked/1/model.py": AUTO_PY})
    (src / "add_sub/1/empty/deeper").mkdir(parents=True)
    os.symlink(secret, src / "linked/config.pbtxt")  # the model would mean something else without it
    os.symlink(secret, src / "add_sub/1/outside.txt")
    os.symlink("../../common/shared.py", src / "add_sub/1/shared.py")  # inside SRC: its content is imported
    os.symlink("..", src / "add_sub/1/loop")
    os.symlink("missing", src / "add_sub/dangling")
    os.mkfifo(src / "add_sub/fifo")
    os.symlink(tmp_path / "elsewhere", src / "escape")
    ws = new_workspace(tmp_path)
    r = ws.run("import", str(src), check=True)
    out = r.stdout
    problems = out.split("files not imported:\n", 1)[1]
    for line in (f"add_sub/1/outside.txt: a symlink leading out of SRC (to {secret}): not followed, not imported",
                 "add_sub/1/loop: a symlink loop (it leads to add_sub/, which holds it): not followed",
                 "add_sub/dangling: a dangling symlink or a symlink loop: not imported",
                 "add_sub/fifo: not a regular file (a FIFO, socket or device): not imported",
                 "add_sub/1/BUILD.toml: BUILD.toml is the name of tpbuild's manifests",
                 f"escape: a symlink leading out of SRC (to {tmp_path / 'elsewhere'}): not followed, not imported",
                 "a_b/: its package name 'a_b' is taken by a b/"):
        assert line in problems, out
    assert "common/: no config.pbtxt and no version directory: not a model, not imported" in out
    assert "linked: its config.pbtxt cannot be imported (see files not imported)" in out
    assert "add_sub/: empty directories are not kept (a build places files): 1/empty/, 1/empty/deeper/" in out
    assert 'model_name = "a b"' in (ws.root / "models/a_b/BUILD.toml").read_text()
    assert not (ws.root / "models/escape").exists()

    ws.build(check=True)
    built = tree(ws.out("repository"))
    assert built["add_sub/1/shared.py"] == (b"SHARED = 1\n", False)
    assert not [k for k in built if k.startswith("add_sub/") and k.split("/")[-1] in
                ("outside.txt", "dangling", "fifo", "BUILD.toml")]
    assert not [v for v in built.values() if v[0] == b"outside SRC\n"]
    assert sorted({k.split("/")[0] for k in built}) == ["a b", "add_sub", "auto", "custom", "decoupled", "helper"]


def _no_dac_override():
    """A command prefix under which root cannot read a mode-000 file (no CAP_DAC_OVERRIDE/READ_SEARCH)."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if shutil.which("setpriv") is None or subprocess.run([*prefix, "true"]).returncode != 0:
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE with setpriv")
    return prefix


def test_unreadable_files_are_reported_and_left_out(tmp_path):
    src = tmp_path / "src"
    python_repository(src)
    locked = src / "helper/1/data/locked.bin"
    locked.write_text("no one may read this")
    locked.chmod(0)
    ws = new_workspace(tmp_path)
    p = subprocess.run([*_no_dac_override(), sys.executable, "-m", "tpbuild", "-C", str(ws.root), "import", str(src)],
                       capture_output=True, text=True, env=ws.env)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout + p.stderr
    assert "helper/1/data/locked.bin: unreadable (Permission denied): not imported" in p.stdout
    assert not (ws.root / "models/helper/1/data/locked.bin").exists()
    assert (ws.root / "models/helper/1/data/suffix.txt").read_text() == "!\n"


# -- envs: normalised paths and the python_env suggestion --------------------------------------------


def fake_env(path: Path, files: dict[str, str]) -> None:
    """A tarball with an env's layout and metadata (nothing here runs it; the build only places it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as t:
        for name, text in {"bin/activate": "# activate\n", **files}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def metadata(name: str, version: str, *requires: str) -> str:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + \
        "".join(f"Requires-Dist: {r}\n" for r in requires)


def conda_json(name: str, version: str, depends=(), files=()) -> str:
    return json.dumps({"name": name, "version": version, "depends": list(depends), "files": list(files),
                       "channel": "https://conda.anaconda.org/conda-forge/linux-64"})


def env_config(value: str) -> str:
    return STRING_OUT_CONFIG + f'parameters {{ key: "EXECUTION_ENV_PATH" value {{ string_value: "{value}" }} }}\n'


def test_env_paths_are_normalised_where_needed_and_a_python_env_is_suggested(tmp_path):
    src = tmp_path / "src"
    site = "lib/python3.10/site-packages"
    fake_env(src / "envs/conda.tar.gz", {  # shared by two models, outside both
        "conda-meta/python-3.10.14-h0.json": conda_json("python", "3.10.14", ["libzlib >=1.2"]),
        "conda-meta/libzlib-1.3-h0.json": conda_json("libzlib", "1.3"),
        "conda-meta/pip-24.0-h0.json": conda_json("pip", "24.0", ["python >=3.8"]),
        "conda-meta/numpy-1.26.4-h0.json": conda_json("numpy", "1.26.4", ["python >=3.10,<3.11.0a0", "libzlib"],
                                                      [f"{site}/numpy-1.26.4.dist-info/METADATA"]),
        f"{site}/numpy-1.26.4.dist-info/METADATA": metadata("numpy", "1.26.4"),
        f"{site}/tabulate-0.9.0.dist-info/METADATA": metadata("tabulate", "0.9.0"),
        f"{site}/tabulate-0.9.0.dist-info/REQUESTED": "",
    })
    venv_files = {"pyvenv.cfg": "home = /usr/bin\nversion = 3.11.2\n"}
    site = "lib/python3.11/site-packages"
    venv_files.update({  # no REQUESTED marks: the top level is what nothing else requires
        f"{site}/requests-2.31.0.dist-info/METADATA": metadata("requests", "2.31.0", "idna (<4,>=2.5)",
                                                               "urllib3<3", 'PySocks!=1.5.7; extra == "socks"'),
        f"{site}/idna-3.7.dist-info/METADATA": metadata("idna", "3.7"),
        f"{site}/urllib3-2.2.1.dist-info/METADATA": metadata("urllib3", "2.2.1"),
        f"{site}/pip-24.0.dist-info/METADATA": metadata("pip", "24.0"),
    })
    fake_env(src / "subenv/envs/env.tar.gz", venv_files)
    write(src, {
        "subenv/config.pbtxt": "# keep me\n" + env_config("$$TRITON_MODEL_DIRECTORY/envs/env.tar.gz"),
        "subenv/envs/README": "the env lives here\n",
        "subenv/1/model.py": MINIMAL_PY,
        "shared1/config.pbtxt": env_config("$$TRITON_MODEL_DIRECTORY/../envs/conda.tar.gz"),
        "shared1/1/model.py": MINIMAL_PY,
        "shared2/config.pbtxt": env_config("$$TRITON_MODEL_DIRECTORY/../envs/conda.tar.gz"),
        "shared2/1/model.py": MINIMAL_PY,
        "absolute/config.pbtxt": env_config("/opt/envs/x.tar.gz"),
        "absolute/1/model.py": MINIMAL_PY,
        # An unpacked env directory (r23.07+): kept whole, its bytecode too; the version's is left out.
        "direnv/config.pbtxt": env_config("$$TRITON_MODEL_DIRECTORY/env"),
        "direnv/1/model.py": MINIMAL_PY,
        "direnv/1/__pycache__/model.cpython-311.pyc": "stale",
        "direnv/env/pyvenv.cfg": "home = /usr/local/bin\nversion_info = 3.12.1.final.0\n",
        "direnv/env/lib/python3.12/site-packages/six-1.16.0.dist-info/METADATA": metadata("six", "1.16.0"),
        "direnv/env/lib/python3.12/site-packages/six-1.16.0.dist-info/REQUESTED": "",
        "direnv/env/lib/python3.12/site-packages/__pycache__/six.cpython-312.pyc": "kept",
        "venvdir/config.pbtxt": env_config("$$TRITON_MODEL_DIRECTORY/venv"),
        "venvdir/1/model.py": MINIMAL_PY,
        "venvdir/venv/pyvenv.cfg": "home = /usr/bin\n",
    })
    (src / "venvdir/venv/bin").mkdir()
    os.symlink(sys.executable, src / "venvdir/venv/bin/python3")  # as `python -m venv` makes it
    ws = new_workspace(tmp_path)
    r = ws.run("import", str(src), check=True)
    notes = r.stdout.split("notes (where the built repository differs from SRC, and why):\n", 1)[1]
    assert ("subenv/config.pbtxt: EXECUTION_ENV_PATH '$$TRITON_MODEL_DIRECTORY/envs/env.tar.gz' normalised to "
            "'$$TRITON_MODEL_DIRECTORY/env.tar.gz': the env is placed at the model root (it was at envs/env.tar.gz); "
            "this config is no longer byte-identical to SRC") in notes
    assert ("shared1/config.pbtxt: EXECUTION_ENV_PATH '$$TRITON_MODEL_DIRECTORY/../envs/conda.tar.gz' "
            "normalised") in notes
    assert ("absolute/config.pbtxt: EXECUTION_ENV_PATH '/opt/envs/x.tar.gz': not inside the model directory; kept "
            "as written") in notes
    assert ("venvdir: its env directory venv/ holds symlinks that cannot be imported (venv/bin/python3; a venv's "
            "python links to its base interpreter)") in r.stdout
    assert not (ws.root / "models/venvdir").exists()

    subenv = (ws.root / "models/subenv/BUILD.toml").read_text()
    assert 'files = ["envs"]\nenv = "env.tar.gz"\n' in subenv
    assert ('# [python_env.subenv_env]\n# python = "3.11"\n# manager = "venv"\n# interpreter = "/usr/bin/python3.11"\n'
            '# pip = ["requests==2.31.0"]\n') in subenv
    shared = (ws.root / "models/shared1/BUILD.toml").read_text()
    assert ('# [python_env.shared1_env]\n# python = "3.10"\n# manager = "conda"\n# conda = ["numpy==1.26.4"]\n'
            '# channels = ["conda-forge"]\n# pip = ["tabulate==0.9.0"]\n') in shared
    assert "env =" not in (ws.root / "models/absolute/BUILD.toml").read_text()
    direnv = (ws.root / "models/direnv/BUILD.toml").read_text()
    assert 'env = "env"\n' in direnv and "files" not in direnv
    assert ('# python = "3.12"\n# manager = "venv"\n# interpreter = "/usr/local/bin/python3.12"\n'
            '# pip = ["six==1.16.0"]\n') in direnv
    assert "direnv/: 1 bytecode file(s) (__pycache__, *.pyc) left out" in notes

    ws.build(check=True)
    repo = ws.out("repository")
    # Rewritten in place: the comment and the layout stay, only the value changed.
    assert (repo / "subenv/config.pbtxt").read_text() == (src / "subenv/config.pbtxt").read_text().replace(
        "/envs/env.tar.gz", "/env.tar.gz")
    assert (repo / "subenv/env.tar.gz").read_bytes() == (src / "subenv/envs/env.tar.gz").read_bytes()
    assert sorted(p.name for p in (repo / "subenv/envs").iterdir()) == ["README"]
    for m in ("shared1", "shared2"):
        assert (repo / m / "conda.tar.gz").read_bytes() == (src / "envs/conda.tar.gz").read_bytes()
    assert (repo / "absolute/config.pbtxt").read_bytes() == (src / "absolute/config.pbtxt").read_bytes()
    assert tree(repo / "direnv") == tree(src / "direnv", skip=("1/__pycache__",))

    # config = false (what an auto-completed model becomes) cannot take an env: it has no config to name it in.
    manifest = ws.root / "models/absolute/BUILD.toml"
    manifest.write_text(manifest.read_text().replace('config = "config.pbtxt"', 'config = false\nenv = "x.tar.gz"'))
    (manifest.parent / "x.tar.gz").write_bytes(b"")
    r = ws.build()
    assert r.returncode == 2 and "an env needs a config.pbtxt to name it in: remove config = false" in r.stderr


# -- options ------------------------------------------------------------------------------------------


def test_inline_config_renders_the_same_config(tmp_path):
    from tpbuild_triton import modelconfig

    src = tmp_path / "src"
    python_repository(src)
    ws = new_workspace(tmp_path)
    r = ws.run("import", str(src), "--inline-config", check=True)
    assert "add_sub/config.pbtxt: now an inline table in BUILD.toml" in r.stdout
    manifest = (ws.root / "models/add_sub/BUILD.toml").read_text()
    assert "[triton_model.add_sub.config]\n" in manifest and 'config = "config.pbtxt"' not in manifest
    assert 'input = [{ name = "INPUT0", data_type = "TYPE_FP32", dims = [4] }' in manifest
    assert not (ws.root / "models/add_sub/config.pbtxt").exists()
    assert "config = false" in (ws.root / "models/auto/BUILD.toml").read_text()
    ws.build(check=True)
    for m in ("add_sub", "custom", "decoupled", "helper"):
        built = modelconfig.parse_text(ws.out(f"repository/{m}/config.pbtxt").read_text(), m)
        original = modelconfig.parse_text((src / m / "config.pbtxt").read_text(), m)
        original.name = m
        assert built == original, m


def test_move_empties_src_and_builds_the_same_repository(tmp_path):
    src = tmp_path / "src"
    python_repository(src)
    write(src, {"common/x.txt": "shared\n", "subenv/1/model.py": MINIMAL_PY,
                "subenv/config.pbtxt": env_config("$$TRITON_MODEL_DIRECTORY/envs/env.tar.gz")})
    fake_env(src / "subenv/envs/env.tar.gz", {})
    os.symlink("../../common/x.txt", src / "helper/1/linked.txt")
    os.symlink("../../add_sub/1/model.py", src / "auto/1/same.py")  # to a file that is moved
    expected = tree(src, skip=("onnx/", "common/", "subenv/envs/"))
    expected["subenv/env.tar.gz"] = (src / "subenv/envs/env.tar.gz").read_bytes(), False
    expected["subenv/config.pbtxt"] = env_config("$$TRITON_MODEL_DIRECTORY/env.tar.gz").encode(), False
    ws = new_workspace(tmp_path)
    ws.run("import", str(src), "--move", check=True)
    # Moved: the models' plain files (a rewritten config too), and the directories that emptied. Left: what
    # was not imported, the symlink (its target was copied), and the file it leads to.
    left = sorted(p.relative_to(src).as_posix() for p in src.rglob("*"))
    assert left == ["auto", "auto/1", "auto/1/same.py", "common", "common/x.txt", "helper", "helper/1",
                    "helper/1/linked.txt",
                    "onnx", "onnx/1", "onnx/1/model.onnx", "onnx/config.pbtxt"]
    ws.build(check=True)
    assert tree(ws.out("repository")) == expected


def test_existing_workspace_keeps_its_files_and_gets_a_hint(ws, tmp_path):
    src = tmp_path / "src"
    python_repository(src)
    ws.write("BUILD.toml", "# mine\n")
    r = ws.run("import", str(src), "--into", "legacy/models", "--triton-version", "24.10", check=True)
    assert (ws.root / "tpbuild.toml").read_text() == "" and (ws.root / "BUILD.toml").read_text() == "# mine\n"
    assert 'models = ["//legacy/models/..."]' in r.stdout
    assert 'tpbuild.toml exists and is left as it is: set [triton] version = "24.10"' in r.stdout
    assert (ws.root / "legacy/models/add_sub/BUILD.toml").is_file()
    assert "Built 5/5 targets" in ws.build("//legacy/...", check=True).stdout

    for args, message in ((["--into", str(tmp_path)], "outside the workspace"),
                          (["--into", "tpbuild-out/x"], "inside tpbuild-out/"),
                          (["--into", "has space"], "'has space' cannot be part of a package path"),
                          (["--triton-version", "24.1"], "--triton-version: '24.1' is not a Triton release")):
        r = ws.run("import", str(src), *args)
        assert r.returncode == 2 and message in r.stderr, r.stderr


def test_a_failure_while_writing_undoes_everything_moves_included(tmp_path):
    """SRC changing under the import (a file gone between planning and copying) cannot be timed through the
    CLI, so the writer runs in-process here, on a real plan of a real SRC."""
    from tpbuild_triton import importer, importplan

    src = tmp_path / "src"
    python_repository(src)
    before = tree(src)
    plan = importplan.plan(src, "src")
    into = tmp_path / "ws/models"
    (tmp_path / "ws").mkdir()
    gone = next(f.src for m in plan.models if m.name == "helper" for f in m.files if f.dest == "labels.txt")
    data = gone.read_bytes()
    gone.unlink()  # after add_sub, auto and decoupled were moved
    with pytest.raises(FileNotFoundError):
        importer.write(plan, into, {tmp_path / "ws/BUILD.toml": "x"}, move=True)
    gone.write_bytes(data)
    assert tree(src) == before
    assert list((tmp_path / "ws").iterdir()) == []  # models/ was made by the import: removed with the rest
