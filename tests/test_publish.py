"""`tpbuild publish` through the real CLI, to an S3-compatible server on loopback (moto's server, whose
request recorder counts the PUTs) and to a local directory: incremental uploads, --prune, a publish
killed midway and re-run, tampering found by --verify and repaired, and real Triton servers reading the
published repository (from S3 and from the directory) and reloading an edited model through --reload."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

MANIFEST = ".tpbuild-publish.json"

TOML = '[triton]\nversion = "24.10"\npython = "3.11"\n'

MODEL = """
from helper import FACTOR
from tpbuild_runtime import BaseTritonPythonModel


class TritonPythonModel(BaseTritonPythonModel):
    def infer(self, inputs):
        return {"Y": inputs["X"] * FACTOR}
"""

BUILD = """
[triton_model.{name}]
versions = ["1"]
files = ["labels.txt"]

[triton_model.{name}.config]
max_batch_size = 4
input = [{{ name = "X", data_type = "TYPE_FP32", dims = [1] }}]
output = [{{ name = "Y", data_type = "TYPE_FP32", dims = [1] }}]
"""


def add_model(ws, name: str, factor: int = 2) -> None:
    ws.write(f"models/{name}/BUILD.toml", BUILD.format(name=name))
    ws.write(f"models/{name}/1/model.py", MODEL)
    ws.write(f"models/{name}/1/helper.py", f"FACTOR = {factor}\n")
    ws.write(f"models/{name}/labels.txt", f"labels of {name}\n")


@pytest.fixture
def small(ws):
    """Two models of five files each (model.py, a helper, tpbuild_runtime.py, a root file, config.pbtxt)."""
    ws.write("tpbuild.toml", TOML)
    ws.write("BUILD.toml", '[model_repository.repository]\nmodels = ["//models/..."]\n')
    add_model(ws, "a", 2)
    add_model(ws, "b", 3)
    return ws


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto's S3 server (its own process) on 127.0.0.1, with the AWS environment boto3 and Triton read."""
    import subprocess
    import sys
    import urllib.request

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    tmp = tmp_path_factory.mktemp("moto")
    port = _free_port()
    log = open(tmp / "moto.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ,
                            "MOTO_RECORDER_FILEPATH": str(tmp / "recording")})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp / "moto.log").read_text()
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class S3Dest:
    """A fresh bucket on the moto server; DEST is s3://BUCKET/models/prod."""

    kind = "s3"

    def __init__(self, endpoint: str, name: str):
        self.endpoint = endpoint
        self.bucket = name
        self.prefix = "models/prod"
        self.url = f"s3://{self.bucket}/{self.prefix}"
        self.args = ["--endpoint-url", endpoint]
        self.env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
        self.s3 = boto3.client("s3", endpoint_url=endpoint)
        self.s3.create_bucket(Bucket=self.bucket)

    @property
    def triton_repository(self) -> str:
        return f"s3://{self.endpoint}/{self.bucket}/{self.prefix}"  # Triton's syntax for host and port

    def objects(self) -> dict[str, dict]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + "/"):
            for o in page.get("Contents", ()):
                out[o["Key"][len(self.prefix) + 1:]] = o
        return out

    def files(self) -> dict[str, bytes]:
        """Every object of the repository but the manifest, with its bytes."""
        return {k: self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{k}")["Body"].read()
                for k in self.objects() if k != MANIFEST}

    def manifest(self) -> dict:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{MANIFEST}")["Body"].read())

    def tamper(self, path: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{path}", Body=data)

    def put_foreign(self, path: str, data: bytes) -> None:
        self.tamper(path, data)

    def remove_foreign(self, path: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{path}")

    def start_counting(self) -> None:
        _moto_api(self.endpoint, "reset-recording")
        _moto_api(self.endpoint, "start-recording")

    def writes(self) -> list[str]:
        """Paths of the repository that got a PUT since start_counting (moto's request recorder)."""
        _moto_api(self.endpoint, "stop-recording")
        rec = _moto_api(self.endpoint, "download-recording", method="GET").decode()
        found = []
        for line in filter(None, rec.splitlines()):
            r = json.loads(line)
            path = r.get("url", "").split("?", 1)[0]
            marker = f"/{self.bucket}/{self.prefix}/"
            if r.get("method") == "PUT" and marker in path:
                found.append(path.split(marker, 1)[1])
        return found


def _moto_api(endpoint: str, what: str, method: str = "POST") -> bytes:
    import urllib.request

    req = urllib.request.Request(f"{endpoint}/moto-api/recorder/{what}", method=method,
                                 data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


class DirDest:
    kind = "dir"

    def __init__(self, root: Path):
        self.root = root
        self.url = str(root)
        self.args: list[str] = []
        self.env: dict[str, str] = {}
        self._before: dict[str, tuple] = {}

    @property
    def triton_repository(self) -> Path:
        return self.root

    def _walk(self) -> dict[str, Path]:
        return {str(p.relative_to(self.root)): p for p in sorted(self.root.rglob("*"))
                if not p.is_dir() and not p.name.startswith(".tpbuild-")}

    def files(self) -> dict[str, bytes]:
        return {k: p.read_bytes() for k, p in self._walk().items()}

    def manifest(self) -> dict:
        return json.loads((self.root / MANIFEST).read_text())

    def tamper(self, path: str, data: bytes) -> None:
        (self.root / path).write_bytes(data)

    def put_foreign(self, path: str, data: bytes) -> None:
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        self.tamper(path, data)

    def remove_foreign(self, path: str) -> None:
        (self.root / path).unlink()

    def start_counting(self) -> None:
        self._before = {k: (p.stat().st_ino, p.stat().st_mtime_ns) for k, p in self._walk().items()}

    def writes(self) -> list[str]:
        """Files written since start_counting: publish renames every file it writes into place, so a
        written file has a new inode."""
        return [k for k, p in self._walk().items() if self._before.get(k) != (p.stat().st_ino, p.stat().st_mtime_ns)]


@pytest.fixture(params=["s3", "dir"])
def dest(request, tmp_path):
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto")
        return S3Dest(endpoint, f"tpbuild-{os.getpid()}-{time.monotonic_ns()}")
    return DirDest(tmp_path / "published")


def publish(ws, dest, *extra: str, check: bool = True, env: dict | None = None):
    report = ws.root.parent / "publish-report.json"
    if report.exists():
        report.unlink()
    r = ws.run("publish", "//:repository", dest.url, *dest.args, "--report", str(report), *extra,
               env={**dest.env, **(env or {})})
    if check:
        assert r.returncode == 0, r.output
    r.report = json.loads(report.read_text()) if report.exists() else None
    return r


def verify(ws, dest):
    return ws.run("publish", "//:repository", dest.url, *dest.args, "--verify", env=dest.env)


def uploaded(r) -> list[str]:
    return [f["path"] for f in r.report["files"]["uploaded"]]


def _manifest_files(m: dict) -> dict:
    return {p: {k: v for k, v in c.items() if k != "tag"} for p, c in m["files"].items()}


def assert_manifest_true(dest) -> None:
    """Every file the manifest claims is in DEST with the claimed SHA-256 and size."""
    import hashlib

    files = dest.files()
    for path, claim in dest.manifest()["files"].items():
        if claim.get("pending"):
            continue
        assert path in files, f"the manifest claims {path}, which DEST does not hold"
        assert hashlib.sha256(files[path]).hexdigest() == claim["sha256"] and len(files[path]) == claim["size"], path


# -- tests --------------------------------------------------------------------------------------------

def test_first_publish_order_and_manifest(small, dest):
    r = publish(small, dest)
    names = uploaded(r)
    # Model by model. New models: config.pbtxt first (Triton auto-completes a model directory without
    # one and loads it with an empty config), then the root file, then the version directory with the
    # model file first (a version directory without it hangs a polling server).
    assert names == ["a/config.pbtxt", "a/labels.txt", "a/1/model.py", "a/1/helper.py", "a/1/tpbuild_runtime.py",
                     "b/config.pbtxt", "b/labels.txt", "b/1/model.py", "b/1/helper.py", "b/1/tpbuild_runtime.py"]
    assert "10 uploaded" in r.stdout and "0 kept" in r.stdout and "0 deleted" in r.stdout
    built = {p: (small.out("repository") / p).read_bytes() for p in names}
    assert dest.files() == built
    m = dest.manifest()
    assert m["format"] == "tpbuild-publish v1" and m["label"] == "//:repository"
    assert sorted(m["files"]) == sorted(names) and not any(c.get("pending") for c in m["files"].values())
    assert_manifest_true(dest)
    assert r.report["bytes"]["uploaded"] == sum(len(b) for b in built.values())

    again = publish(small, dest)  # nothing changed: nothing written
    assert uploaded(again) == [] and "10 kept" in again.stdout


def test_one_model_edit_publishes_only_its_changed_files(small, dest):
    publish(small, dest)
    small.write("models/a/1/helper.py", "FACTOR = 5\n")
    small.write("models/a/labels.txt", "new labels of a\n")
    small.write("models/a/BUILD.toml", BUILD.format(name="a").replace("max_batch_size = 4", "max_batch_size = 8"))
    dest.start_counting()
    r = publish(small, dest)
    writes = dest.writes()
    # A model DEST holds: its version directory first, then the root file, config.pbtxt last.
    assert uploaded(r) == ["a/1/helper.py", "a/labels.txt", "a/config.pbtxt"], r.output
    # What the destination actually received (moto's request log / new inodes), the manifest aside.
    assert sorted(w for w in writes if w != MANIFEST) == ["a/1/helper.py", "a/config.pbtxt", "a/labels.txt"], writes
    assert dest.files()["a/1/helper.py"] == b"FACTOR = 5\n"
    assert "3 uploaded" in r.stdout and "7 kept" in r.stdout
    assert_manifest_true(dest)


def test_prune_removes_a_deleted_model_and_nothing_else(small, dest):
    publish(small, dest)
    dest.put_foreign("notes/readme.txt", b"not tpbuild's")
    dest.put_foreign("b/1/__pycache__/helper.cpython-311.pyc", b"what a server importing in place writes")
    import shutil

    shutil.rmtree(small.root / "models/b")
    r = publish(small, dest)
    assert "b/1/model.py" in dest.files(), "without --prune nothing is deleted"
    assert "run with --prune" in r.stderr and "models: b" in r.stderr
    r = publish(small, dest, "--prune")
    # The model file is the last file deleted from its version directory; config.pbtxt last of all.
    assert [f["path"] for f in r.report["files"]["deleted"]] == \
        ["b/1/helper.py", "b/1/tpbuild_runtime.py", "b/1/model.py", "b/labels.txt", "b/config.pbtxt"]
    files = dest.files()
    assert not any(p.startswith("b/") for p in files), files.keys()  # __pycache__ went with its directory
    assert files["notes/readme.txt"] == b"not tpbuild's"  # not published by tpbuild: never deleted
    if dest.kind == "dir":
        assert not (dest.root / "b").exists()
    assert sorted(dest.manifest()["files"]) == ["a/1/helper.py", "a/1/model.py", "a/1/tpbuild_runtime.py",
                                                "a/config.pbtxt", "a/labels.txt"]
    v = verify(small, dest)
    assert v.returncode == 1 and "notes/readme.txt: in DEST, not published by tpbuild" in v.stdout


def test_prune_never_leaves_a_version_without_its_model_file(small, dest):
    """A version directory that holds a file tpbuild did not publish cannot go whole: the model stays."""
    publish(small, dest)
    dest.put_foreign("b/1/NOTES.txt", b"someone's notes")
    import shutil

    shutil.rmtree(small.root / "models/b")
    r = publish(small, dest, "--prune")
    assert "b/1 holds files tpbuild did not publish (b/1/NOTES.txt)" in r.stderr and "model b in place" in r.stderr
    assert r.report["files"]["deleted"] == []
    assert {"b/1/model.py", "b/1/helper.py", "b/config.pbtxt", "b/1/NOTES.txt"} <= set(dest.files())
    dest.remove_foreign("b/1/NOTES.txt")
    r = publish(small, dest, "--prune")
    assert not any(p.startswith("b/") for p in dest.files())


def test_killed_publish_reruns_to_a_clean_result(small, dest, tmp_path):
    publish(small, dest)
    small.write("models/a/1/helper.py", "FACTOR = 7\n")
    small.write("models/b/1/helper.py", "FACTOR = 8\n")
    add_model(small, "c", 4)
    # Uploads: a/1/helper.py, b/1/helper.py, c/config.pbtxt, c/labels.txt, c/1/model.py, c/1/helper.py, ...;
    # killed after the fourth, with the new model half there.
    r = publish(small, dest, check=False, env={"TPBUILD_PUBLISH_TEST_KILL_AFTER": "4"})
    assert r.returncode == -9, r.output
    half = dest.files()
    assert "c/labels.txt" in half and "c/1/model.py" not in half and half["a/1/helper.py"] == b"FACTOR = 7\n"
    assert_manifest_true(dest)
    pending = sorted(p for p, c in dest.manifest()["files"].items() if c.get("pending"))
    assert pending, "the files being replaced are not vouched for while the publish runs"
    r = publish(small, dest)
    assert "changed behind" not in r.stderr  # an interrupted publish is not tampering
    # The same DEST as a clean publish of this build into an empty destination.
    clean = S3Dest(dest.endpoint, dest.bucket + "-clean") if dest.kind == "s3" else DirDest(tmp_path / "clean")
    publish(small, clean)
    assert dest.files() == clean.files()
    assert _manifest_files(dest.manifest()) == _manifest_files(clean.manifest())
    if dest.kind == "dir":
        assert sorted(p.name for p in dest.root.iterdir()) == sorted(p.name for p in clean.root.iterdir())


def test_tampered_file_found_by_verify_and_repaired(small, dest):
    publish(small, dest)
    v = verify(small, dest)
    assert v.returncode == 0 and "matches //:repository: 10 files" in v.stdout, v.output
    dest.tamper("a/1/helper.py", b"FACTOR = 666  # edited in production\n")
    v = verify(small, dest)
    assert v.returncode == 1, v.output
    assert "a/1/helper.py: changed in DEST" in v.stdout and "1 difference(s)" in v.stdout
    r = publish(small, dest)
    assert "a/1/helper.py in DEST was changed behind tpbuild's back" in r.stderr
    assert uploaded(r) == ["a/1/helper.py"]
    assert dest.files()["a/1/helper.py"] == b"FACTOR = 2\n"
    v = verify(small, dest)
    assert v.returncode == 0, v.output
    # A local build that moved on is a difference too.
    small.write("models/b/labels.txt", "changed\n")
    v = verify(small, dest)
    assert v.returncode == 1 and "b/labels.txt: published content differs from the build" in v.stdout


def test_dry_run_writes_nothing(small, dest):
    r = publish(small, dest, "--dry-run")
    assert "would upload a/1/model.py" in r.stdout and "Dry run, would publish" in r.stdout
    assert dest.files() == {}
    if dest.kind == "dir":
        assert not (dest.root / MANIFEST).exists()


def test_bad_input_exits_2(small, tmp_path):
    for args, needle in [
        (["//models/a", str(tmp_path / "d")], "is a triton_model, not a model_repository"),
        (["//models/...", str(tmp_path / "d")], "not a pattern"),
        (["//:repository", "gs://bucket/x"], "s3://bucket/prefix or a directory"),
        (["//:repository", "s3:///x"], "names no bucket"),
        (["//:repository", str(tmp_path / "d"), "--verify", "--prune"], "cannot be combined"),
        (["//:repository", str(small.root / "tpbuild-out/deploy")], "inside"),
    ]:
        r = small.run("publish", *args)
        assert r.returncode == 2 and needle in r.stderr, (args, r.output)
    assert not (tmp_path / "d").exists() and not (small.root / "tpbuild-out/deploy").exists()
    # An unwritable directory: exit 1 naming it, no traceback.
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = small.run("publish", "//:repository", str(blocker / "sub"))
    assert r.returncode == 1 and str(blocker) in r.stderr, r.output


# -- with a real Triton server ------------------------------------------------------------------------

server = pytest.importorskip("tpbuild_triton.server")


def _infer(srv, model: str, x: float) -> float:
    return float(srv.infer(model, {"X": np.array([[x]], dtype=np.float32)})["Y"][0][0])


@pytest.mark.server
def test_examples_published_are_served_by_triton(examples_built, moto, tmp_path):
    """The examples (env tarball included), built once, published to S3 and to a directory, each served."""
    examples_built.build("//:repository", check=True)
    for dest in (S3Dest(moto, f"tpbuild-examples-{os.getpid()}"), DirDest(tmp_path / "published")):
        r = publish(examples_built, dest)
        assert any(p.endswith("tabulate.tar.gz") for p in uploaded(r))
        with server.TritonServer(dest.triton_repository, log_path=tmp_path / f"{dest.kind}.log") as srv:
            ready = srv.wait_ready(["add_sub", "text_transform", "labeler", "table"], timeout=180)
            assert all(ready.values()), (dest.kind, ready, srv.log_text()[-4000:])
            out = srv.infer("add_sub", {"INPUT0": np.array([[1, 2, 3, 4]], dtype=np.float32),
                                        "INPUT1": np.array([[10, 20, 30, 40]], dtype=np.float32)})
            np.testing.assert_allclose(out["OUTPUT0"], [[11, 22, 33, 44]])
            table = srv.infer("table", {"VALUES": np.array([1.5, 2.0], dtype=np.float32)})["TABLE"][0].decode()
            assert "1.5" in table  # tabulate, from the env tarball the server got from DEST


@pytest.mark.server
def test_reload_on_a_server_in_explicit_mode(small, dest):
    publish(small, dest)
    # exit_timeout: stopping waits for every model to unload, and r24.10 never unloads one whose reload
    # failed (b, at the end): the default would hold the test 20 s more, until the server is killed.
    with server.TritonServer(dest.triton_repository, explicit_models=True, exit_timeout=1,
                             log_path=small.root.parent / "server.log") as srv:
        srv.load("a")
        srv.load("b")
        assert _infer(srv, "a", 1.5) == 3.0
        small.write("models/a/1/helper.py", "FACTOR = 10\n")
        r = publish(small, dest, "--reload", srv.http_url)
        assert "loaded a on" in r.stdout and "READY" in r.stdout, r.output
        assert [x["model"] for x in r.report["reload"]] == ["a"]  # b did not change
        assert _infer(srv, "a", 1.5) == 15.0
        assert _infer(srv, "b", 1.5) == 4.5
        # A model that cannot load: exit 1, naming it and the server's message.
        small.write("models/b/1/helper.py", "raise RuntimeError('helper is broken')\n")
        r = publish(small, dest, "--reload", srv.http_url, check=False)
        assert r.returncode == 1, r.output
        assert "model 'b' failed to load" in r.stderr and "helper is broken" in r.stderr
        assert r.report["reload"][0]["ok"] is False


def _wait_idle(srv, timeout: float = 60) -> None:
    """Until no load is in flight for a few polls. Loading a model from a directory writes __pycache__
    into its version directory, which the next poll sees as a change and reloads once; removing a model
    while the server loads it leaves it LOADING (see README, Deploying), so the publish waits for that."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        log = srv.log_text()
        busy = log.count('"loading: ') > log.count("successfully loaded") + log.count("failed to load")
        quiet = 0 if busy else quiet + 1
        time.sleep(1)
    assert quiet >= 3, srv.log_text()[-3000:]


@pytest.mark.server
def test_live_server_in_poll_mode_follows_a_publish(small, dest):
    """A server polling DEST picks up an edit, a new model and a pruned one; the new model is never
    loaded before it is whole (once, with its config), and nothing is left LOADING."""
    import shutil

    publish(small, dest)
    with server.TritonServer(dest.triton_repository, poll_seconds=1,
                             log_path=small.root.parent / "poll.log") as srv:
        assert all(srv.wait_ready(["a", "b"], timeout=120).values()), srv.log_text()[-3000:]
        _wait_idle(srv)
        small.write("models/a/1/helper.py", "FACTOR = 10\n")
        add_model(small, "c", 4)
        shutil.rmtree(small.root / "models/b")
        publish(small, dest, "--prune")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            states = srv.model_states()
            done = (states.get("c", ("",))[0] == "READY" and states.get("b", ("",))[0] != "READY"
                    and _infer(srv, "a", 1.5) == 15.0)
            if done:
                break
            time.sleep(0.5)
        assert done, (srv.model_states(), srv.log_text()[-4000:])
        assert _infer(srv, "c", 1.5) == 6.0
        assert [i["name"] for i in srv.model_config("c")["input"]] == ["X"]
        assert srv.log_text().count("successfully loaded 'c'") == 1, srv.log_text()[-4000:]
        assert not any(state == "LOADING" for state, _ in srv.model_states().values())


def test_large_file_goes_up_multipart_and_stays(small, request, tmp_path):
    """A file above the 64 MiB threshold goes up in parts through boto3's transfer manager (its ETag
    says how many) and is kept by the next publish like any other."""
    dest = S3Dest(request.getfixturevalue("moto"), f"tpbuild-big-{os.getpid()}-{time.monotonic_ns()}")
    big = small.root / "models/a/weights.bin"
    with open(big, "wb") as f:
        for i in range(65):
            f.write(bytes([i]) * (1 << 20))
    small.write("models/a/BUILD.toml", BUILD.format(name="a").replace('files = ["labels.txt"]',
                                                                      'files = ["labels.txt", "weights.bin"]'))
    r = publish(small, dest)
    assert "a/weights.bin" in uploaded(r)
    etag = dest.objects()["a/weights.bin"]["ETag"].strip('"')
    assert etag.endswith("-2"), etag
    assert dest.manifest()["files"]["a/weights.bin"]["size"] == 65 << 20
    again = publish(small, dest)
    assert uploaded(again) == [] and verify(small, dest).returncode == 0


def test_terminal_gets_a_progress_line_instead_of_file_lines(small, tmp_path):
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    p = subprocess.run([sys.executable, "-m", "tpbuild", "-C", str(small.root), "publish", "//:repository",
                        str(tmp_path / "d")], stdout=subprocess.PIPE, stderr=slave, env=small.env, timeout=300)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    out = p.stdout.decode()
    assert p.returncode == 0, out + err.decode()
    assert "[1/10]" in err.decode() and "a/config.pbtxt" in err.decode()
    assert "uploaded a/" not in out and "10 uploaded" in out


def test_unreadable_manifest_trusts_nothing_and_deletes_nothing(small, tmp_path):
    dest = DirDest(tmp_path / "d")
    publish(small, dest)
    (dest.root / MANIFEST).write_text("{not json")
    import shutil

    shutil.rmtree(small.root / "models/b")
    r = publish(small, dest, "--prune")
    assert "the manifest does not parse" in r.stderr
    assert len(uploaded(r)) == 5 and r.report["files"]["deleted"] == []  # a's files again; b's not known
    assert "b/1/model.py" in dest.files()
    assert_manifest_true(dest)
