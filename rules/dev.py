"""`tpbuild dev`: the model author's loop. Build, serve from a running Triton, and on every saved edit
rebuild in the same process, reload only the models whose output changed, and re-test them.

The server (explicit model control) reads a repository of its own, `tpbuild-out/.tpbuild/tmp/dev.<pid>/`,
with one directory per model: a hardlinked copy of the model's output, made afresh before each load
and renamed into place, so its path stays put (Triton re-extracts an env tarball when its path or
mtime changes, and hardlinks keep both). Not the output itself: the Python stubs write `__pycache__`
into the directory they serve from, and a pyc is trusted while its source's size and mtime second
match; a rebuilt model.py is a cache blob whose mtime is when the blob was stored, so a same-size edit
stored within the same second as the last would be served from the old bytecode (seen here). A fresh
copy has no bytecode, and tpbuild-out stays as built. The server reads a model directory only when
asked to load it, and this process asks only after the build has finished and the copy is in place.
Pointing the server at a built `model_repository` instead would tie what is served to one repository
target; patterns here may name single models.

Which models to reload: the tree digest of each model's output, as the build recorded it, against
the one last loaded. An explicit-mode load always restarts the model's stub (seconds for a Python
model), so a model whose output is byte-identical is never reloaded. A model that fails to load is
tried again only after its output changes again; Triton keeps the last good version serving.

The watcher is `watchfiles` (inotify through Rust's notify, no polling): it groups a burst of events
until none has arrived for `STEP_MS`, which is the debounce. Everything under the workspace is
watched except tpbuild-out, the cache and the usual editor/VCS litter; an event that changes no
action key costs a no-op build.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from tpbuild.plugin import OUT_DIR, STATE_DIR, BuildError, Command, UserError, process_dir

from .testing import check_model, models_of

STEP_MS = 50  # quiet time that ends a burst of file events
DEBOUNCE_MS = 1600  # a burst that never goes quiet is still answered after this long
READY_MS = 200  # how often the watcher thread looks up when nothing changes (and checks for stop)
LOG_LINES = 30  # server log lines shown for a model that failed to load
EXIT_TIMEOUT = 3  # seconds the server may take to unload models when stopped (see TritonServer)


def _watchfiles():
    try:
        import watchfiles
    except ImportError:
        raise UserError("tpbuild dev watches files with the watchfiles package: "
                        "install it with `pip install 'tpbuild[dev]'`") from None
    return watchfiles


def _say(line: str) -> None:
    print(line, flush=True)


class _Signals:
    """SIGTERM ends the loop as Ctrl-C does, through the `finally` that stops the server; while it
    stops, further signals are ignored so a second Ctrl-C cannot leave the server half stopped."""

    def __enter__(self) -> "_Signals":
        self._old = {s: signal.signal(s, self._raise) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    @staticmethod
    def _raise(_signum, _frame):
        raise KeyboardInterrupt

    def shield(self) -> None:
        for s in self._old:
            signal.signal(s, signal.SIG_IGN)

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


class DevLoop:
    """One session of `tpbuild dev`: the server, and what it serves (model name -> tree digest)."""

    def __init__(self, session, args, work: Path):
        self.session = session
        self.args = args
        self.work = work
        self.repo = work / "repository"
        self.root = session.root
        self.srv = None
        self.served: dict[str, str] = {}  # model name -> output digest last loaded (or tried)
        self.cycles = 0

    # -- one build and what follows it ------------------------------------------------------------

    def cycle(self) -> None:
        first = self.cycles == 0
        self.cycles += 1
        t0 = time.monotonic()
        try:
            result = self.session.build(self.args.patterns, jobs=self.args.jobs, keep_going=True)
        except (UserError, BuildError) as e:  # a bad manifest: nothing was built
            if first and isinstance(e, UserError) and e.location is None:
                raise  # a bad pattern or option, not an edit to wait for a fix of
            _say(f"error: {e.render()}")
            _say(f"-- build FAILED in {time.monotonic() - t0:.2f}s; "
                 + ("waiting for a fix" if self.srv is None else "the last good models keep serving"))
            return
        models = models_of(self.session, result)
        broken = sorted((info.values["model_name"], label) for label, info in result.infos.items()
                        if info.rule == "triton_model" and label not in result.outputs)
        if not models and not broken:
            if first:
                raise UserError("no triton_model among these targets: name models or model repositories to serve")
            _say("-- no model among these targets any more")
        for name, label in broken:
            _say(f"FAIL {label} ({name}): build failed; "
                 + ("the last good build keeps serving" if name in self.served else "not served"))
        for name in sorted(self.served.keys() - models.keys() - {n for n, _ in broken}):
            self._drop(name)
        changed = {n: v for n, v in models.items() if self.served.get(n) != result.outputs[v[0]]}
        starting = changed and self.srv is None
        if starting:
            self._start_server()
        loaded = sum(self._reload(name, label, out, result) for name, (label, out) in changed.items())
        _say(f"-- build {'OK' if result.success else 'FAILED'} in {time.monotonic() - t0:.2f}s: "
             f"{loaded} model(s) {'loaded' if starting else 'reloaded'}"
             + (f", {len(changed) - loaded} failed to load" if loaded < len(changed) else "")
             + f", {len(models) - len(changed)} unchanged")

    def _reload(self, name: str, label, out: Path, result) -> bool:
        """Load the model's new output and test it; False if the server could not load it."""
        target = out
        self._stage(name, target)
        verb = "rebuilt, reloaded" if name in self.served else "loaded"
        self.served[name] = result.outputs[label]
        if self.args.no_auto_complete and _completes_config(target):
            _say(f"note: {label} defines auto_complete_config, which --no-auto-complete skips: "
                 "its config is served as written")
        t0 = time.monotonic()
        res = check_model(self.srv, self.root, name, label, result.infos[label], self.args.load_timeout,
                          run_tests=not self.args.no_test)
        tested = sum(c.seconds for c in res.cases)
        head = f"{label} ({name}): {verb} in {time.monotonic() - t0 - tested:.2f}s"
        if not res.loaded:
            keeps = "the last good version keeps serving" if self.srv.is_model_ready(name) else "not served"
            _say(f"FAIL {label} ({name}): did not load; {keeps}")
            for line in _log_lines(res.log)[-LOG_LINES:]:
                _say(f"    {line}")
            return False
        if self.args.no_test:
            _say(f"READY {head}")
        elif res.ok:
            _say(f"PASS {head}; {len(res.cases)} case(s) passed in {tested:.2f}s")
        else:
            failing = next(c for c in res.cases if not c.ok)
            _say(f"FAIL {head}; case {failing.name!r}: {failing.message}")
        return True

    def _drop(self, name: str) -> None:
        """A model the patterns no longer build (removed or renamed): stop serving it."""
        self.srv.unload(name)
        shutil.rmtree(self.repo / name, ignore_errors=True)
        del self.served[name]
        _say(f"UNLOADED {name}: no longer among the targets")

    def _stage(self, name: str, output: Path) -> None:
        """Put a fresh hardlinked copy of a model's output at `repository/<name>` (see the module doc)."""
        new, old = self.work / f"new.{name}", self.work / f"old.{name}"
        for leftover in (new, old):
            shutil.rmtree(leftover, ignore_errors=True)
        for dirpath, dirnames, filenames in os.walk(output):
            here = new / os.path.relpath(dirpath, output)
            here.mkdir(parents=True, exist_ok=True)
            for d in [d for d in dirnames if d == "__pycache__" or os.path.islink(os.path.join(dirpath, d))]:
                dirnames.remove(d)
                if d != "__pycache__":
                    filenames.append(d)  # a symlink to a directory is copied as the link
            for f in filenames:
                src = os.path.join(dirpath, f)
                if os.path.islink(src):
                    os.symlink(os.readlink(src), here / f)
                else:
                    os.link(src, here / f)
        dest = self.repo / name
        if dest.exists():
            os.rename(dest, old)
        os.rename(new, dest)
        shutil.rmtree(old, ignore_errors=True)

    # -- server -----------------------------------------------------------------------------------

    def _start_server(self) -> None:
        from .server import TritonServer, chosen_server

        log = self.root / STATE_DIR / "logs" / "tritonserver-dev.log"
        self.srv = TritonServer(self.repo, install=chosen_server(self.args.tritonserver, self.session),
                                explicit_models=True, log_path=log, http_port=self.args.port,
                                exit_timeout=EXIT_TIMEOUT, auto_complete=not self.args.no_auto_complete)
        self.srv.start()
        _say(f"serving on HTTP {self.srv.http_url}  gRPC 127.0.0.1:{self.srv.grpc_port}")
        _say(f"  tritonserver pid {self.srv.pid}, repository {self.repo}, log {log}")

    def close(self) -> None:
        if self.srv is not None:
            self.srv.stop()

    # -- watching ---------------------------------------------------------------------------------

    def run(self, watchfiles) -> None:
        """Watch first, then build: an edit saved while the first build or the loads run is not lost."""
        with _Watcher(watchfiles, self.root, [self.session.root / OUT_DIR, self.session.cache_dir]) as watcher:
            self.cycle()
            _say(f"watching {self.root} (Ctrl-C to stop)")
            while True:
                paths = watcher.next_changes()
                _say(f"-- changed: {', '.join(paths[:5])}" + (f" and {len(paths) - 5} more" if len(paths) > 5 else ""))
                self.cycle()


class _Watcher:
    """watchfiles on a thread, so the watches exist before the first build and the main thread stays
    free for signals; changes that arrive while a build runs are merged into one next cycle."""

    def __init__(self, watchfiles, root: Path, ignore: list[Path]):
        self._watchfiles = watchfiles
        self._root = root
        self._filter = watchfiles.DefaultFilter(ignore_paths=[str(p) for p in ignore])
        self._queue: queue.Queue = queue.Queue()  # sets of changed paths; None: the watcher ended
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._failure: Exception | None = None
        self._thread = threading.Thread(target=self._watch, name="tpbuild-dev-watch", daemon=True)

    def _watch(self) -> None:
        try:
            # A timeout yields an empty batch: the first one says the watches are in place.
            for batch in self._watchfiles.watch(self._root, watch_filter=self._filter, step=STEP_MS,
                                                debounce=DEBOUNCE_MS, rust_timeout=READY_MS, yield_on_timeout=True,
                                                stop_event=self._stop, raise_interrupt=False):
                self._ready.set()
                if batch:
                    self._queue.put({p for _kind, p in batch})
        except Exception as e:  # e.g. the inotify watch limit: the main thread reports it
            self._failure = e
        finally:
            self._ready.set()
            self._queue.put(None)

    def _check(self) -> None:
        if self._failure is not None:
            e = self._failure
            raise BuildError(f"cannot watch {self._root}: {type(e).__name__}: {e}")

    def __enter__(self) -> "_Watcher":
        self._thread.start()
        self._ready.wait()
        self._check()
        return self

    def next_changes(self) -> list[str]:
        """Block until files change; the changed paths (all that queued up), relative to the root."""
        changed: set[str] = set()
        while not changed:
            try:
                batch = self._queue.get(timeout=0.5)  # a timeout, so Ctrl-C is seen promptly
            except queue.Empty:
                continue
            while True:
                if batch is None:
                    self._check()
                    raise BuildError(f"the file watcher on {self._root} stopped")
                changed |= batch
                try:
                    batch = self._queue.get_nowait()
                except queue.Empty:
                    break
        return sorted(os.path.relpath(p, self._root) for p in changed)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _completes_config(model_dir: Path) -> bool:
    """Whether a model's Python mentions `auto_complete_config` (a cheap, conservative look)."""
    return any(b"auto_complete_config" in p.read_bytes() for p in model_dir.rglob("*.py"))


def _log_lines(text: str) -> list[str]:
    """Triton writes a Python traceback into one log line with escaped newlines; show it as lines."""
    return [line for line in text.replace("\\n", "\n").splitlines() if line.strip()]


def _check_port(port: int) -> None:
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: a port is a number from 1 to 65535")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise UserError(f"--port {port}: {e.strerror}; pick another port or leave --port out for a free one") \
                from None


class DevCommand(Command):
    name = "dev"
    help = "serve models from a Triton server; on every edit rebuild, reload what changed, and re-test"

    def configure(self, parser) -> None:
        parser.add_argument("patterns", nargs="+", metavar="PATTERN")
        parser.add_argument("--port", type=int, metavar="HTTP", help="the server's HTTP port (default: a free one)")
        parser.add_argument("--no-test", action="store_true", help="reload only; do not run the models' test cases")
        parser.add_argument("--no-auto-complete", action="store_true",
                            help="start the server with --disable-auto-complete-config: loads about twice as fast, "
                                 "for models with complete configs and no auto_complete_config")
        parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
        parser.add_argument("--tritonserver", metavar="PATH", help="a tritonserver binary or install directory")
        parser.add_argument("--load-timeout", type=float, default=180, help="seconds a model may take to load")

    def run(self, session, args) -> int:
        watchfiles = _watchfiles()
        if args.port is not None:
            _check_port(args.port)
        sys.stdout.reconfigure(line_buffering=True)  # the build's own lines interleave with ours
        # Beside tpbuild-out's files, so the copies are hardlinks; in this process's own locked temp
        # directory, which the sweep of a concurrent build leaves alone and which goes when this process does.
        work = process_dir(session.root / STATE_DIR / "tmp") / "dev"
        (work / "repository").mkdir(parents=True)
        with _Signals() as signals:
            loop = DevLoop(session, args, work)
            try:
                loop.run(watchfiles)
            except KeyboardInterrupt:
                pass
            finally:
                signals.shield()
                loop.close()
                shutil.rmtree(work, ignore_errors=True)
        _say("stopped: the server and the watcher are shut down")
        return 0
