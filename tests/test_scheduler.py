"""The scheduler and the runner stack, in-process, with fakes at the seams.

No subprocess and no blob store on disk: sources live in a temporary directory (the stat memo reads
them for real), blobs and action entries in dicts, and execution is a fake runner whose outputs are
a pure function of its inputs' content (or, for "constant" actions, of nothing: an env rebuilt
byte-identical). The real `LocalCache` / `RemoteCache` wrappers and the real `Scheduler` run on top,
so these tests say what a hit, a miss, early cutoff and a no-op are, fast enough for hypothesis to
try hundreds of random graphs. The CLI's behaviour stays covered by the subprocess tests.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpbuild import critical, digest
from tpbuild.action import (Action, Artifact, Entry, EntryKind, RunAction, Source, Symlink, Tree, TreeAction,
                            WriteAction, blobs_of, key_of, tree_digest)
from tpbuild.errors import BuildError
from tpbuild.label import Label
from tpbuild.runner import (LOCAL, ExecutedBy, LocalCache, Origin, RemoteCache, Request, Result, Runner, Where,
                            Wrapper, stack)
from tpbuild.outputs import Last
from tpbuild.scheduler import BuildContext, Hooks, Scheduler, Status
from tpbuild.statcache import StatCache

OWNER = Label("p", "t")


# -- fakes at the seams ------------------------------------------------------------------------------

class Blobs:
    """An in-memory blob store: what the caches need of `Cas` (verify) and what fake execution writes."""

    def __init__(self):
        self.data: dict[str, bytes] = {}

    def put(self, content: bytes) -> str:
        d = digest.of_bytes(content)
        self.data[d] = content
        return d

    def verify(self, d: str, executable: bool) -> bool:
        return d in self.data and digest.of_bytes(self.data[d]) == d


class MemoryActionCache:
    def __init__(self):
        self.entries: dict[str, tuple] = {}

    def get(self, key: str):
        hit = self.entries.get(key)  # as ActionCache stores it: a composed tree as its own entries
        return None if hit is None else (hit.own, len(hit.parts)) if isinstance(hit, Tree) else (hit, 0)

    def put(self, key: str, entries: tuple) -> None:
        self.entries[key] = entries


class FakeExecution:
    """Executes by hashing: an output's content is derived from the action id and its inputs' key
    digests, or is fixed for actions in `constant` (a rebuild that comes out byte-identical)."""

    def __init__(self, blobs: Blobs, constant: frozenset[str] = frozenset(), fail: frozenset[str] = frozenset(),
                 blocking: bool = True):
        self.blobs = blobs
        self.constant = constant
        self.fail = fail
        self.ran: list[str] = []
        self.threads: set[str] = set()
        self._blocking = blocking
        self._lock = threading.Lock()

    def lookup(self, req: Request) -> Result | None:
        return None

    def run(self, req: Request) -> Result:
        with self._lock:
            self.ran.append(req.action.id)
            self.threads.add(threading.current_thread().name)
        req.started()
        if req.action.id in self.fail:
            raise BuildError(f"{req.action.id} failed")
        seed = "" if req.action.id in self.constant else repr([r.digest for r in req.inputs])
        content = f"{req.action.id}|{seed}".encode()
        return Result((Entry.file("o", self.blobs.put(content), len(content), False),), Origin.EXECUTED, LOCAL,
                      unstable=not req.stable())

    def blocking(self, action: Action) -> bool:
        return self._blocking


@dataclass
class World:
    """One workspace's sources and one cache, built again and again."""

    root: Path
    blobs: Blobs
    ac: MemoryActionCache
    last: dict

    @classmethod
    def new(cls, root: Path) -> "World":
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, Blobs(), MemoryActionCache(), {})

    def write(self, rel: str, text: str) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def build(self, actions: dict[str, Action], execution, *, remote=None, keep_going=False, jobs=2,
              hooks: Hooks | None = None, clock=None, remember=True):
        runner: Runner = execution
        if remote is not None:
            runner = RemoteCache(runner, remote, self.blobs)
        runner = LocalCache(runner, self.ac, self.blobs, self.last)
        ctx = BuildContext(root=self.root, statcache=StatCache(self.root / ".statcache"), runner=runner,
                           hooks=hooks or Hooks(), **({"clock": clock} if clock else {}))
        outcomes = Scheduler(ctx, actions, jobs=jobs, keep_going=keep_going).run()
        if remember:  # as build.run does: the last-build record
            for aid, o in outcomes.items():
                if o.status.succeeded and not o.unstable:
                    self.last[aid] = Last(o.key, tree_digest(o.entries), o.entries)
        return outcomes


def run_action(name: str, *inputs) -> RunAction:
    return RunAction(id=f"//p:t%{name}", owner=OWNER, mnemonic=name, rule="r", rule_version="1",
                     inputs=tuple((f"in{i}", x) for i, x in enumerate(inputs)), argv=("true",), outs=("o",))


def art(name: str) -> Artifact:
    return Artifact(f"//p:t%{name}", "o")


def graph(*actions: Action) -> dict[str, Action]:
    return {a.id: a for a in actions}


# -- a hit, a miss, and where a hit is decided ----------------------------------------------------------

def test_a_second_build_executes_nothing_and_answers_from_the_last_build_record(tmp_path):
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    acts = graph(run_action("A", Source("a.txt")), run_action("B", art("A")))
    first = FakeExecution(w.blobs)
    assert {o.status for o in w.build(acts, first).values()} == {Status.EXECUTED}
    again = FakeExecution(w.blobs)
    w.ac.entries.clear()  # the record alone answers: the action cache is not read
    outcomes = w.build(acts, again)
    assert again.ran == [] and {o.status for o in outcomes.values()} == {Status.CACHED}


def test_a_damaged_blob_makes_the_hit_a_miss(tmp_path):
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    acts = graph(run_action("A", Source("a.txt")))
    w.build(acts, FakeExecution(w.blobs))
    (d,) = [e.digest for e in w.last["//p:t%A"].entries]
    w.blobs.data[d] = b"bit rot"
    again = FakeExecution(w.blobs)
    assert w.build(acts, again)["//p:t%A"].status is Status.EXECUTED and again.ran == ["//p:t%A"]


def test_the_action_cache_answers_another_workspace_of_the_same_cache(tmp_path):
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    acts = graph(run_action("A", Source("a.txt")))
    w.build(acts, FakeExecution(w.blobs))
    w.last.clear()
    again = FakeExecution(w.blobs)
    assert w.build(acts, again)["//p:t%A"].status is Status.CACHED and again.ran == []


class FakeRemote:
    """A remote cache holding entries by key material (blobs are shared with the local store here)."""

    def __init__(self):
        self.entries: dict[bytes, tuple] = {}
        self.lookups = 0

    def lookup(self, material: bytes, cas):
        self.lookups += 1
        return self.entries.get(material)

    def store(self, material: bytes, entries: tuple, cas) -> None:
        self.entries[material] = entries


def test_remote_cache_hits_are_stored_locally_and_executions_uploaded(tmp_path):
    remote = FakeRemote()
    one = World.new(tmp_path / "one")
    one.write("a.txt", "a")
    acts = graph(run_action("A", Source("a.txt")), run_action("B", art("A")))
    one.build(acts, FakeExecution(one.blobs), remote=remote)
    assert len(remote.entries) == 2

    two = World.new(tmp_path / "two")
    two.write("a.txt", "a")
    two.blobs = one.blobs  # the remote's blobs are fetched into the local store by a real client
    ex = FakeExecution(two.blobs)
    outcomes = two.build(acts, ex, remote=remote)
    assert ex.ran == [] and {o.status for o in outcomes.values()} == {Status.REMOTE}
    assert set(two.ac.entries) == {o.key for o in outcomes.values()}
    # Now local: the remote is not asked again.
    two.last.clear()
    asked = remote.lookups
    assert {o.status for o in two.build(acts, FakeExecution(two.blobs), remote=remote).values()} == {Status.CACHED}
    assert remote.lookups == asked


def test_a_result_whose_source_moved_while_it_ran_is_used_but_never_stored(tmp_path):
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    remote = FakeRemote()

    class Editing(FakeExecution):
        def run(self, req):
            w.write("a.txt", "edited meanwhile")
            return super().run(req)

    warnings = []
    outcomes = w.build(graph(run_action("A", Source("a.txt"))), Editing(w.blobs), remote=remote,
                       hooks=Hooks(warn=warnings.append))
    o = outcomes["//p:t%A"]
    assert o.status is Status.EXECUTED and o.unstable and o.entries
    assert w.ac.entries == {} and remote.entries == {} and "//p:t%A" not in w.last
    assert any("not cached" in m for m in warnings)


# -- failures --------------------------------------------------------------------------------------------

def test_a_failure_skips_its_dependents_and_keep_going_builds_the_rest(tmp_path):
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    acts = graph(run_action("A", Source("a.txt")), run_action("B", art("A")), run_action("C", art("B")),
                 run_action("D", Source("a.txt")))
    out = w.build(acts, FakeExecution(w.blobs, fail=frozenset({"//p:t%A"})), keep_going=True, jobs=1)
    assert out["//p:t%A"].status is Status.FAILED and "failed" in out["//p:t%A"].error.message
    assert out["//p:t%B"].status is Status.SKIPPED and out["//p:t%C"].status is Status.SKIPPED
    assert "not run: //p:t%A failed" in out["//p:t%C"].error.message
    assert out["//p:t%D"].status is Status.EXECUTED


def test_without_keep_going_nothing_new_starts_after_a_failure(tmp_path):
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    acts = graph(run_action("A", Source("a.txt")), *(run_action(f"X{i}", art("A")) for i in range(5)),
                 run_action("Z", Source("a.txt")))
    ex = FakeExecution(w.blobs, fail=frozenset({"//p:t%A"}))
    out = w.build(acts, ex, jobs=1)
    assert not any(o.status is Status.EXECUTED for a, o in out.items() if a.startswith("//p:t%X"))


def test_a_missing_source_fails_its_action_with_a_clear_error(tmp_path):
    w = World.new(tmp_path)
    out = w.build(graph(run_action("A", Source("gone.txt"))), FakeExecution(w.blobs))
    assert out["//p:t%A"].status is Status.FAILED
    assert "gone.txt disappeared" in out["//p:t%A"].error.message


def test_an_input_naming_an_output_the_upstream_did_not_make_fails(tmp_path):
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    acts = graph(run_action("A", Source("a.txt")), run_action("B", Artifact("//p:t%A", "nope")))
    out = w.build(acts, FakeExecution(w.blobs))
    assert out["//p:t%B"].status is Status.FAILED and "no output 'nope'" in out["//p:t%B"].error.message


# -- threads, hooks, clock ---------------------------------------------------------------------------------

def test_what_does_not_block_runs_on_the_scheduler_thread(tmp_path):
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    acts = graph(*(run_action(f"A{i}", Source("a.txt")) for i in range(4)))
    inline = FakeExecution(w.blobs, blocking=False)
    w.build(acts, inline)
    assert inline.threads == {threading.current_thread().name}
    w2 = World.new(tmp_path / "w2")
    w2.write("a.txt", "a")
    workers = FakeExecution(w2.blobs, blocking=True)
    w2.build(acts, workers)
    assert all(t.startswith("tpbuild") for t in workers.threads)


def test_hooks_see_starts_only_of_executions_and_every_finish_with_the_clock_s_seconds(tmp_path):
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    acts = graph(run_action("A", Source("a.txt")), run_action("B", art("A")))
    ticks = iter(range(0, 1000, 5))
    started, finished = [], []
    hooks = Hooks(started=lambda a: started.append(a.id), finished=finished.append)
    w.build(acts, FakeExecution(w.blobs), hooks=hooks, clock=lambda: next(ticks), jobs=1)
    assert started == ["//p:t%A", "//p:t%B"] and [o.seconds for o in finished] == [5, 5]
    started.clear()
    w.build(acts, FakeExecution(w.blobs), hooks=hooks, clock=lambda: 0.0)
    assert started == []


# -- the stack the build options choose -----------------------------------------------------------------

class FakeRemoteExecutor(Wrapper):
    """A remote executor at the seam REAPI plugs into: remotable actions run "elsewhere", the rest locally."""

    def run(self, req: Request) -> Result:
        if not req.action.remotable:
            return self.inner.run(req)
        content = b"remote:" + req.key.encode()
        return Result((Entry.file("o", digest.of_bytes(content), len(content), False),), Origin.EXECUTED,
                      ExecutedBy(Where.REMOTE, "worker-7"))


def test_the_stack_puts_remote_execution_under_the_caches(tmp_path):
    from tpbuild.executor import Executor

    blobs = Blobs()
    runner = stack(Executor(tmp_path, blobs, tmp_path / "logs"), ac=MemoryActionCache(), cas=blobs, last={},
                   remote_cache=FakeRemote(), remote_executor=FakeRemoteExecutor)
    layers = []
    while runner is not None:
        layers.append(type(runner).__name__)
        runner = getattr(runner, "inner", None)
    assert layers == ["LocalCache", "RemoteCache", "FakeRemoteExecutor", "LocalExecution"]


def test_remote_execution_is_reported_with_its_worker_and_local_only_stays_local(tmp_path):
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    small = RunAction(id="//p:t%Small", owner=OWNER, mnemonic="Small", rule="r", rule_version="1",
                      inputs=(("a", Source("a.txt")),), argv=("true",), outs=("o",), local_only=True)
    acts = graph(run_action("Big", Source("a.txt")), small)
    local = FakeExecution(w.blobs)
    out = w.build(acts, FakeRemoteExecutor(local))
    assert out["//p:t%Big"].executed_by == ExecutedBy(Where.REMOTE, "worker-7")
    assert out["//p:t%Small"].executed_by == LOCAL and local.ran == ["//p:t%Small"]


def test_the_progress_lines_say_which_worker_ran_a_remote_action(tmp_path):
    import io

    from tpbuild.console import Console

    w = World.new(tmp_path)
    w.write("a.txt", "a")
    small = RunAction(id="//p:t%Small", owner=OWNER, mnemonic="Small", rule="r", rule_version="1",
                      inputs=(("a", Source("a.txt")),), argv=("true",), outs=("o",), local_only=True,
                      description="Small //p:t")
    big = RunAction(id="//p:t%Big", owner=OWNER, mnemonic="Big", rule="r", rule_version="1",
                    inputs=(("a", Source("a.txt")),), argv=("true",), outs=("o",), description="Big //p:t")
    stream = io.StringIO()
    console = Console(2, stream=stream)
    w.build(graph(big, small), FakeRemoteExecutor(FakeExecution(w.blobs)), jobs=1,
            hooks=Hooks(started=console.started, finished=console.finished))
    (big_line,) = [l for l in stream.getvalue().splitlines() if "Big //p:t" in l]
    (small_line,) = [l for l in stream.getvalue().splitlines() if "Small //p:t" in l]
    assert big_line.endswith("s, remote on worker-7)") and "remote" not in small_line


# -- the action model -------------------------------------------------------------------------------------

def test_exec_properties_enter_the_key_and_local_only_does_not():
    base = run_action("A", Source("a.txt"))
    key = key_of(base.key_material([], ""))
    assert key_of(base.replace(local_only=True).key_material([], "")) == key
    assert base.replace(local_only=True) == base
    on_image = base.replace(exec_properties=(("container-image", "docker://x"),))
    assert key_of(on_image.key_material([], "")) != key and on_image != base
    assert b'"exec_properties":{"container-image":"docker://x"}' in on_image.key_material([], "")
    assert b"exec_properties" not in base.key_material([], "")


def test_only_run_actions_may_go_remote():
    w = WriteAction(id="w", owner=OWNER, mnemonic="W", rule="r", rule_version="1", out="x", content=b"")
    t = TreeAction(id="t", owner=OWNER, mnemonic="T", rule="r", rule_version="1")
    assert not w.remotable and not t.remotable and run_action("R").remotable


def test_entries_keep_their_on_disk_encoding():
    f = Entry("a", EntryKind.EXECUTABLE, "xxh3_128:00", 3)
    link = Symlink("b", "../a")
    assert [f.to_json(), link.to_json()] == [["a", "x", "xxh3_128:00", 3], ["b", "l", "../a", 0]]
    assert [Entry.from_json(f.to_json()), Entry.from_json(link.to_json())] == [f, link]
    assert Entry("a", "x", "xxh3_128:00", 3) == f  # the letter is accepted where a kind is read back
    assert tree_digest((f, link)) == digest.of_value([["a", "x", "xxh3_128:00"], ["b", "l", "../a"]])
    assert list(blobs_of((f, link))) == [("xxh3_128:00", True)]
    with pytest.raises(ValueError):
        Entry("c", EntryKind.SYMLINK, "target", 0)


# -- properties on random graphs ----------------------------------------------------------------------------

@st.composite
def dags(draw):
    """A random action graph over a few sources: each action reads sources and earlier actions."""
    n_sources = draw(st.integers(1, 4))
    n = draw(st.integers(1, 14))
    actions = []
    for i in range(n):
        ups = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        srcs = draw(st.lists(st.integers(0, n_sources - 1), max_size=2, unique=True))
        if not ups and not srcs:
            srcs = [0]
        actions.append(run_action(f"A{i}", *(Source(f"s{s}.txt") for s in srcs), *(art(f"A{u}") for u in ups)))
    constant = frozenset(a.id for a in actions if draw(st.booleans()) and draw(st.booleans()))
    edited = draw(st.integers(0, n_sources - 1))
    return n_sources, graph(*actions), constant, edited


def model_outputs(acts: dict[str, Action], sources: dict[str, str], constant: frozenset[str]) -> dict[str, str]:
    """What each action's output *is*, computed without the scheduler: the reference for cutoff."""
    out: dict[str, str] = {}

    def value(aid: str) -> str:
        if aid not in out:
            a = acts[aid]
            parts = [sources[x.path] if isinstance(x, Source) else value(x.action) for _, x in a.inputs]
            out[aid] = "const" if aid in constant else repr(parts)
        return out[aid]

    for aid in acts:
        value(aid)
    return out


# Derandomized and without an example database: CI runs the same 150 graphs each time and leaves no files.
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(dags())
def test_a_no_op_build_runs_nothing(tmp_path_factory, case):
    n_sources, acts, constant, _ = case
    w = World.new(tmp_path_factory.mktemp("noop"))
    for s in range(n_sources):
        w.write(f"s{s}.txt", f"source {s}")
    w.build(acts, FakeExecution(w.blobs, constant))
    again = FakeExecution(w.blobs, constant)
    outcomes = w.build(acts, again)
    assert again.ran == []
    assert all(o.status is Status.CACHED for o in outcomes.values())


@SETTINGS
@given(dags())
def test_early_cutoff_executes_exactly_what_an_edit_reaches(tmp_path_factory, case):
    n_sources, acts, constant, edited = case
    w = World.new(tmp_path_factory.mktemp("cutoff"))
    sources = {f"s{s}.txt": f"source {s}" for s in range(n_sources)}
    for p, text in sources.items():
        w.write(p, text)
    before = model_outputs(acts, sources, constant)
    first = w.build(acts, FakeExecution(w.blobs, constant))

    sources[f"s{edited}.txt"] = "edited"
    w.write(f"s{edited}.txt", "edited")
    after = model_outputs(acts, sources, constant)
    ex = FakeExecution(w.blobs, constant)
    second = w.build(acts, ex)

    # An action runs again exactly when something it reads changed: a source edited, or an upstream
    # output that came out different. An upstream rebuilt byte-identical stops the wave there.
    def reads_changed(a: Action) -> bool:
        return any((isinstance(x, Source) and x.path == f"s{edited}.txt")
                   or (isinstance(x, Artifact) and before[x.action] != after[x.action]) for _, x in a.inputs)

    assert sorted(ex.ran) == sorted(aid for aid, a in acts.items() if reads_changed(a))
    for aid, o in second.items():
        assert (o.entries == first[aid].entries) == (before[aid] == after[aid])

    # And the result equals a clean build's.
    clean = World.new(tmp_path_factory.mktemp("clean"))
    for p, text in sources.items():
        clean.write(p, text)
    fresh = clean.build(acts, FakeExecution(clean.blobs, constant))
    assert {a: o.entries for a, o in second.items()} == {a: o.entries for a, o in fresh.items()}


# -- the real stack on a temporary directory ------------------------------------------------------------

def test_the_real_stack_runs_all_three_variants_and_answers_a_rebuild_from_its_caches(tmp_path):
    """No fake: `runner.stack` over the real executor, blob store and action cache, in-process."""
    from tpbuild.actioncache import ActionCache
    from tpbuild.cas import Cas
    from tpbuild.executor import Executor

    root, cache = tmp_path / "ws", tmp_path / "cache"
    (root / "p").mkdir(parents=True)
    (root / "p/run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "p/run.sh").chmod(0o755)
    w = WriteAction(id="//p:t%W", owner=OWNER, mnemonic="W", rule="r", rule_version="1", out="cfg.txt",
                    content=b"config\n")
    t = TreeAction(id="//p:t%T", owner=OWNER, mnemonic="T", rule="r", rule_version="1",
                   inputs=(("bin/run.sh", Source("p/run.sh")), ("cfg.txt", Artifact(w.id, "cfg.txt"))))
    r = RunAction(id="//p:t%R", owner=OWNER, mnemonic="R", rule="r", rule_version="1",
                  inputs=(("tree", Artifact(t.id)),),
                  argv=("sh", "-c", "mkdir out/d && cat tree/cfg.txt > out/d/c && ln -s c out/d/link"), outs=("d",))
    acts = graph(w, t, r)

    def build(last: dict):
        stats = StatCache(tmp_path / "statcache")
        cas = Cas(cache, stats)
        runner = stack(Executor(root, cas, tmp_path / "logs"), ac=ActionCache(cache), cas=cas, last=last)
        return Scheduler(BuildContext(root=root, statcache=stats, runner=runner), acts, jobs=2,
                         keep_going=False).run()

    first = build({})
    assert {o.status for o in first.values()} == {Status.EXECUTED}, [o.error for o in first.values()]
    assert {o.executed_by for o in first.values()} == {LOCAL}
    assert [e.to_json()[:2] for e in first[t.id].entries] == [["bin/run.sh", "x"], ["cfg.txt", "f"]]
    assert first[r.id].entries[1] == Symlink("d/link", "c") and first[r.id].entries[0].path == "d/c"
    again = build({})  # a new workspace record: the action cache answers, and nothing runs
    assert {o.status for o in again.values()} == {Status.CACHED}
    assert {a: o.entries for a, o in again.items()} == {a: o.entries for a, o in first.items()}


# -- the ready queue: critical path by past durations (critical.py) ----------------------------------------

def long_chain_and_short_work() -> dict[str, Action]:
    """Four short independent actions declared before a chain of three long ones."""
    return graph(*(run_action(f"S{i}", Source("a.txt")) for i in range(4)),
                 run_action("L1", Source("a.txt")), run_action("L2", art("L1")), run_action("L3", art("L2")))


def test_the_long_chain_starts_first_by_the_last_build_s_durations(tmp_path):
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    acts = long_chain_and_short_work()
    first = FakeExecution(w.blobs)
    w.build(acts, first, jobs=1)
    assert first.ran[0] == "//p:t%S0"  # nothing known: declaration order
    memo = tmp_path / "memo" / "durations"
    past = {**{f"//p:t%S{i}": 0.1 for i in range(4)}, "//p:t%L1": 1.0, "//p:t%L2": 1.0, "//p:t%L3": 1.0}
    assert critical.Durations(memo, tmp_path / "tmp").save(past.items()) is None
    prio = critical.priorities(acts, critical.Durations(memo, tmp_path / "tmp"))
    assert prio["//p:t%L1"] == pytest.approx(3.0) and prio["//p:t%S0"] == pytest.approx(0.1)
    w2 = World.new(tmp_path / "w2")
    w2.write("a.txt", "a")
    again = FakeExecution(w2.blobs)
    runner = LocalCache(again, w2.ac, w2.blobs, w2.last)
    ctx = BuildContext(root=w2.root, statcache=StatCache(w2.root / ".statcache"), runner=runner)
    walk = critical.topological(acts)  # as a build hands it over: its edges are not walked again
    assert critical.waiting(walk[1]) == critical.edges(acts)[0]
    Scheduler(ctx, acts, jobs=1, keep_going=False, priority=prio, walk=walk).run()
    assert again.ran[0] == "//p:t%L1"
    assert again.ran.index("//p:t%L2") < again.ran.index("//p:t%S1")  # the chain goes on while it is longest


def test_an_action_never_timed_is_estimated_by_its_mnemonic_and_the_path_of_a_build_is_its_longest_chain():
    acts = graph(*(run_action(f"G{i}", Source("a.txt")).replace(mnemonic="Gen") for i in range(3)),
                 run_action("X", art("G0")))
    prio = critical.priorities(acts, {"//p:t%G0": 0.5, "//p:t%G1": 1.5})
    assert prio["//p:t%G2"] == pytest.approx(1.0)  # never timed: the average of its mnemonic's
    assert prio["//p:t%X"] == 0.0  # nothing known of its mnemonic
    assert prio["//p:t%G0"] == pytest.approx(0.5)
    acts = long_chain_and_short_work()
    chain, total = critical.path(acts, {"//p:t%L1": 1.0, "//p:t%L2": 0.5, "//p:t%L3": 0.25, "//p:t%S0": 1.5})
    assert chain == ["//p:t%L1", "//p:t%L2", "//p:t%L3"] and total == pytest.approx(1.75)


def test_a_damaged_durations_memo_orders_nothing(tmp_path):
    memo = tmp_path / "durations"
    memo.write_text(f"tpbuild-memo durations v{critical.VERSION}\n{{not json")
    assert critical.Durations(memo, tmp_path / "tmp") == {}


def test_run_actions_start_whenever_a_worker_is_free_while_in_process_work_runs_here(tmp_path):
    """With -j 2 both workers are busy at once, even with in-process work ready on this thread."""
    w = World.new(tmp_path)
    w.write("a.txt", "a")
    both = threading.Barrier(2, timeout=10)

    class Mixed(FakeExecution):
        def run(self, req):
            if self.blocking(req.action):
                both.wait()  # fails (BrokenBarrierError) unless the two run actions overlap
            return super().run(req)

        def blocking(self, action):
            return action.mnemonic.startswith("R")

    acts = graph(*(run_action(f"W{i}", Source("a.txt")) for i in range(3)),
                 run_action("R1", Source("a.txt")), run_action("R2", Source("a.txt")))
    ex = Mixed(w.blobs)
    out = w.build(acts, ex, jobs=2)
    assert {o.status for o in out.values()} == {Status.EXECUTED}
