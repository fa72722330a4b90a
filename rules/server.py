"""A real Triton server on loopback, for `tpbuild test` and the end-to-end tests.

The server comes from the `nvidia-pytriton` wheel (a complete Triton 2.51 / r24.10 that serves Python
models on the CPU) or from an explicit `tritonserver` binary. Everything listens on 127.0.0.1 on free
ports; the server runs in its own process group so `stop()` takes its stub processes with it.
Requests use Triton's HTTP/JSON protocol through the standard library, so no client package is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpbuild.plugin import BuildError, UserError

_DTYPES = {
    "BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}


def triton_dtype(arr: np.ndarray) -> str:
    if arr.dtype == np.object_ or arr.dtype.kind in "SU":
        return "BYTES"
    for name, t in _DTYPES.items():
        if name != "BYTES" and arr.dtype == np.dtype(t):
            return name
    raise UserError(f"numpy dtype {arr.dtype} has no Triton datatype")


@dataclass(frozen=True)
class ServerInstall:
    binary: Path
    backend_dir: Path  # the python backend: libtriton_python.so, triton_python_backend_utils.py
    stubs_dir: Path | None  # <stubs_dir>/3.X/triton_python_backend_stub
    lib_dirs: tuple[Path, ...]

    def stub_for(self, python: str) -> Path:
        have = sorted(p.name for p in self.stubs_dir.iterdir()) if self.stubs_dir and self.stubs_dir.is_dir() else []
        stub = self.stubs_dir / python / "triton_python_backend_stub" if self.stubs_dir else None
        if stub is None or not stub.is_file():
            raise UserError(f"no prebuilt stub for Python {python} in this server install "
                            f"(it has: {', '.join(have) or 'none'})")
        return stub


def chosen_server(flag: str | None, session) -> ServerInstall:
    """The server a command serves with: `--tritonserver`, else `[triton] server`, else the wheel's."""
    from .settings import SECTION

    explicit = flag or session.section(SECTION).get("server")
    return find_server(Path(explicit) if explicit else None)


def find_server(explicit: Path | None = None) -> ServerInstall:
    if explicit is not None:
        binary = Path(explicit)
        if binary.is_dir():
            binary = binary / "bin" / "tritonserver"
        if not binary.is_file():
            raise UserError(f"no tritonserver at {explicit}: pass the binary or its install directory")
        top = binary.parent.parent
        backend = top / "backends" / "python"
        stubs = top / "python_backend_stubs"
        return ServerInstall(binary, backend, stubs if stubs.is_dir() else None, (top / "lib",))
    try:
        import pytriton
    except ImportError:
        raise UserError("no Triton server found: install one with `pip install 'tpbuild[server]'` "
                        "(the nvidia-pytriton wheel), or pass --tritonserver PATH / set [triton] server") from None
    top = Path(pytriton.__file__).parent / "tritonserver"
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    return ServerInstall(top / "bin" / "tritonserver", top / "backends" / "python",
                         top / "python_backend_stubs", (libs, top / "lib"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    def __init__(self, repository: Path | str, *, poll_seconds: int | None = None, install: ServerInstall | None = None,
                 default_stub_python: str | None = None, log_path: Path | None = None,
                 explicit_models: bool = False, startup_timeout: float = 120, http_port: int | None = None,
                 exit_timeout: int = 30, auto_complete: bool = True):
        self.repository = Path(repository).resolve()
        self.install = install or find_server()
        self.default_stub_python = default_stub_python or f"{sys.version_info[0]}.{sys.version_info[1]}"
        if "://" in str(repository):  # a URL (`s3://http://host:port/bucket/prefix`) is the server's to read
            self.repository = repository
        self.poll_seconds = poll_seconds  # poll mode: the server rescans the repository this often
        self.explicit_models = explicit_models
        self.startup_timeout = startup_timeout
        # Seconds the server waits for models to unload when stopped (Triton's default: 30). r24.10 never
        # finishes unloading a model whose reload failed, so a short wait makes stopping prompt.
        self.exit_timeout = exit_timeout
        # Off: no model load starts a stub just to auto-complete its config (about half of a Python
        # model's load time); only for complete configs and models without `auto_complete_config`.
        self.auto_complete = auto_complete
        self._tmp = Path(tempfile.mkdtemp(prefix="tpbuild-triton-"))
        self.log_path = Path(log_path) if log_path else self._tmp / "server.log"
        self.http_port = http_port or _free_port()
        self.grpc_port = _free_port()
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self._proc: subprocess.Popen | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _backend_dir(self) -> Path:
        """A backend directory whose default stub is the one asked for (the install's own otherwise)."""
        root = self._tmp / "backends"
        py = root / "python"
        py.mkdir(parents=True)
        for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
            shutil.copy2(self.install.backend_dir / f, py / f)
        if self.install.stubs_dir is not None:
            shutil.copy2(self.install.stub_for(self.default_stub_python), py / "triton_python_backend_stub")
        elif (self.install.backend_dir / "triton_python_backend_stub").exists():
            shutil.copy2(self.install.backend_dir / "triton_python_backend_stub", py / "triton_python_backend_stub")
        return root

    def start(self) -> None:
        env = dict(os.environ)
        libs = [str(p) for p in self.install.lib_dirs if p.is_dir()]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, *filter(None, [env.get("LD_LIBRARY_PATH")])])
        # The stub embeds CPython and finds its prefix (and numpy) through `python3` on PATH.
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        argv = [
            str(self.install.binary), f"--model-repository={self.repository}",
            f"--backend-directory={self._backend_dir()}",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false", "--exit-on-error=false", "--log-verbose=0",
            f"--exit-timeout-secs={self.exit_timeout}",
        ]
        if self.poll_seconds:
            argv += ["--model-control-mode=poll", f"--repository-poll-secs={self.poll_seconds}"]
        if self.explicit_models:
            argv.append("--model-control-mode=explicit")
        if not self.auto_complete:
            argv.append("--disable-auto-complete-config")
        # If this process dies without stopping the server (SIGKILL), the kernel sends the server SIGTERM
        # (util-linux's setpriv sets the parent-death signal, then execs it: the pid stays the server's).
        # The parent is the thread that starts it, so start it from one that lives as long as it should.
        if shutil.which("setpriv"):
            argv = ["setpriv", "--pdeathsig", "TERM", *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self._proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.stop()
                raise BuildError(f"tritonserver exited with code {self._proc.returncode} at startup",
                                 detail=self._tail())
            if self._get("/v2/health/live")[0] == 200:
                return
            time.sleep(0.2)
        self.stop()
        raise BuildError(f"tritonserver did not come up within {self.startup_timeout:.0f}s", detail=self._tail())

    @property
    def pid(self) -> int | None:
        """The server's pid, which is also its process group (its stubs are in it)."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if proc is not None:
            try:  # stubs the server left behind share its process group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._log.close()
        shutil.rmtree(self._tmp / "backends", ignore_errors=True)

    # -- HTTP -------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.http_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw) if raw else {}
            except ValueError:
                return e.code, {"error": raw.decode(errors="replace")}
        except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout):
            return 0, {}

    def _get(self, path: str) -> tuple[int, dict]:
        return self._request("GET", path, timeout=5)

    def _model_path(self, name: str, version: str | None) -> str:
        return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")

    def is_model_ready(self, name: str, version: str | None = None) -> bool:
        return self._get(self._model_path(name, version) + "/ready")[0] == 200

    def model_states(self) -> dict[str, tuple[str, str]]:
        """name -> (state, reason) from the repository index, for every version the server knows."""
        code, data = self._request("POST", "/v2/repository/index", {}, timeout=10)
        if code != 200 or not isinstance(data, list):
            return {}
        return {m["name"]: (m.get("state", ""), m.get("reason", "")) for m in data}

    def wait_ready(self, names, timeout: float = 120) -> dict[str, bool]:
        """Wait until each model is READY or has failed to load; never longer than `timeout`."""
        pending = set(names)
        result = {n: False for n in names}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            states = self.model_states()
            for n in list(pending):
                if self.is_model_ready(n):
                    result[n] = True
                    pending.discard(n)
                elif states.get(n, ("",))[0] == "UNAVAILABLE":
                    pending.discard(n)
            if pending:
                time.sleep(0.25)
        return result

    def load(self, name: str, timeout: float = 180) -> None:
        code, data = self._request("POST", f"/v2/repository/models/{name}/load", {}, timeout=timeout)
        if code != 200:
            raise BuildError(f"model {name!r} failed to load: {data.get('error', code)}", detail=self._tail())

    def unload(self, name: str) -> None:
        self._request("POST", f"/v2/repository/models/{name}/unload", {}, timeout=60)

    def model_config(self, name: str) -> dict:
        code, data = self._get(f"/v2/models/{name}/config")
        if code != 200:
            raise BuildError(f"no config for model {name!r}: {data.get('error', code)}")
        return data

    def infer(self, name: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None,
              version: str | None = None, timeout: float = 60) -> dict[str, np.ndarray]:
        body: dict = {"inputs": []}
        for k, arr in inputs.items():
            arr = np.asarray(arr)
            dt = triton_dtype(arr)
            flat = arr.reshape(-1).tolist()
            if dt == "BYTES":
                flat = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
            body["inputs"].append({"name": k, "shape": list(arr.shape), "datatype": dt, "data": flat})
        if outputs:
            body["outputs"] = [{"name": o} for o in outputs]
        code, data = self._request("POST", self._model_path(name, version) + "/infer", body, timeout=timeout)
        if code != 200:
            raise InferenceError(name, data.get("error", f"HTTP {code}"))
        out = {}
        for o in data.get("outputs", []):
            t = _DTYPES[o["datatype"]]
            values = o["data"]
            if o["datatype"] == "BYTES":
                values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
            out[o["name"]] = np.array(values, dtype=t).reshape(o["shape"])
        return out

    # -- logs -------------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class InferenceError(Exception):
    def __init__(self, model: str, message: str):
        super().__init__(f"{model}: {message}")
        self.model = model
        self.message = message
