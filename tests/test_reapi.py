"""Remote execution and the REAPI remote cache, through the real CLI, against a real BuildGrid 0.9.1
cluster (PostgreSQL, BuildGrid, two `tpbuild worker`s) that `tools/reapi-cluster.sh` starts on
127.0.0.1 once for this module.

Faults are real: a worker is SIGKILLed while its action runs, the executor's port has nothing
listening (a stopped server), an action asks for a platform no worker offers. One test speaks the
protocol directly: a remote result naming blobs the CAS lacks cannot be made through the CLI (the
server only stores what it was given), so it writes such an ActionResult into the real ActionCache
with the REAPI API, then drives the client.

The examples test builds the examples as they are, env included (pip installs numpy and tabulate on
the worker), and compares with a local build of them (the run's clean build, shared with the other
tests that need the examples built: see `conftest.built_examples`): it takes minutes, and is marked
slow like the other env tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, built_examples, copy_examples
from test_remote_cache import tree

SCRIPT = REPO / "tools" / "reapi-cluster.sh"
IMAGE = "docker://nvcr.io/nvidia/tritonserver:24.10-py3"  # what the examples' envs default to ([triton] 24.10)
IN_PROCESS = {"TritonConfig", "TritonRuntime", "ModelDirectory", "ModelRepository", "EnvSpec", "ImportSpec"}


@dataclass
class Cluster:
    endpoint: str
    state: Path


@pytest.fixture(scope="module")
def cluster():
    state = Path(tempfile.mkdtemp(prefix="tpbuild-reapi-test-"))  # not below pytest's 0700 dirs: postgres reads it
    env = {**os.environ, "TPBUILD_REAPI_STATE": str(state), "TPBUILD_PYTHON": sys.executable}
    p = subprocess.run(["bash", str(SCRIPT), "up", "--workers", "2", "--property", f"container-image={IMAGE}"],
                       env=env, capture_output=True, text=True, timeout=1200)
    if p.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True)
        if "needs Python 3.13" in p.stderr or "PostgreSQL is missing" in p.stderr:
            pytest.skip(f"the REAPI cluster cannot be installed here: {p.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"tools/reapi-cluster.sh up failed:\n{p.stdout}\n{p.stderr}")
    try:
        yield Cluster(p.stdout.strip().splitlines()[-1], state)
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_actions(run) -> list[dict]:
    return [a for a in run.report["actions"] if a["mnemonic"] not in IN_PROCESS]


@pytest.mark.slow
def test_examples_remote_equal_local_then_shared_and_incremental(cluster, tmp_path, tmp_path_factory):
    remote = copy_examples(tmp_path / "remote")
    r = remote.build("//...", "--remote-executor", cluster.endpoint, check=True)
    runs = _run_actions(r)
    assert {a["mnemonic"] for a in runs} >= {"Genrule", "PythonEnv"}
    assert all(a["status"] == "executed" and a["executor"] == "remote" and a["worker"].startswith("worker-")
               for a in runs), runs
    assert all(a.get("executor") == "local" for a in r.report["actions"] if a["mnemonic"] in IN_PROCESS
               and a["status"] == "executed")
    assert "remote on worker-" in r.stderr  # the progress line says where each ran

    local = built_examples(tmp_path_factory, tmp_path / "local")
    local.build(check=True)
    assert tree(remote.root / "tpbuild-out") == tree(local.root / "tpbuild-out")

    # Another machine: an empty local cache, the REAPI ActionCache as its remote cache only.
    other = copy_examples(tmp_path / "other")
    o = other.build("//...", "--remote-cache", cluster.endpoint, check=True)
    assert [a for a in _run_actions(o) if a["status"] != "remote"] == []
    assert tree(other.root / "tpbuild-out") == tree(local.root / "tpbuild-out")

    # A model edit executes only that model's run action, remotely.
    (remote.root / "models/labeler/classes.txt").write_text("cat\ndog\nbird\n")
    e = remote.build("//...", "--remote-executor", cluster.endpoint, check=True)
    executed = [(a["target"], a["mnemonic"], a["executor"]) for a in _run_actions(e) if a["status"] == "executed"]
    assert executed == [("//models/labeler:labels", "Genrule", "remote")]
    assert (remote.out("models/labeler/labels/labels.txt")).read_text() == "BIRD\nCAT\nDOG\n"


SLEEPERS = {f"p{i}/BUILD.toml": f"""
    [genrule.g]
    outs = ["o.txt"]
    cmd = "sleep 0.5; echo {i} > $OUT"
""" for i in range(8)}


def test_two_workers_share_the_work(cluster, ws):
    for rel, text in SLEEPERS.items():
        ws.write(rel, text)
    r = ws.build("//...", "-j", "8", "--remote-executor", cluster.endpoint, check=True)
    workers = {a["worker"] for a in r.report["actions"]}
    assert workers == {"worker-1", "worker-2"}, r.report["actions"]
    assert ws.out("p3/g/o.txt").read_text() == "3\n"


def _worker(cluster: Cluster, name: str, *props: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "tpbuild", "worker", "--executor", cluster.endpoint, "--name", name]
    for p in props:
        argv += ["--property", p]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def test_worker_killed_mid_action_is_retried(cluster, ws, tmp_path):
    marker = tmp_path / "started"
    ws.write("k/BUILD.toml", f"""
        [genrule.slow]
        outs = ["o.txt"]
        cmd = "if [ ! -e {marker} ]; then touch {marker}; sleep 60; fi; echo done > $OUT"
        exec_properties = {{ pool = "kill-test" }}
    """)
    doomed = _worker(cluster, "doomed", "pool=kill-test")
    build = subprocess.Popen([sys.executable, "-m", "tpbuild", "-C", str(ws.root), "build", "//...",
                              "--remote-executor", cluster.endpoint, "--report", str(tmp_path / "r.json")],
                             env=ws.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rescuer = None
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline and build.poll() is None, "the action never started on the worker"
            time.sleep(0.1)
        os.killpg(doomed.pid, signal.SIGKILL)  # the worker and the command it runs
        doomed.wait()
        rescuer = _worker(cluster, "rescuer", "pool=kill-test")
        out, err = build.communicate(timeout=120)
    finally:
        for p in (build, doomed, rescuer):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL) if p is not build else p.kill()
                p.wait()
    assert build.returncode == 0, out + err
    assert "Traceback" not in err
    [a] = json.loads((tmp_path / "r.json").read_text())["actions"]
    assert (a["status"], a["executor"], a["worker"]) == ("executed", "remote", "rescuer")
    assert ws.out("k/slow/o.txt").read_text() == "done\n"


def test_stopped_server_falls_back_or_fails_when_required(ws):
    ws.write("g/BUILD.toml", """
        [genrule.g]
        outs = ["o.txt"]
        cmd = "echo local > $OUT"
    """)
    dead = f"grpc://127.0.0.1:{_free_port()}"  # nothing listens: what a stopped server looks like
    r = ws.build("//...", "--remote-executor", dead, "--remote-required")
    assert r.returncode == 1
    assert f"remote executor {dead}" in r.stderr and "--remote-required" in r.stderr
    r = ws.build("//...", "--remote-executor", dead, check=True)
    assert "warning: remote executor" in r.stderr and "runs locally" in r.stderr
    [a] = r.report["actions"]
    assert (a["status"], a["executor"]) == ("executed", "local")
    assert ws.out("g/g/o.txt").read_text() == "local\n"
    # The same for the REAPI ActionCache used as a remote cache only.
    ws.write("g/BUILD.toml", """
        [genrule.g]
        outs = ["o.txt"]
        cmd = "echo local again > $OUT"
    """)
    r = ws.build("//...", "--remote-cache", dead, check=True)
    assert f"warning: remote cache {dead}" in r.stderr
    assert ws.out("g/g/o.txt").read_text() == "local again\n"


def test_a_server_nothing_listens_on_is_asked_once_a_failing_one_again(monkeypatch):
    """A refused connection is given up at once (the channel retries connecting on its own backoff and
    fails every call before then without trying); a server that answers UNAVAILABLE (overloaded,
    restarting) or times out is asked again, `blobs.ATTEMPTS` times in all."""
    import grpc

    from tpbuild.reapi import blobs, wire

    waits: list[float] = []
    monkeypatch.setattr(blobs.time, "sleep", waits.append)
    server = blobs.Server(wire.open_channel(f"grpc://127.0.0.1:{_free_port()}"), "", timeout=10)
    calls = []

    def find_missing():
        calls.append(1)
        return server.cas.FindMissingBlobs(wire.re_pb2.FindMissingBlobsRequest(), timeout=10)

    with pytest.raises(wire.ReapiError) as e:
        server.attempt("FindMissingBlobs", find_missing)
    assert e.value.unreachable and "Connection refused" in str(e.value)
    assert (len(calls), waits) == (1, [])

    class Answered(grpc.RpcError):
        def __init__(self, code):
            self._code = code

        def code(self):
            return self._code

        def details(self):
            return "the server said so"

    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        calls.clear()
        waits.clear()

        def fails(code=code):
            calls.append(1)
            raise Answered(code)

        with pytest.raises(wire.ReapiError) as e:
            server.attempt("FindMissingBlobs", fails)
        assert not e.value.unreachable and (len(calls), len(waits)) == (blobs.ATTEMPTS, blobs.ATTEMPTS - 1)


def test_platform_no_worker_offers_fails_after_a_bounded_wait(cluster, ws):
    ws.write("g/BUILD.toml", """
        [genrule.g]
        outs = ["o.txt"]
        cmd = "echo never > $OUT"
        exec_properties = { pool = "nobody-has-this" }
    """)
    t0 = time.monotonic()
    r = ws.build("//...", "--remote-executor", cluster.endpoint, env={"TPBUILD_REMOTE_QUEUE_TIMEOUT": "3"})
    assert r.returncode == 1
    assert "no remote worker took it within 3s" in r.stderr and "'pool': 'nobody-has-this'" in r.stderr
    assert time.monotonic() - t0 < 60  # bounded: not a hang
    assert not ws.out("g/g/o.txt").exists()


def test_bad_executor_url_is_usage_error(ws):
    ws.write("tpbuild.toml", """
        [remote]
        executor = "http://example.invalid"
    """)
    ws.write("g/BUILD.toml", SLEEPERS["p0/BUILD.toml"])
    r = ws.build()
    assert r.returncode == 2
    assert "tpbuild.toml:2" in r.stderr and "grpc://HOST:PORT" in r.stderr


def _client(cluster: Cluster, tmp_path: Path):
    """The REAPI client on its own, for faults the CLI cannot provoke."""
    from tpbuild.cas import Cas
    from tpbuild.reapi import blobs, wire
    from tpbuild.reapi.execution import Remote
    from tpbuild.shaindex import ShaIndex

    cas = Cas(tmp_path / "cache")
    server = blobs.Server(wire.open_channel(cluster.endpoint), "")
    remote = Remote(server, blobs.LocalBlobs(server, cas, ShaIndex(tmp_path / "cache")), tmp_path / "logs",
                    platform={}, queue_timeout=60)
    return cas, server, remote


def _action(argv: tuple[str, ...], **kw):
    from tpbuild.action import RunAction
    from tpbuild.label import Label

    return RunAction(id="//t:t%Genrule", owner=Label("t", "t"), mnemonic="Genrule", rule="genrule",
                     rule_version="1", argv=argv, outs=("o.txt",), **kw)


def test_remote_result_with_missing_blobs_is_executed_again(cluster, tmp_path):
    """An ActionResult in the real ActionCache whose output tree names a Directory the CAS lacks.
    (BuildGrid itself drops results whose output *files* are gone; a tree's missing subdirectory,
    like a blob evicted between the lookup and the download, only the client notices.)"""
    from tpbuild.reapi import blobs, wire

    cas, server, remote = _client(cluster, tmp_path)
    action = _action(("bash", "-c", f"echo {time.time_ns()} > out/o.txt"))
    material = f"missing-blob-{time.time_ns()}".encode()
    w, uploads = remote.wire(action, [], material)
    tree = wire.re_pb2.Tree(root=wire.re_pb2.Directory(directories=[
        wire.re_pb2.DirectoryNode(name="sub", digest=wire.digest_of(b"a Directory never uploaded"))]))
    data = tree.SerializeToString(deterministic=True)
    server.upload_missing(uploads + [blobs.Upload(wire.digest_of(data), data=data)])
    bogus = wire.re_pb2.ActionResult(exit_code=0)
    bogus.output_directories.add(path="out/o.txt", tree_digest=wire.digest_of(data))
    server.update_action_result(w.action_digest, bogus)
    assert server.get_action_result(w.action_digest) == bogus  # the poisoned entry is served

    ex = remote.execute(action, [], material)
    assert not ex.cached and ex.worker.startswith("worker-")
    [e] = ex.entries
    assert e.path == "o.txt" and cas.path(e.digest).read_text().strip().isdigit()
    fresh = server.get_action_result(w.action_digest)
    assert not fresh.output_directories and fresh.output_files[0].path == "out/o.txt"


def test_worker_timeout_kills_the_process_group(cluster, tmp_path):
    from tpbuild.errors import BuildError

    pid_file = tmp_path / "child.pid"
    _, _, remote = _client(cluster, tmp_path)
    action = _action(("bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"), timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(BuildError, match="timed out"):
        remote.execute(action, [], f"timeout-{time.time_ns()}".encode())
    assert time.monotonic() - t0 < 60
    child = int(pid_file.read_text())
    time.sleep(0.5)
    try:  # the command's own child died with the group (gone, or a zombie its new parent has not reaped)
        state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z"), state
