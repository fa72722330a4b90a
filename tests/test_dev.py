"""`tpbuild dev` driven as a subprocess through the real CLI on a copy of the examples, serving from a
real Triton server (the nvidia-pytriton wheel's r24.10, CPU only, on loopback), queried with
Triton's own HTTP client as an author would.

The examples' `table` model is left out: its python_env pip-installs numpy and tabulate, minutes of
work that the loop does not need to be shown working. Every wait is for a condition, bounded
generously for a loaded machine; nothing is timed.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.server

pytest.importorskip("watchfiles")
httpclient = pytest.importorskip("tritonclient.http")

MODELS = ("//models/add_sub", "//models/text", "//models/labeler")
WAIT = 240  # seconds: a bound for conditions, far above what they take


class Dev:
    """A running `tpbuild dev`; its merged stdout/stderr is collected line by line on a thread."""

    def __init__(self, ws, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tpbuild", "-C", str(ws.root), "dev", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            env={**ws.env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def mark(self) -> int:
        return len(self.lines)

    def wait_for(self, pattern: str, after: int = 0, timeout: float = WAIT) -> re.Match:
        """The first line from `after` on matching `pattern`."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if m := rx.search(line):
                    return m
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"tpbuild dev exited ({self.proc.returncode}) before {pattern!r}:\n{self.output}")
            time.sleep(0.1)
        pytest.fail(f"no line matching {pattern!r} within {timeout}s:\n{self.output}")

    def stop(self, sig=signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=90)
        finally:
            self._reader.join(5)
            assert "Traceback" not in self.output, self.output

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def started(dev: Dev) -> dict:
    """Ports, pid, repository and log the server was started with."""
    m = dev.wait_for(r"serving on HTTP http://(127\.0\.0\.1:\d+)  gRPC 127\.0\.0\.1:(\d+)")
    info = dev.wait_for(r"tritonserver pid (\d+), repository (\S+), log (\S+)")
    return {"url": m[1], "grpc": int(m[2]), "pid": int(info[1]), "repository": info[2], "log": Path(info[3])}


def loads(log: Path) -> dict[str, int]:
    """How often the server log says each model finished loading."""
    counts: dict[str, int] = {}
    for name in re.findall(r"successfully loaded '([^']+)'", log.read_text(errors="replace")):
        counts[name] = counts.get(name, 0) + 1
    return counts


def add_sub(client) -> list[float]:
    a = np.array([[1, 2, 3, 4]], dtype=np.float32)
    ins = []
    for name in ("INPUT0", "INPUT1"):
        t = httpclient.InferInput(name, list(a.shape), "FP32")
        t.set_data_from_numpy(a)
        ins.append(t)
    return client.infer("add_sub", ins).as_numpy("OUTPUT0").reshape(-1).tolist()


def text(client, version: str = "1") -> str:
    t = httpclient.InferInput("TEXT", [1], "BYTES")
    t.set_data_from_numpy(np.array([b"hello"], dtype=np.object_))
    return client.infer("text_transform", [t], model_version=version).as_numpy("RESULT")[0].decode()


def label(client, index: int = 2) -> str:
    t = httpclient.InferInput("INDEX", [1], "INT32")
    t.set_data_from_numpy(np.array([index], dtype=np.int32))
    return client.infer("labeler", [t]).as_numpy("LABEL")[0].decode()


def eventually(check, timeout: float = WAIT):
    """The first truthy value of `check()`; inference errors while a model reloads count as not yet."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if value := check():
                return value
        except Exception as e:  # the model may be between versions
            last = e
        time.sleep(0.05)
    pytest.fail(f"condition not met within {timeout}s (last error: {last})")


def leftovers(server_pid: int, repository: str) -> list[str]:
    """Live processes of the server's group, or mentioning its repository (the stubs do). Zombies are
    dead: stubs that outlived the server wait there, briefly, for init to reap them."""
    ps = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    out = []
    for line in ps.splitlines():
        _pid, pgid, stat, args = line.split(None, 3)
        if not stat.startswith("Z") and (int(pgid) == server_pid or repository in args):
            out.append(line)
    return out


def test_edit_reload_errors_and_ctrl_c(examples):
    mp = examples.root / "models/add_sub/1/model.py"
    dev = Dev(examples, *MODELS)
    try:
        srv = started(dev)
        dev.wait_for(r"^-- build OK .*: 3 model\(s\) loaded, 0 unchanged")
        for line in ("PASS //models/add_sub:add_sub (add_sub): loaded in ",
                     "PASS //models/text:text (text_transform): loaded in ",
                     "PASS //models/labeler:labeler (labeler): loaded in "):
            assert line in dev.output, dev.output
        client = httpclient.InferenceServerClient(srv["url"])
        index = {m["name"]: m.get("state") for m in client.get_model_repository_index()}
        assert index == {"add_sub": "READY", "text_transform": "READY", "labeler": "READY"}, index
        assert add_sub(client) == [2, 4, 6, 8] and text(client) == "HELLO" and label(client) == "DOG"
        grpc = socket.create_connection(("127.0.0.1", srv["grpc"]), timeout=5)  # the printed gRPC port serves
        grpc.close()
        before = loads(srv["log"])
        assert before == {"add_sub": 1, "text_transform": 1, "labeler": 1}, before

        # An edit of one model's output computation reaches that model's answers; nothing else reloads.
        original = mp.read_text()
        at = dev.mark()
        mp.write_text(original.replace('"OUTPUT0": a + b,', '"OUTPUT0": a + b + 100,'))
        eventually(lambda: add_sub(client) == [102, 104, 106, 108])
        dev.wait_for(r"^-- build OK .*: 1 model\(s\) reloaded, 2 unchanged", at)
        fail = dev.wait_for(r"^FAIL //models/add_sub:add_sub \(add_sub\): rebuilt, reloaded in .*", at)
        assert "case 'sum and difference': OUTPUT0: [[101.5, 102.5, 103.5, 104.5]], expected [[1.5" in fail[0]
        assert loads(srv["log"]) == {**before, "add_sub": 2}

        # A BUILD.toml error is shown with file:line; what was served keeps serving; fixing it recovers.
        manifest = examples.root / "models/text/BUILD.toml"
        good = manifest.read_text()
        at = dev.mark()
        manifest.write_text(good.replace('versions = { 1 = "1", 2 = "2" }', 'versions = { 1 = "1", 02 = "2" }'))
        dev.wait_for(r"^error: models/text/BUILD\.toml:\d+: ", at)
        dev.wait_for(r"^-- build FAILED .*the last good models keep serving", at)
        assert text(client, "2") == "olleh"
        at = dev.mark()
        manifest.write_text(good)
        dev.wait_for(r"^-- build OK .*: 0 model\(s\) reloaded, 3 unchanged", at)  # same output: no reload
        assert text(client) == "HELLO"

        # A model whose build fails (its genrule) is reported; its last good build keeps serving.
        labels = examples.root / "models/labeler/BUILD.toml"
        good_labels = labels.read_text()
        at = dev.mark()
        labels.write_text(good_labels.replace('cmd = "sort -u', 'cmd = "exit 3; sort -u'))
        dev.wait_for(r"^FAIL //models/labeler:labeler \(labeler\): build failed; the last good build keeps serving",
                     at)
        dev.wait_for(r"^-- build FAILED .*: 0 model\(s\) reloaded, 2 unchanged", at)
        assert label(client) == "DOG"
        at = dev.mark()
        labels.write_text(good_labels)
        dev.wait_for(r"^-- build OK .*: 0 model\(s\) reloaded, 3 unchanged", at)

        # A model.py that raises in initialize is reported with the server's log; the others answer.
        labeler = examples.root / "models/labeler/1/model.py"
        ok_labeler = labeler.read_text()
        at = dev.mark()
        labeler.write_text(ok_labeler.replace("    def execute", "    def initialize(self, args):\n"
                                              "        raise RuntimeError('no labels for you')\n\n    def execute", 1))
        dev.wait_for(r"^FAIL //models/labeler:labeler \(labeler\): did not load; the last good version keeps serving",
                     at)
        dev.wait_for(r"^    .*RuntimeError: no labels for you", at)
        dev.wait_for(r"^-- build OK .*: 0 model\(s\) reloaded, 1 failed to load, 2 unchanged", at)
        assert add_sub(client) == [102, 104, 106, 108] and text(client) == "HELLO"
        at = dev.mark()
        labeler.write_text(ok_labeler)
        dev.wait_for(r"^PASS //models/labeler:labeler \(labeler\): rebuilt, reloaded in ", at)
        assert label(client) == "DOG"
        counts = loads(srv["log"])
        assert counts["add_sub"] == 2 and counts["text_transform"] == 1, counts

        # The stubs wrote no bytecode into tpbuild-out (they serve from copies), where a stale pyc could
        # outlive a same-size edit.
        assert not list((examples.root / "tpbuild-out/models").rglob("__pycache__"))

        # Ctrl-C stops the server and its stubs.
        assert leftovers(srv["pid"], srv["repository"]), "the check below would see the server's processes"
        assert dev.stop(signal.SIGINT) == 0
        assert "stopped: the server and the watcher are shut down" in dev.output
        assert leftovers(srv["pid"], srv["repository"]) == []
        assert not Path(srv["repository"]).parent.exists()  # the served copies are gone too
    finally:
        dev.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_port_no_test_and_stopping(examples, sig):
    """SIGTERM stops as Ctrl-C does; after SIGKILL, which tpbuild cannot see, the kernel's parent-death
    signal still stops the server."""
    if sig == signal.SIGKILL and not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed: nothing stops a server whose parent was killed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dev = Dev(examples, "//models/add_sub", "--port", str(port), "--no-test")
    try:
        srv = started(dev)
        assert srv["url"] == f"127.0.0.1:{port}"
        dev.wait_for(r"^READY //models/add_sub:add_sub \(add_sub\): loaded in ")
        assert "PASS" not in dev.output
        assert add_sub(httpclient.InferenceServerClient(srv["url"])) == [2, 4, 6, 8]
        assert dev.stop(sig) == (0 if sig == signal.SIGTERM else -sig)
        if sig == signal.SIGKILL:  # the server shuts down on its own
            eventually(lambda: not leftovers(srv["pid"], srv["repository"]), timeout=60)
        assert leftovers(srv["pid"], srv["repository"]) == []
    finally:
        dev.kill()


def test_a_broken_manifest_at_start_up_waits_for_the_fix(examples):
    manifest = examples.root / "models/add_sub/BUILD.toml"
    good = manifest.read_text()
    manifest.write_text(good.replace('versions = ["1"]', 'versions = ["01"]'))
    dev = Dev(examples, "//models/add_sub", "--no-test")
    try:
        dev.wait_for(r"^error: models/add_sub/BUILD\.toml:\d+: ")
        dev.wait_for(r"^-- build FAILED .*waiting for a fix")
        assert "serving on" not in dev.output
        manifest.write_text(good)
        srv = started(dev)
        dev.wait_for(r"^READY //models/add_sub:add_sub \(add_sub\): loaded in ")
        assert add_sub(httpclient.InferenceServerClient(srv["url"])) == [2, 4, 6, 8]
        assert dev.stop() == 0
    finally:
        dev.kill()


def test_bad_usage_exits_2_before_serving(examples, ws):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = examples.run("dev", "//models/add_sub", "--port", str(busy.getsockname()[1]), timeout=120)
    assert r.returncode == 2 and "--port" in r.stderr and "in use" in r.stderr, r.output
    r = examples.run("dev", "//models/nope", timeout=120)  # a pattern, not an edit to wait for
    assert r.returncode == 2 and "no package models/nope" in r.stderr, r.output
    ws.write("BUILD.toml", '[genrule.g]\nouts = ["g.txt"]\ncmd = "echo hi > $OUT"\n')
    r = ws.run("dev", "//:g", timeout=120)
    assert r.returncode == 2 and "no triton_model among these targets" in r.stderr, r.output
    assert "serving on" not in r.stdout


def test_bench_dev_loop_runs(tmp_path):
    """bench/dev_loop.py end to end at one edit per loop, so the harness keeps working; no time asserted."""
    from conftest import REPO

    out = tmp_path / "dev_loop.json"
    p = subprocess.run([sys.executable, str(REPO / "bench/dev_loop.py"), "--reps", "1", "--no-peer", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(out.read_text())
    for name in ("tpbuild dev", "tpbuild dev --no-auto-complete"):
        assert len(doc[name]["samples_s"]) == 1 and doc[name]["reload_median_s"] > 0, doc
