"""Locked python_envs through the real CLI: `tpbuild lock` (uv) against PyPI and against a PEP 503 index
served on 127.0.0.1 from wheels the tests write; builds that fetch each wheel by hash and install with no
network (`unshare -n`), in two workspaces and caches, byte for byte; stale, missing, tampered.

The local index's wheels are tiny and made here (a `numpy` stand-in — the env check only imports it —
and `tinypkg`, which depends on it), so an env build takes seconds rather than the minute a real
numpy takes. Locking the examples' real env uses PyPI.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest

from conftest import Workspace

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def lock_doc(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def versions(path: Path) -> dict[str, str]:
    return {p["name"]: p["version"] for p in lock_doc(path)["packages"]}


# -- a PEP 503 simple index on 127.0.0.1 ------------------------------------------------------------


def make_wheel(name: str, version: str, requires: tuple[str, ...] = (), marker: str = "") -> tuple[str, bytes]:
    """A valid pure-Python wheel, written directly; same arguments, same bytes."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\nMARK = {marker!r}\n".encode(),
        f"{dist}/METADATA": ("Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                             + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tpbuild-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
        for p, d in files.items()) + f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p, d in files.items():
            z.writestr(zipfile.ZipInfo(p, date_time=(1980, 1, 1, 0, 0, 0)), d)
    return f"{name}-{version}-py3-none-any.whl", buf.getvalue()


class Index:
    """A directory served by http.server: files/ holds the distributions, simple/ the PEP 503 pages."""

    def __init__(self, root: Path):
        self.root = root
        (root / "files").mkdir(parents=True)
        handler = partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, fname: str, data: bytes) -> None:
        (self.root / "files" / fname).write_bytes(data)
        self._pages()

    def add_wheel(self, *args, **kw) -> tuple[str, bytes]:
        fname, data = make_wheel(*args, **kw)
        self.add(fname, data)
        return fname, data

    def _pages(self) -> None:
        projects: dict[str, list[Path]] = {}
        for f in sorted((self.root / "files").iterdir()):
            projects.setdefault(f.name.split("-")[0].replace("_", "-").lower(), []).append(f)
        simple = self.root / "simple"
        shutil.rmtree(simple, ignore_errors=True)
        simple.mkdir()
        (simple / "index.html").write_text("".join(f'<a href="{p}/">{p}</a>\n' for p in projects))
        for p, files in projects.items():
            (simple / p).mkdir()
            (simple / p / "index.html").write_text("".join(
                f'<a href="../../files/{f.name}#sha256={hashlib.sha256(f.read_bytes()).hexdigest()}">{f.name}</a>\n'
                for f in files))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path / "index")
    idx.add_wheel("numpy", "1.0.0")
    idx.add_wheel("tinypkg", "1.0", requires=("numpy",))
    yield idx
    idx.close()


def env_ws(root: Path, cache: Path, index_url: str, *, pack_exclude: str = "[]", extra: str = "") -> Workspace:
    w = Workspace(root, cache)
    root.mkdir(parents=True, exist_ok=True)
    w.env["UV_CACHE_DIR"] = str(root.parent / "uv-cache")
    w.write("tpbuild.toml", f'[triton]\nversion = "24.10"\npython = "3.11"\nindex_url = "{index_url}"\n{extra}')
    w.write("envs/BUILD.toml", f"""
        [python_env.tiny]
        python = "3.11"
        manager = "venv"
        pip = ["tinypkg"]
        pack_exclude = {pack_exclude}
    """)
    return w


def offline(w: Workspace, *args: str) -> subprocess.CompletedProcess:
    """tpbuild in a network namespace of its own: no interface but a loopback that is down."""
    p = subprocess.run(["unshare", "-n", sys.executable, "-m", "tpbuild", "-C", str(w.root), *args],
                       capture_output=True, text=True, env=w.env, timeout=600)
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    return p


def _can_unshare() -> str:
    if os.geteuid() != 0:
        return "needs root for `unshare -n` (CI runs as root)"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    r = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return "" if r.returncode == 0 else f"`unshare -n` does not work here: {r.stderr.strip()}"


needs_unshare = pytest.mark.skipif(bool(_can_unshare()), reason=_can_unshare() or "-")


def blob_holding(cache: Path, data: bytes) -> Path:
    found = [p for p in (cache / "cas").rglob("*") if p.is_file() and p.stat().st_size == len(data)
             and p.read_bytes() == data]
    assert len(found) == 1, found
    return found[0]


def tiny_tarball(w: Workspace) -> bytes:
    return (w.out("envs/tiny") / "tiny.tar.gz").read_bytes()


def installed(tar_bytes: bytes) -> set[str]:
    """The distributions in an env (a venv starts with none: no pip, no setuptools)."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        return {n.split("/")[-1] for n in t.getnames() if n.endswith(".dist-info")}


# -- locking ----------------------------------------------------------------------------------------


def test_lock_the_examples_env_for_python_310_and_311_on_this_host(examples):
    """Resolved for the env's Python and the server's platform, never the host's (a 3.11 machine here)."""
    examples.write("envs/BUILD.toml", (examples.root / "envs/BUILD.toml").read_text() + """
[python_env.tabulate310]
python = "3.10"
manager = "venv"
pip = ["numpy<2", "tabulate==0.9.0"]
""")
    r = examples.run("lock", check=True)
    assert "locked: //envs:tabulate " in r.stdout and "locked: //envs:tabulate310 " in r.stdout
    for name, tag in (("tabulate", "cp311"), ("tabulate310", "cp310")):
        lock = examples.root / "envs" / f"pylock.{name}.toml"
        doc = lock_doc(lock)
        assert doc["lock-version"] == "1.0" and doc["tool"]["tpbuild"]["platform"] == "x86_64-manylinux_2_28"
        assert set(versions(lock)) == {"numpy", "tabulate"} and versions(lock)["tabulate"] == "0.9.0"
        numpy = next(p for p in doc["packages"] if p["name"] == "numpy")
        assert numpy["version"].startswith("1.")
        assert [w["url"].rsplit("/", 1)[1].split("-")[2] for w in numpy["wheels"]] == [tag]
        assert all(len(w["hashes"]["sha256"]) == 64 and w["url"].startswith("https://") for w in numpy["wheels"])
    before = (examples.root / "envs/pylock.tabulate.toml").read_bytes()
    r = examples.run("lock", "//envs:tabulate", check=True)
    assert "up to date: //envs:tabulate " in r.stdout
    assert (examples.root / "envs/pylock.tabulate.toml").read_bytes() == before
    assert examples.run("lock", "--check", check=True).stdout.strip().endswith("2 locks up to date")


def test_stale_missing_and_unusable_locks(tmp_path, index):
    w = env_ws(tmp_path / "ws", tmp_path / "cache", index.url, extra="require_lock = true\n")
    r = w.build("//envs:tiny")
    assert r.returncode == 2 and "no lock file envs/pylock.tiny.toml" in r.stderr
    assert "`tpbuild lock //envs:tiny`" in r.stderr and r.report["actions"] == []
    r = w.run("lock", "--check")
    assert r.returncode == 1 and "missing: //envs:tiny" in r.stdout

    assert "locked: //envs:tiny " in w.run("lock", check=True).stdout
    assert w.run("lock", "--check", check=True).returncode == 0
    assert versions(w.root / "envs/pylock.tiny.toml") == {"numpy": "1.0.0", "tinypkg": "1.0"}

    # A spec the lock no longer answers: exit 2 naming the fix, before anything runs.
    w.write("envs/BUILD.toml", (w.root / "envs/BUILD.toml").read_text().replace('["tinypkg"]', '["tinypkg>=1.0"]'))
    r = w.build("//envs:tiny")
    assert r.returncode == 2 and "envs/BUILD.toml:1: envs/pylock.tiny.toml no longer matches" in r.stderr
    assert "run `tpbuild lock //envs:tiny`" in r.stderr
    r = w.run("lock", "--check")
    assert r.returncode == 1 and "stale: //envs:tiny" in r.stdout
    # ... and the server's platform is part of what a lock answers.
    w.run("lock", check=True)
    w.write("tpbuild.toml", (w.root / "tpbuild.toml").read_text() + 'platform = "aarch64"\n')
    assert w.run("lock", "--check").returncode == 1
    w.run("lock", check=True)
    assert lock_doc(w.root / "envs/pylock.tiny.toml")["tool"]["tpbuild"]["platform"] == "aarch64-manylinux_2_28"

    # A lock edited by hand into something a locked install cannot use: exit 2 at the lock file.
    lock = w.root / "envs/pylock.tiny.toml"
    lock.write_text(lock.read_text().replace("hashes = { sha256", "hashes = { md5"))
    r = w.build("//envs:tiny")
    assert r.returncode == 2 and r.stderr.startswith("error: envs/pylock.tiny.toml: packages[")
    assert "every wheel needs a url and a sha256 hash" in r.stderr
    assert "unusable: //envs:tiny" in w.run("lock", "--check").stdout
    # One whose package has no wheel, only a source distribution, is refused the same way.
    w.run("lock", check=True)
    doc = lock.read_text()
    sdist = 'sdist = { url = "http://127.0.0.1:9/tinypkg-1.0.tar.gz", hashes = { sha256 = "%s" } }' % ("0" * 64)
    lock.write_text(re.sub(r"wheels = \[.*tinypkg-1\.0-py3-none-any\.whl.*\]", sdist, doc))
    r = w.build("//envs:tiny")
    assert r.returncode == 2 and "tinypkg 1.0 has no wheel for this Python and platform" in r.stderr
    assert "pip wheel --no-deps tinypkg==1.0" in r.stderr


def test_a_requirements_file_is_locked_and_its_edits_make_the_lock_stale(tmp_path, index):
    w = env_ws(tmp_path / "ws", tmp_path / "cache", index.url)
    w.write("envs/BUILD.toml", '[python_env.tiny]\npython = "3.11"\nmanager = "venv"\nrequirements = "req.txt"\n')
    w.write("envs/req.txt", "tinypkg==1.0\n")
    w.run("lock", check=True)
    assert versions(w.root / "envs/pylock.tiny.toml") == {"numpy": "1.0.0", "tinypkg": "1.0"}
    w.write("envs/req.txt", "tinypkg==1.0  # pinned\n")
    r = w.build("//envs:tiny")
    assert r.returncode == 2 and "envs/pylock.tiny.toml no longer matches" in r.stderr
    assert "locked: //envs:tiny " in w.run("lock", "//envs:tiny", check=True).stdout
    assert w.run("lock", "--check", check=True).returncode == 0


def test_require_lock_refuses_conda_packages_which_only_conda_could_lock(ws):
    ws.write("tpbuild.toml", '[triton]\nversion = "24.10"\nrequire_lock = true\n')
    ws.write("envs/BUILD.toml", '[python_env.c]\npython = "3.10"\nmanager = "conda"\nconda = ["numpy"]\n')
    r = ws.build("//envs:c")
    assert r.returncode == 2 and "envs/BUILD.toml:4: conda packages cannot be locked by tpbuild" in r.stderr
    assert "set require_lock = false" in r.stderr


def test_an_sdist_only_requirement_is_refused_at_lock(tmp_path, index):
    index.add("onlysdist-1.0.tar.gz", b"not built here")
    w = env_ws(tmp_path / "ws", tmp_path / "cache", index.url)
    w.write("envs/BUILD.toml", (w.root / "envs/BUILD.toml").read_text().replace('["tinypkg"]', '["tinypkg", "onlysdist"]'))
    r = w.run("lock")
    assert r.returncode == 2 and "//envs:tiny: its packages cannot be locked" in r.stderr
    assert "from wheels alone (a locked env installs no sdist)" in r.stderr and "onlysdist" in r.stderr
    assert not (w.root / "envs/pylock.tiny.toml").exists()


# -- building from a lock ---------------------------------------------------------------------------


@needs_unshare
def test_locked_env_builds_offline_from_shared_wheels_byte_identical_and_pinned(tmp_path, index):
    shared = tmp_path / "shared"
    a = env_ws(tmp_path / "a" / "ws", tmp_path / "a" / "cache", index.url)
    a.run("lock", check=True)
    lock = (a.root / "envs/pylock.tiny.toml").read_text()
    r = a.build("//envs:tiny", "--remote-cache", f"file://{shared}", check=True)
    assert sorted(r.statuses("executed")) == ["//envs:tiny%EnvSpec", "//envs:tiny%FetchWheel",
                                              "//envs:tiny%FetchWheel", "//envs:tiny%LockedRequirements",
                                              "//envs:tiny%PythonEnv"]
    assert r.report["warnings"] == []
    assert installed(tiny_tarball(a)) == {"numpy-1.0.0.dist-info", "tinypkg-1.0.dist-info"}

    # The index gains a newer tinypkg after locking: `lock` keeps the pin, `lock --upgrade` moves it.
    index.add_wheel("tinypkg", "1.1", requires=("numpy",))
    assert "up to date: //envs:tiny " in a.run("lock", check=True).stdout
    assert versions(a.root / "envs/pylock.tiny.toml")["tinypkg"] == "1.0"

    # A CI runner in another directory, with an empty cache and no network, sharing the team's remote
    # cache, which holds the wheels but not this env (its entry expired, as old objects of a shared cache
    # do): the wheels come from the remote's blobs and the env is built from them with no index at all,
    # byte for byte what the first workspace built, and still with tinypkg 1.0.
    env_entries = [e for e in (shared / "ac").rglob("*") if e.is_file() and b'"tiny.tar.gz"' in e.read_bytes()]
    assert len(env_entries) == 1
    env_entries[0].unlink()
    b = env_ws(tmp_path / "b" / "ws", tmp_path / "b" / "cache", "http://127.0.0.1:9/unreachable/simple")
    (b.root / "envs/pylock.tiny.toml").write_text(lock)
    p = offline(b, "build", "//envs:tiny", "--remote-cache", f"file://{shared}", "--report", str(tmp_path / "b.json"))
    assert p.returncode == 0, p.stdout + p.stderr
    acts = [(x["mnemonic"], x["status"]) for x in json.loads((tmp_path / "b.json").read_text())["actions"]]
    assert [st for m, st in acts if m == "FetchWheel"] == ["remote", "remote"]
    assert ("PythonEnv", "executed") in acts
    assert tiny_tarball(b) == tiny_tarball(a)

    # A cached wheel changed on disk is caught by its hash: dropped and fetched again (offline, that
    # fails naming the download, and no env is built from the changed file) ...
    tiny_whl = (index.root / "files" / "tinypkg-1.0-py3-none-any.whl").read_bytes()
    blob = blob_holding(b.cache, tiny_whl)
    blob.chmod(0o644)
    blob.write_bytes(tiny_whl.replace(b"MARK = ''", b"MARK = 'x'"))
    p = offline(b, "build", "//envs:tiny")
    assert p.returncode == 1 and "could not download http://127.0.0.1" in p.stderr + p.stdout
    assert not blob.exists()
    # ... and once it is back (from the index), the env is the cached one: same wheels, same key.
    r = b.build("//envs:tiny", check=True)
    assert ("//envs:tiny", "FetchWheel", "executed") in r.statuses()
    assert ("//envs:tiny", "PythonEnv", "cached") in r.statuses()
    assert blob_holding(b.cache, tiny_whl)

    # A file on the index that is not the locked one is refused by its SHA-256, and never stored.
    index.add("tinypkg-1.0-py3-none-any.whl", tiny_whl.replace(b"MARK = ''", b"MARK = 'y'"))
    c = env_ws(tmp_path / "c" / "ws", tmp_path / "c" / "cache", index.url)
    (c.root / "envs/pylock.tiny.toml").write_text(lock)
    r = c.build("//envs:tiny")
    assert r.returncode == 1 and "but the lock says" in r.output and "Nothing was stored" in r.output
    assert not [p for p in (c.cache / "cas").rglob("*") if p.is_file() and b"MARK = 'y'" in p.read_bytes()]

    r = a.run("lock", "--upgrade", "tinypkg", check=True)
    assert "locked: //envs:tiny " in r.stdout
    assert versions(a.root / "envs/pylock.tiny.toml") == {"numpy": "1.0.0", "tinypkg": "1.1"}


# -- the lock file format ---------------------------------------------------------------------------


def test_lock_format_what_a_locked_install_can_use():
    from tpbuild_triton import pylock

    req = pylock.Request("3.11", "x86_64-manylinux_2_28", ("a>1",), None)
    head = 'lock-version = "1.0"\ncreated-by = "uv"\n'
    w1, w2 = "1" * 64, "2" * 64
    body = (f'[[packages]]\nname = "b"\nversion = "2"\nwheels = [{{ url = "https://x/b-2-py3-none-any.whl", '
            f'hashes = {{ sha256 = "{w2}" }} }}, {{ url = "https://x/b-2-cp311-cp311-manylinux_2_28_x86_64.whl", '
            f'hashes = {{ sha256 = "{w1}" }} }}]\n'
            '[[packages]]\nname = "a"\nversion = "1.5"\nwheels = [{ url = "https://x/a-1.5-py3-none-any.whl", '
            f'hashes = {{ sha256 = "{w1}" }} }}]\n')
    inputs, wheels = pylock.parse(pylock.with_our_table(head + body, "//e:x", req).encode())
    assert inputs == req.inputs() != pylock.Request("3.10", req.platform, req.pip, None).inputs()
    assert [w.file for w in wheels] == ["a-1.5-py3-none-any.whl", "b-2-cp311-cp311-manylinux_2_28_x86_64.whl",
                                        "b-2-py3-none-any.whl"]
    # Every wheel of a package is an accepted hash; pip picks the one for the platform.
    assert pylock.hashed_requirements(wheels) == (f"a==1.5 --hash=sha256:{w1}\n"
                                                  f"b==2 --hash=sha256:{w1} --hash=sha256:{w2}\n").encode()
    for bad, needle in (
        ('[[packages]]\nname = "c"\nversion = "1"\nvcs = { url = "https://g/c", commit-id = "ab" }\n', "comes from a vcs"),
        ('[[packages]]\nname = "c"\nversion = "1"\ndirectory = { path = "c" }\n', "comes from a directory"),
        ('[[packages]]\nname = "c"\n', "needs a name and a version"),
        ('[[packages]]\nname = "c"\nversion = "1"\nwheels = [{ url = "https://x/c.tar.gz", '
         f'hashes = {{ sha256 = "{w1}" }} }}]\n', "is not a wheel file name"),
    ):
        with pytest.raises(pylock.LockError, match=needle):
            pylock.parse(pylock.with_our_table(head + bad, "//e:x", req).encode())
    with pytest.raises(pylock.LockError, match="not written by this `tpbuild lock`"):
        pylock.parse((head + body).encode())
