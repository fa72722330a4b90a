"""The remote cache through the real CLI, against real servers started here on 127.0.0.1: nginx with
WebDAV PUT (http://), moto's standalone S3 server (s3://), and a shared directory (file://).

Every test builds in two (or more) workspaces with separate local caches that share one remote, the
way CI runners and laptops do. Faults are real: the server is stopped, its stored files are truncated,
corrupted or deleted on its disk; the one stand-in is a tiny http.server that answers 500 to every
request (to stand for a failing cache server, which cannot be provoked from nginx on demand).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import Workspace

PROJECT = {
    "gen/BUILD.toml": """
        [genrule.data]
        srcs = ["seed.txt"]
        outs = ["data.txt", "bin/run.sh", "link"]
        cmd = "for i in $(seq 300); do cat gen/seed.txt; done > out/data.txt; mkdir -p out/bin; printf 'echo hi\\\\n' > out/bin/run.sh; chmod +x out/bin/run.sh; ln -s data.txt out/link"

        [genrule.upper]
        srcs = [":data"]
        outs = ["upper.txt"]
        cmd = "tr a-z A-Z < gen/data/data.txt > $OUT"
    """,
    "gen/seed.txt": "hello remote cache\n",
    "models/m/BUILD.toml": """
        [triton_model.m]
        versions = ["1"]
        files = ["//gen:upper"]

        [triton_model.m.config]
        max_batch_size = 4
        input = [{ name = "A", data_type = "TYPE_FP32", dims = [2] }]
        output = [{ name = "B", data_type = "TYPE_FP32", dims = [2] }]
    """,
    "models/m/1/model.py": "class TritonPythonModel:\n    pass\n",
}


def workspace(tmp_path: Path, name: str, toml: str = "", files: dict | None = None) -> Workspace:
    root = tmp_path / name
    root.mkdir()
    w = Workspace(root, tmp_path / f"{name}-cache")
    w.write("tpbuild.toml", toml)
    for rel, text in (PROJECT if files is None else files).items():
        w.write(rel, text)
    return w


def tree(root: Path) -> dict:
    """Everything a build placed: path -> (kind, content or link target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(".tpbuild"):
            continue
        if p.is_symlink():
            out[rel] = ("l", os.readlink(p))
        elif p.is_file():
            out[rel] = ("x" if os.access(p, os.X_OK) else "f", p.read_bytes())
    return out


def remote_warnings(run) -> list[str]:
    return [w for w in run.report["warnings"] if "remote cache" in w]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def nginx_conf(base: Path, server: str, user: str = "") -> str:
    """An nginx.conf running in the foreground with every path below `base`, around one `server` block."""
    return f"""
        {user}
        worker_processes 1;
        daemon off;
        pid {base}/nginx.pid;
        error_log {base}/error.log;
        events {{ worker_connections 64; }}
        http {{
            access_log {base}/access.log;
            client_body_temp_path {base}/body;
            proxy_temp_path {base}/proxy;
            fastcgi_temp_path {base}/fastcgi;
            uwsgi_temp_path {base}/uwsgi;
            scgi_temp_path {base}/scgi;
            {server}
        }}
    """


def start_nginx(base: Path, port: int, what: str = "nginx") -> subprocess.Popen:
    proc = subprocess.Popen(["nginx", "-p", str(base), "-e", str(base / "error.log"), "-c", str(base / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc, what)
    return proc


class Nginx:
    """nginx serving `data/` with WebDAV PUT, the setup the README documents; a request without the
    basic-auth pair ci/s3cret or the bearer token `tok-123` is refused with a 401."""

    env_basic = {"TPBUILD_REMOTE_CACHE_USER": "ci", "TPBUILD_REMOTE_CACHE_PASSWORD": "s3cret"}

    def __init__(self, base: Path):
        self.base = base
        self.data = base / "data"
        self.data.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/cache"
        self.env = {"TPBUILD_REMOTE_CACHE": self.url, **self.env_basic}
        user = "user root root;" if os.geteuid() == 0 else ""  # else workers run as nobody
        (base / "nginx.conf").write_text(nginx_conf(base, f"""
            map $http_authorization $denied {{
                default 1;
                "Basic Y2k6czNjcmV0" 0;
                "Bearer tok-123" 0;
            }}
            server {{
                listen 127.0.0.1:{self.port};
                root {self.data};
                client_max_body_size 0;
                location /cache/ {{
                    if ($denied) {{ return 401; }}
                    dav_methods PUT;
                    create_full_put_path on;
                }}
            }}
        """, user))
        self.proc = start_nginx(base, self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            self.proc.wait(timeout=30)

    def files(self, kind: str) -> list[Path]:
        d = self.data / "cache" / kind
        return sorted(d.iterdir()) if d.is_dir() else []


@pytest.fixture
def nginx(tmp_path):
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (tools/test.sh installs it)")
    srv = Nginx(tmp_path / "nginx")
    yield srv
    srv.stop()


def test_two_workspaces_share_through_nginx(tmp_path, nginx):
    env = nginx.env
    first, second = workspace(tmp_path, "a"), workspace(tmp_path, "b")
    r0 = workspace(tmp_path, "anonymous").build(check=True, env={"TPBUILD_REMOTE_CACHE": nginx.url})
    assert any("HTTP 401" in w for w in remote_warnings(r0)) and not nginx.files("ac")
    r1 = first.build(check=True, env=env)
    assert not r1.statuses("remote") and r1.statuses("executed")
    assert r1.report["cache"]["remote"]["uploaded_bytes"] > 0
    # The Bazel HTTP cache layout: every name is a SHA-256, every blob's name the SHA-256 of its bytes.
    blobs, entries = nginx.files("cas"), nginx.files("ac")
    assert len(entries) == len(r1.report["actions"])
    for p in blobs + entries:
        assert len(p.name) == 64 and int(p.name, 16) >= 0
    for p in blobs:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name

    r2 = second.build(check=True, env={"TPBUILD_REMOTE_CACHE": nginx.url, "TPBUILD_REMOTE_CACHE_TOKEN": "tok-123"})
    assert r2.statuses("executed") == []
    assert len(r2.statuses("remote")) == len(r2.report["actions"])
    assert "from remote cache" in r2.stdout and "downloaded" in r2.stdout
    assert tree(second.out("")) == tree(first.out(""))
    assert tree(second.out("gen/data"))["bin/run.sh"][0] == "x"
    assert not remote_warnings(r2)

    # Once local, nothing crosses the network again: restoring tpbuild-out uses the local cache.
    shutil.rmtree(second.out(""))
    r3 = second.build(check=True, env=env)
    assert r3.statuses("remote") == [] and r3.statuses("executed") == []
    assert r3.report["cache"]["remote"]["downloaded_bytes"] == 0


def test_s3_through_moto(tmp_path):
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto")
    port = free_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "TPBUILD_S3_ENDPOINT": f"http://127.0.0.1:{port}", "TPBUILD_REMOTE_CACHE": "s3://team-cache/tpbuild"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc, "moto")
        s3 = boto3.client("s3", endpoint_url=env["TPBUILD_S3_ENDPOINT"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket="team-cache")
        first, second = workspace(tmp_path, "a"), workspace(tmp_path, "b")
        first.build(check=True, env=env)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="team-cache")["Contents"]]
        assert keys and all(k.startswith(("tpbuild/ac/", "tpbuild/cas/")) for k in keys)
        r2 = second.build(check=True, env=env)
        assert r2.statuses("executed") == []
        assert tree(second.out("")) == tree(first.out(""))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_file_remote_read_only_and_required(tmp_path):
    remote = tmp_path / "shared"
    url = f"file://{remote}"
    ro = workspace(tmp_path, "ro", f'[cache]\nremote = "{url}"\nremote_upload = false\n')
    ro.build(check=True)
    assert not remote.exists() or not any(p.is_file() for p in remote.rglob("*"))
    writer = workspace(tmp_path, "w", f'[cache]\nremote = "{url}"\n')
    writer.build(check=True)
    flagged = workspace(tmp_path, "flag")
    r = flagged.build("//...", "--remote-cache", url, "--no-remote-upload", "--remote-required", check=True)
    assert r.statuses("executed") == []
    # Nothing configured, yet required: a usage error before anything is built.
    r = workspace(tmp_path, "none").build("//...", "--remote-required")
    assert r.returncode == 2 and "no remote cache is configured" in r.stderr


def test_an_input_edited_while_its_action_runs_is_never_uploaded(tmp_path):
    remote = tmp_path / "shared"
    env = {"TPBUILD_REMOTE_CACHE": f"file://{remote}"}
    files = {"g/BUILD.toml": "", "g/src.txt": "original\n"}
    editing = workspace(tmp_path, "editing", files=files)
    # The command reads its (copied) source, then the user saves the workspace file while it runs.
    editing.write("g/BUILD.toml", f"""
        [genrule.g]
        srcs = ["src.txt"]
        outs = ["out.txt"]
        cmd = "cat g/src.txt > $OUT; echo saved-later >> {editing.root}/g/src.txt"
    """)
    r = editing.build(check=True, env=env)
    assert any("not cached" in w for w in r.report["warnings"])
    assert not (remote / "ac").exists() or not any((remote / "ac").iterdir())

    # A machine with the original content must run it: no entry under the old key exists.
    clean = workspace(tmp_path, "clean", files=files)
    clean.write("g/BUILD.toml", (editing.root / "g/BUILD.toml").read_text())
    r = clean.build(check=True, env=env)
    assert r.statuses("executed") == ["//g:g%Genrule"]
    assert clean.out("g/g/out.txt").read_text() == "original\n"


def test_server_stopped_mid_build(tmp_path, nginx):
    # The first action stops the server; what follows finds it gone, and the build goes on without it.
    files = {"s/BUILD.toml": f"""
        [genrule.stop]
        outs = ["a.txt"]
        cmd = "kill -QUIT {nginx.proc.pid}; while (echo > /dev/tcp/127.0.0.1/{nginx.port}) 2>/dev/null; do sleep 0.05; done; echo a > $OUT"

        [genrule.after]
        srcs = [":stop"]
        outs = ["b.txt"]
        cmd = "cat s/stop/a.txt > $OUT; echo b >> $OUT"
    """}
    w = workspace(tmp_path, "w", files=files)
    r = w.build(check=True, env=nginx.env)
    nginx.proc.wait(timeout=30)
    assert w.out("s/after/b.txt").read_text() == "a\nb\n"
    assert remote_warnings(r)


class _Failing(http.server.BaseHTTPRequestHandler):
    """Stands in for a broken cache server: every request gets a 500."""

    hits = 0

    def _fail(self):
        type(self).hits += 1
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = _fail

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_server():
    _Failing.hits = 0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/cache"
    srv.shutdown()


def test_500s_warn_then_switch_the_remote_off_once(tmp_path, failing_server):
    env = {"TPBUILD_REMOTE_CACHE": failing_server.replace("http://", "http://ci:s3cret@")}
    w = workspace(tmp_path, "w")
    r = w.build("//...", "-j", "1", check=True, env=env)
    assert w.out("gen/upper/upper.txt").read_text().startswith("HELLO REMOTE CACHE\n")
    warnings = remote_warnings(r)
    assert sum("switched off" in x for x in warnings) == 1, warnings
    assert len(warnings) == 3 and "HTTP 500" in warnings[-1]
    assert r.report["cache"]["remote"]["disabled"] is True
    assert "s3cret" not in r.output + str(r.report)
    # A few failures of three attempts each, then nothing more is asked of the server (unlike the
    # 2 requests per action and blob it would otherwise get).
    assert _Failing.hits <= 12

    r = workspace(tmp_path, "strict").build("//...", "--remote-required", env=env)
    assert r.returncode == 1 and "--remote-required" in r.stderr and "HTTP 500" in r.stderr


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "delete"])
def test_damaged_blobs_are_a_miss_never_a_poisoned_cache(tmp_path, nginx, damage):
    env = nginx.env
    first = workspace(tmp_path, "first")
    first.build(check=True, env=env)
    good = first.out("gen/data/data.txt").read_bytes()
    big = nginx.data / "cache/cas" / hashlib.sha256(good).hexdigest()
    bad = {"truncate": good[: len(good) // 2], "corrupt": good[:9] + b"X" + good[10:], "delete": None}[damage]
    if bad is None:
        big.unlink()
    else:
        big.write_bytes(bad)

    second = workspace(tmp_path, "second")
    r = second.build(check=True, env=env)
    assert "//gen:data%Genrule" in r.statuses("executed")
    assert tree(second.out("")) == tree(first.out(""))
    words = {"truncate": "corrupt or truncated", "corrupt": "corrupt or truncated", "delete": "missing"}[damage]
    assert any(words in w for w in remote_warnings(r)), r.report["warnings"]
    # The bad bytes never entered the local cache...
    stored = [p.read_bytes() for p in (second.cache / "cas").rglob("*") if p.is_file()]
    assert good in stored and bad not in stored
    assert big.read_bytes() == good  # ...and the remote was repaired,
    third = workspace(tmp_path, "third")
    assert third.build(check=True, env=env).statuses("executed") == []  # so the next machine gets hits.


def test_signed_entries(tmp_path):
    env = {"TPBUILD_REMOTE_CACHE": f"file://{tmp_path / 'shared'}"}
    ci = workspace(tmp_path, "ci")
    ci.build(check=True, env={**env, "TPBUILD_CACHE_SIGNING_KEY": "main-branch-secret"})

    forged = workspace(tmp_path, "forged")  # an entry signed with another key is not trusted
    r = forged.build("//...", "--no-remote-upload", check=True, env={**env, "TPBUILD_CACHE_SIGNING_KEY": "guess"})
    assert r.statuses("remote") == [] and any("badly signed" in w for w in remote_warnings(r))
    assert tree(forged.out("")) == tree(ci.out(""))

    unsigned = workspace(tmp_path, "unsigned")  # a writer without the key...
    unsigned.write("gen/seed.txt", "another seed\n")
    unsigned.build(check=True, env=env)
    reader = workspace(tmp_path, "reader")  # ...is ignored by readers that have it
    reader.write("gen/seed.txt", "another seed\n")
    r = reader.build("//...", "--no-remote-upload", check=True, env={**env, "TPBUILD_CACHE_SIGNING_KEY": "main-branch-secret"})
    assert any("not signed" in w for w in remote_warnings(r)) and "//gen:data%Genrule" in r.statuses("executed")

    trusted = workspace(tmp_path, "trusted")
    r = trusted.build(check=True, env={**env, "TPBUILD_CACHE_SIGNING_KEY": "main-branch-secret"})
    assert r.statuses("executed") == [] and not remote_warnings(r)


def test_bad_remote_configuration_is_a_usage_error(tmp_path):
    w = workspace(tmp_path, "w", '[cache]\nsalt = "1"\nremote = "ftp://cache.example.com/x"\n')
    r = w.build()
    assert r.returncode == 2 and "tpbuild.toml:3: [cache] remote: unsupported remote cache URL" in r.stderr
    w.write("tpbuild.toml", '[cache]\nremote = "https://ci:hunter2@cache.example.com/x"\n')
    r = w.build()
    assert r.returncode == 2 and "tpbuild.toml:2:" in r.stderr and "TPBUILD_REMOTE_CACHE_USER" in r.stderr
    assert "hunter2" not in r.output
    w.write("tpbuild.toml", "")
    r = w.build("//...", "--remote-cache", "gopher://x")
    assert r.returncode == 2 and "--remote-cache: unsupported" in r.stderr
    w.write("tpbuild.toml", '[cache]\nmax_size = "lots"\n')
    r = w.build()
    assert r.returncode == 2 and "tpbuild.toml:2: [cache] max_size" in r.stderr
    # `tpbuild test` takes the same options.
    assert "--remote-cache" in w.run("test", "--help", report=False).stdout


def _cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for d in ("cas", "ac") for p in (cache / d).rglob("*") if p.is_file())


def _age(cache: Path, seconds: float) -> None:
    then = time.time() - seconds
    for d in ("cas", "ac"):
        for p in (cache / d).rglob("*"):
            if p.is_file():
                os.utime(p, (then, then))


def _three_outputs_under_40kb(tmp_path: Path) -> Workspace:
    """Three genrules of ~9 kB outputs each, from e/seed.txt, in a cache limited to 40 kB."""
    files = {"e/BUILD.toml": "".join(f"""
        [genrule.g{i}]
        srcs = ["seed.txt"]
        outs = ["o.bin"]
        cmd = "s=$(cat e/seed.txt); for n in $(seq 400); do echo {i} $s $n padding-padding-padding; done > $OUT"
    """ for i in range(3)), "e/seed.txt": "v1"}
    return workspace(tmp_path, "w", '[cache]\nmax_size = "40KB"\n', files)


def test_eviction_keeps_the_cache_under_max_size(tmp_path):
    w = _three_outputs_under_40kb(tmp_path)
    w.build(check=True)
    first = _cache_bytes(w.cache)
    assert 25_000 < first < 40_000  # three outputs of ~9 kB and their entries: under the limit
    _age(w.cache, 3600)  # as if built an hour ago (recent files are never evicted)
    w.write("e/seed.txt", "v2")
    r = w.build(check=True)
    assert _cache_bytes(w.cache) <= 40_000
    assert r.report["cache"]["evicted"]["entries"] == 3 and r.report["cache"]["evicted"]["blobs"] == 3
    # What this build uses stays: its outputs restore from the cache alone.
    shutil.rmtree(w.out(""))
    r = w.build(check=True)
    assert r.statuses("executed") == [] and "v2 400" in w.out("e/g2/o.bin").read_text()
    # What was evicted is built again, correctly.
    w.write("e/seed.txt", "v1")
    r = w.build(check=True)
    assert len(r.statuses("executed")) == 3 and "2 v1 400" in w.out("e/g2/o.bin").read_text()


def test_eviction_removes_old_quarantined_blobs_first_and_nothing_else_there(tmp_path):
    """Damaged blobs are kept for inspection, but count against max_size and go first once older than
    the grace period; a file of someone else's in the quarantine directory is left alone."""
    w = _three_outputs_under_40kb(tmp_path)
    w.build(check=True)
    out = w.out("e/g0/o.bin")
    os.chmod(out, 0o644)
    with open(out, "a") as f:  # through the hardlink, into the blob: the next build quarantines it
        f.write("edited\n")
    r = w.build(check=True)
    assert r.statuses("executed") == ["//e:g0%Genrule"]
    quarantine = w.cache / "quarantine"
    [damaged] = list(quarantine.iterdir())
    assert r.report["cache"]["evicted"]["quarantined"] == 0  # fresh: kept for inspection
    # As if quarantined an hour ago (the name records when), beside a file that is not tpbuild's.
    old = damaged.with_name(f"{damaged.name.rsplit('.', 1)[0]}.{time.time_ns() - 3600 * 10**9}")
    damaged.rename(old)
    (quarantine / "notes.txt").write_text("x" * 20_000)
    _age(w.cache, 3600)
    w.write("e/seed.txt", "v2")
    r = w.build(check=True)
    assert r.report["cache"]["evicted"]["quarantined"] == 1
    assert sorted(p.name for p in quarantine.iterdir()) == ["notes.txt"]
    assert _cache_bytes(w.cache) + sum(p.stat().st_size for p in quarantine.iterdir()) - 20_000 <= 40_000


def _peak_rss_mb(w: Workspace, env: dict) -> float:
    """Build in a child and return the peak RSS of the build (its commands included), in MB."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    p = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "tpbuild", "-C", str(w.root),
                        "build", "//..."], capture_output=True, text=True, env={**w.env, **env}, check=True)
    return int(p.stdout.split()[-1]) / 1024


def test_large_blobs_stream_in_bounded_memory(tmp_path, nginx):
    files = {"big/BUILD.toml": """
        [genrule.big]
        outs = ["env.tar"]
        cmd = "dd if=/dev/urandom of=$OUT bs=1M count=256 status=none"
    """}
    up, down = workspace(tmp_path, "up", files=files), workspace(tmp_path, "down", files=files)
    rss_up = _peak_rss_mb(up, nginx.env)
    rss_down = _peak_rss_mb(down, nginx.env)
    assert up.out("big/big/env.tar").read_bytes() == down.out("big/big/env.tar").read_bytes()
    # A 256 MB output crossed the network both ways while the build stayed far below its size.
    assert rss_up < 128 and rss_down < 128, (rss_up, rss_down)
