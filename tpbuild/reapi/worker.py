"""`tpbuild worker`: a Remote Workers API bot, for REAPI clusters that lack one (BuildGrid ships none;
Buildbarn, BuildBuddy and NativeLink bring their own and do not need this).

It opens a bot session with the scheduler (BotsService `CreateBotSession`, advertising its platform
properties on its primary device), then keeps it alive with `UpdateBotSession`: a long poll while
idle, a heartbeat every `HEARTBEAT` seconds while busy. Each lease carries an Action (or its digest);
the bot runs one at a time:

1. fetch the Action, its Command and its input root from the CAS into a fresh scratch directory, so
   the command sees exactly its inputs and nothing else;
2. run the command there in its own process group, stdout and stderr into one file (interleaved, as
   the local executor logs them), killed with the whole group after the Action's timeout;
3. upload the declared outputs that exist, and the log, then complete the lease with the
   ActionResult, the worker's name in its metadata. The lease is completed on every path: a command
   that fails or times out, or an input the CAS no longer holds (a status the client acts on).

`{python}` actions: the Command says `python3`, and the bot puts its own interpreter's directory first
on PATH, so they run with the tpbuild (and rule sets) the bot runs with. Run the bot from the
environment tpbuild is installed in. A lease the server cancels kills its process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..errors import UserError
from ..executor import kill_group
from . import merkle
from .blobs import MissingBlob, Server, Upload
from .wire import (ReapiError, bots_grpc, bots_pb2, code_pb2, digest_of, grpc, metadata_from_env, open_channel,
                   re_pb2, status_pb2, worker_pb2)

HEARTBEAT = 0.5   # seconds between UpdateBotSession calls while a lease runs
LONG_POLL = 1.0   # how long an idle UpdateBotSession may wait for work (below the server's bot keep-alive)
PENDING, ACTIVE, COMPLETED, CANCELLED = (bots_pb2.LeaseState.Value(n) for n in
                                         ("PENDING", "ACTIVE", "COMPLETED", "CANCELLED"))


def parse_properties(items: list[str]) -> dict[str, list[str]]:
    props: dict[str, list[str]] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UserError(f"--property {item!r}: use KEY=VALUE (e.g. container-image=docker://...)")
        props.setdefault(k, []).append(v)
    return props


class Bot:
    def __init__(self, url: str, instance: str, name: str, properties: dict[str, list[str]], log=None):
        self.channel = open_channel(url)
        md = metadata_from_env(os.environ)
        self.server = Server(self.channel, instance, md)
        self.bots = bots_grpc.BotsStub(self.channel)
        self.metadata = md
        self.instance = instance
        self.name = name
        self.properties = properties
        self.log = log or (lambda msg: print(f"[{name}] {msg}", file=sys.stderr, flush=True))
        self._running: dict[str, _Run] = {}
        self._started: set[str] = set()  # lease ids ever started: a lease is run once, whatever the server resends
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # a lease finished: report it now, not at the next heartbeat

    def _session(self) -> bots_pb2.BotSession:
        device = worker_pb2.Device(handle=self.name, properties=[
            worker_pb2.Device.Property(key=k, value=v) for k in sorted(self.properties) for v in self.properties[k]])
        return bots_pb2.BotSession(bot_id=self.name, status=bots_pb2.BotStatus.Value("OK"),
                                   worker=worker_pb2.Worker(devices=[device]))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def serve(self) -> None:
        """Run until stopped; a lost server is waited for (its jobs are requeued when it forgets us)."""
        while not self._stop.is_set():
            try:
                session = self.bots.CreateBotSession(
                    bots_pb2.CreateBotSessionRequest(parent=self.instance, bot_session=self._session()),
                    timeout=LONG_POLL, metadata=self.metadata)
                self.log(f"session {session.name} open, offering {self.properties or 'no properties'}")
                self._loop(session)
            except grpc.RpcError as e:
                self.log(f"scheduler: {e.code().name}: {e.details()}; retrying")
                self._stop.wait(1.0)

    def _loop(self, session: bots_pb2.BotSession) -> None:
        while not self._stop.is_set():
            for lease in session.leases:
                # BuildGrid hands leases out ACTIVE, the API's model says PENDING: either is new work.
                if lease.state in (PENDING, ACTIVE) and lease.id not in self._started:
                    self._started.add(lease.id)
                    lease.state = ACTIVE
                    run = _Run(self, lease.id, lease.payload)
                    with self._lock:
                        self._running[lease.id] = run
                    threading.Thread(target=run.go, name=f"lease-{lease.id}", daemon=True).start()
                elif lease.state == CANCELLED and lease.id in self._running:
                    self._running[lease.id].cancel()
            with self._lock:
                for lease in session.leases:
                    run = self._running.get(lease.id)
                    if run is not None and run.done.is_set():
                        lease.state = COMPLETED
                        lease.status.CopyFrom(run.status)
                        if run.result is not None:
                            lease.result.Pack(run.result)
                busy = any(not r.done.is_set() for r in self._running.values())
            sent = {l.id for l in session.leases if l.state == COMPLETED}
            session = self.bots.UpdateBotSession(
                bots_pb2.UpdateBotSessionRequest(name=session.name, bot_session=session),
                timeout=LONG_POLL if not busy else 30, metadata=self.metadata)
            with self._lock:
                for lid in sent:  # reported: the server has it now
                    self._running.pop(lid, None)
            if busy and not self._stop.is_set():
                self._wake.wait(HEARTBEAT)
                self._wake.clear()


class _Run:
    """One lease: fetch, run, upload, and a status and result for the lease whatever happens."""

    def __init__(self, bot: Bot, lease_id: str, payload):
        self.bot = bot
        self.lease_id = lease_id
        self.payload = payload
        self.done = threading.Event()
        self.status = status_pb2.Status(code=code_pb2.OK)
        self.result: re_pb2.ActionResult | None = None
        self._proc: subprocess.Popen | None = None
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True
        if self._proc is not None:
            kill_group(self._proc)

    def go(self) -> None:
        scratch = Path(tempfile.mkdtemp(prefix="tpbuild-worker-"))
        t0 = time.time()
        try:
            self._execute(scratch)
        except MissingBlob as e:
            self.status = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=f"missing input blob {e}")
        except ReapiError as e:
            self.status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=str(e))
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the lease is completed, never left hanging
            self.status = status_pb2.Status(code=code_pb2.INTERNAL, message=f"{type(e).__name__}: {e}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            self.bot.log(f"lease {self.lease_id.rsplit('/', 1)[-1][:8]}: "
                         f"{'exit ' + str(self.result.exit_code) if self.result else 'status ' + str(self.status.code)}"
                         f" in {time.time() - t0:.2f}s")
            self.done.set()
            self.bot._wake.set()

    def _execute(self, scratch: Path) -> None:
        server = self.bot.server
        if self.payload.Is(re_pb2.Action.DESCRIPTOR):
            action = re_pb2.Action()
            self.payload.Unpack(action)
        else:
            digest = re_pb2.Digest()
            self.payload.Unpack(digest)
            action = re_pb2.Action.FromString(server.read_bytes(digest))
        command = re_pb2.Command.FromString(server.read_bytes(action.command_digest))
        root = scratch / "root"
        merkle.fetch_root(server, action.input_root_digest, root)
        workdir = root / command.working_directory if command.working_directory else root
        outputs = [o for o in (list(command.output_paths) or [*command.output_files, *command.output_directories])
                   if o and not o.startswith("/") and ".." not in o.split("/")]  # inside the working directory
        for o in outputs:
            (workdir / o).parent.mkdir(parents=True, exist_ok=True)
        (scratch / "tmp").mkdir()
        env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "/usr/bin:/bin")]),
               "HOME": str(scratch / "tmp"), "TMPDIR": str(scratch / "tmp")}
        env.update({v.name: v.value for v in command.environment_variables})
        timeout = action.timeout.seconds + action.timeout.nanos / 1e9 if action.HasField("timeout") else None
        log = scratch / "log"
        result = re_pb2.ActionResult()
        result.execution_metadata.worker = self.bot.name
        result.execution_metadata.execution_start_timestamp.GetCurrentTime()
        timed_out = False
        with open(log, "wb") as logf:
            try:
                self._proc = subprocess.Popen(list(command.arguments), cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                              stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                logf.write(f"could not start {command.arguments[0]!r}: {e.strerror}\n".encode())
                result.exit_code = 127
            else:
                try:
                    result.exit_code = self._proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    result.exit_code = -signal.SIGKILL
                finally:
                    kill_group(self._proc)  # what the command left running dies with it (all of it, on a timeout)
        result.execution_metadata.execution_completed_timestamp.GetCurrentTime()
        uploads = []
        for o in outputs:
            merkle.collect(workdir, o, result, uploads)
        data = log.read_bytes()
        if data:
            result.stdout_digest.CopyFrom(digest_of(data))
            uploads.append(Upload(result.stdout_digest, data=data))
        server.upload_missing(uploads)
        self.result = result
        if timed_out:
            self.status = status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED,
                                            message=f"the command ran longer than its timeout of {timeout:g}s")
        elif self._cancelled:
            self.status = status_pb2.Status(code=code_pb2.CANCELLED, message="cancelled by the scheduler")


def main(args) -> int:
    import socket

    props = parse_properties(args.property or [])
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    bot = Bot(args.executor, args.instance_name or "", name, props)
    signal.signal(signal.SIGTERM, lambda *_: bot.stop())
    try:
        bot.serve()
    except KeyboardInterrupt:
        pass
    return 0
