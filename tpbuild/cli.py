"""The command line: the only module that prints results or chooses an exit code.

Exit codes: 0 success, 1 a build failure, 2 bad input or usage. Expected failures arrive as
`TpbuildError` values and are rendered once here; anything else is a bug and says so.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .errors import EXIT_BUILD, EXIT_OK, TpbuildError, UserError, collected


def _parser(commands: dict) -> "argparse.ArgumentParser":
    # Imported here: a no-op build answered from its stamp never parses with argparse (noop.simple_args).
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str):  # argparse exits 2 too, but we want our own format
            raise UserError(f"{message} (see '{self.prog} --help')")

    # Accepted before and after the command; SUPPRESS keeps a subcommand from resetting a value given earlier.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("-C", dest="directory", metavar="DIR", help="run as if started in DIR")
    common.add_argument("--cache-dir", metavar="DIR", help="local cache (default: $TPBUILD_CACHE_DIR, "
                        "[cache] dir, ~/.cache/tpbuild)")
    p = _Parser(prog="tpbuild", description="Build Triton Python-backend model repositories.",
                parents=[common])
    p.add_argument("--version", action="version", version=f"tpbuild {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    b = sub.add_parser("build", parents=[common], help="build targets")
    b.add_argument("patterns", nargs="*", metavar="PATTERN")
    b.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    b.add_argument("-k", "--keep-going", action="store_true", help="build what does not depend on a failure")
    b.add_argument("--report", metavar="FILE", help="write a JSON report (also on failure)")
    add_ci_options(b)

    q = sub.add_parser("query", parents=[common], help="list targets matching patterns")
    q.add_argument("patterns", nargs="*", metavar="PATTERN")
    q.add_argument("--output", choices=("label", "json"), default="label")
    q.add_argument("--deps", action="store_true", help="include dependencies")

    af = sub.add_parser("affected", parents=[common], help="list the targets a change since a git revision affects")
    af.add_argument("patterns", nargs="*", metavar="PATTERN")
    af.add_argument("--since", metavar="REF", required=True, help="a git revision (branch, tag, commit)")
    af.add_argument("--output", choices=("label", "json"), default="label")

    g = sub.add_parser("graph", parents=[common], help="print the target graph as Graphviz DOT")
    g.add_argument("patterns", nargs="*", metavar="PATTERN")

    w = sub.add_parser("worker", help="serve a REAPI cluster as a worker (a Remote Workers API bot)")
    w.add_argument("--executor", required=True, metavar="URL", help="the scheduler: grpc://HOST:PORT or grpcs://")
    w.add_argument("--instance-name", default="", metavar="NAME", help="the REAPI instance (default: '')")
    w.add_argument("--property", action="append", metavar="K=V",
                   help="a platform property this worker offers (repeatable), e.g. container-image=docker://...")
    w.add_argument("--name", metavar="NAME", help="the worker's name in reports (default: HOST-PID)")

    c = sub.add_parser("clean", parents=[common], help="remove tpbuild-out (and with --cache, the cache)")
    c.add_argument("--cache", action="store_true", help="also empty the local cache")

    ca = sub.add_parser("cache", parents=[common], help="inspect the local cache")
    cache_sub = ca.add_subparsers(dest="cache_command", metavar="ACTION", parser_class=_Parser)
    cache_sub.required = True
    v = cache_sub.add_parser("verify", parents=[common], help="re-hash every blob and re-read every entry")
    v.add_argument("--repair", action="store_true", help="quarantine bad blobs and remove damaged entries")
    h = sub.add_parser("help", help="describe a command: tpbuild help COMMAND")
    h.add_argument("topic", nargs="?", metavar="COMMAND")
    for cmd in commands.values():
        cp = sub.add_parser(cmd.name, parents=[common], help=cmd.help)
        cmd.configure(cp)
        if cmd.builds:
            add_ci_options(cp)
    return p


def add_ci_options(parser) -> None:
    """Options of every command that builds (`build`, and rule sets' such as `test`), for Session.build."""
    parser.add_argument("--changed-since", metavar="REF",
                        help="only the targets a change since git revision REF affects (and what includes them)")
    parser.add_argument("--summary", metavar="FILE", help="append a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)")
    parser.add_argument("--explain", action="store_true",
                        help="print why each executed action ran (the input, attribute or code that moved its key)")
    parser.add_argument("--profile", metavar="FILE", help="write the build's timeline as Chrome trace-event JSON "
                        "(Perfetto, chrome://tracing) and print its critical path")
    parser.add_argument("--remote-cache", metavar="URL", help="a shared cache: file:///path, http(s)://host/prefix, "
                        "s3://bucket/prefix, grpc(s)://host:port (a REAPI ActionCache and CAS) (default: $TPBUILD_REMOTE_CACHE, "
                        "[cache] remote; '' for none)")
    parser.add_argument("--no-remote-upload", action="store_true", help="read the remote cache, never write it")
    parser.add_argument("--remote-required", action="store_true",
                        help="fail the build when the remote cache or executor fails, instead of warning")
    parser.add_argument("--remote-executor", metavar="URL",
                        help="run actions on a REAPI executor: grpc://HOST:PORT or grpcs://HOST:PORT (default: "
                             "$TPBUILD_REMOTE_EXECUTOR, [remote] executor; '' for none)")
    parser.add_argument("--remote-instance-name", metavar="NAME",
                        help="the REAPI instance name (default: $TPBUILD_REMOTE_INSTANCE_NAME, [remote] instance_name, '')")


def plain_build_args(simple):
    """A command line `noop.simple_args` parsed, with every other option of `build` at its default: what
    argparse gives for it (tests/test_noop.py compares them), without importing or setting up argparse,
    which took 10 ms of a delta build (`incremental.py`)."""
    from types import SimpleNamespace

    return SimpleNamespace(**vars(simple), report=None, changed_since=None, summary=None, profile=None,
                           remote_cache=None, no_remote_upload=False, remote_required=False, remote_executor=None,
                           remote_instance_name=None)


BUILTIN = ("build", "query", "graph", "clean", "affected", "cache", "worker")


def _command_word(argv: list[str]) -> str | None:
    """The first word that is not an option or the value of one (`-C DIR build` is a build)."""
    args = iter(argv)
    for a in args:
        if a in ("-C", "--cache-dir"):
            next(args, None)
        elif not a.startswith("-"):
            return a
    return None


def _commands(argv: list[str]) -> dict:
    """Commands of rule sets (`tpbuild.commands` entry points), loaded only when one is asked for,
    or for help, so the common commands do not pay for scanning installed packages."""
    if _command_word(argv) in BUILTIN:
        return {}
    import importlib.metadata

    found = {}
    for ep in importlib.metadata.entry_points(group="tpbuild.commands"):
        try:
            cls = ep.load()
        except Exception as e:
            raise UserError(f"command {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}") from None
        found[cls.name] = cls()
    return found


def _interrupt(signum, frame):
    """Ctrl-C: the commands running in their own process groups (executor.run_in_group) get it too.
    No import here: without the executor loaded, no command runs."""
    executor = sys.modules.get(f"{__package__}.executor")
    if executor is not None:
        executor.forward_signal(signum)
    raise KeyboardInterrupt


# The cyclic garbage collector's thresholds for a command (CPython's default: 700, 10, 10). A build
# allocates millions of objects that live until it ends (memo records, declared actions, stats) and
# almost no cyclic garbage (refcounting frees the rest), yet with the default thresholds the collector
# walked the growing heap ever again: at 10,000 models 1,800 collections took 1.1 s of a 4.5 s no-op
# build without its stamp. Every 100,000 net allocations it still runs, and a full collection still
# comes (every 20 of the middle one, and as CPython decides for a heap that grew by a quarter).
GC_THRESHOLDS = (100_000, 20, 10)


def _handle_interrupts() -> bool:
    """Ctrl-C goes to `_interrupt` while a command runs, unless the caller handles it (or runs `main` on
    another thread than the main one, where no handler can be set: signal.signal says so, which spares
    a no-op build the 1 ms of importing threading to ask)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False
    try:
        signal.signal(signal.SIGINT, _interrupt)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    # What a build made, when the process ends right after it (`_end`): freed with it (`_main`).
    kept = [] if argv is None and _command_word(sys.argv[1:]) == "build" else None
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        if _handle_interrupts():
            try:
                code = _guarded(argv, kept)
            finally:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        else:
            code = _guarded(argv, kept)
    finally:
        gc.set_threshold(*before)  # main called in-process (tests) leaves its caller's collector as it was
    if kept is not None:
        _end(code)
    return code


def _end(code: int) -> None:
    """End the process of a build (its own command line, not a caller's in-process) without freeing
    what it built, one object at a time: at 10,000 models, the memo records, the graph and the state
    took 0.15-0.2 s to free after the build's last line was printed (and the interpreter's shutdown
    frees what is left the same way). The exit handlers still run (atomic.py's removes this process's
    temp directories); stdout was flushed by `_guarded`, stderr (line-buffered) is flushed here; the
    build's threads and helper processes have ended."""
    import atexit

    atexit._run_exitfuncs()
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


def _keep_freed_memory(memo: Path) -> None:
    """Have glibc's allocator keep the memory the build frees for its next blocks, in a process that ends
    right after the build (`_end`): by default it hands a freed block of over 128 KB, and the free top of
    its heap, back to the kernel, which hands the next one over again a page at a time, a fault each
    (1.8 us a fault on a KVM guest). An ordinary no-op build of 10,000 models reads its memos a megabyte
    at a time and makes and frees texts of them the size of a memo: 71,000 faults, about 13,000 fewer
    so. The peak of memory stays (what is kept is reused); only the pages already used stay the
    process's until it ends. Only in a large build (`prefetch.large`): `ctypes` is 2.4 ms to import, more
    than an edit at 1,000 models saves (650 faults, 1.2 ms). Only with glibc, whose parameters these are."""
    from .prefetch import large

    if not _glibc() or not large(memo):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return
    mallopt(_M_TRIM_THRESHOLD, _KEPT)
    mallopt(_M_MMAP_THRESHOLD, _KEPT)


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError, AttributeError):  # no such name here, or no confstr at all
        return False


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_KEPT = 1 << 30  # bytes: more than a build frees at once, or holds


def _guarded(argv: list[str] | None, kept: list | None) -> int:
    """Runs a command; every error it raises becomes a message and an exit code here, once. `kept`: not
    None when the process ends right after (`_end`), so a collector the build switched off stays off:
    switched on, it collected at the next allocation its youngest generation, which held every object
    the build made without it (0.2-0.4 s at the end of an ordinary no-op build of 10,000 models,
    freeing nothing)."""
    collecting = gc.isenabled() and kept is None  # a build may switch the collector off (`_main`): as it was for a caller in-process
    try:
        code = _main(sys.argv[1:] if argv is None else argv, kept)
    except TpbuildError as e:
        for w in e.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(f"error: {e.render()}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `tpbuild query //... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if collecting:
            gc.enable()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


def _main(argv: list[str], kept: list | None) -> int:
    """`kept`: where a build leaves what it made when the process ends right after (`_end`), None in
    process: freed by the process's end, not object by object as each frame returns (the build result,
    its analysis and state took 0.1-0.2 s to free at 10,000 models, after the build's last line)."""
    tried = None  # the stamp a plain `tpbuild build` command line was checked against, before argparse
    args = None  # that command line, when the stamp was checked against it: the build goes on without argparse
    if _command_word(argv) == "build":
        import time

        # Until rule code runs (analysis switches the collector on then: rules leave cyclic garbage): a
        # stamp's check, a delta build and the ordinary path from the memos allocate records that live
        # until the command ends and no cyclic garbage (refcounting frees the rest), and CPython's
        # cyclic collector, walking them again and again, took 15% of a delta build's CPU time at
        # 10,000 models and 0.2-0.3 s of an ordinary no-op build (nine collections that found nothing).
        gc.disable()

        from .noop import Stamp, simple_args

        simple = simple_args(argv)
        if simple is not None and (simple.directory is None or os.path.isdir(simple.directory)):
            t0 = time.monotonic()
            tried = Stamp.open(Path(simple.directory or "."), simple)
            hit = tried.replay() if tried is not None else None
            if hit is not None:
                _print_hit(hit, time.monotonic() - t0)
                return EXIT_OK
            args = plain_build_args(simple)
    commands = _commands(argv) if args is None else {}
    if args is None:
        parser = _parser(commands)
        args, extra = parser.parse_known_args(argv)
        # Subtractive patterns (-//pkg/...) look like options to argparse; they are patterns.
        stray = [a for a in extra if not a.startswith(("-//", "//"))]
        if stray or (extra and not hasattr(args, "patterns")):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        if extra:
            args.patterns = [*args.patterns, *extra]
        if args.command == "help":
            return _help(parser, args.topic)
    directory = getattr(args, "directory", None)
    start = Path(directory) if directory else Path.cwd()
    if directory and not start.is_dir():
        raise UserError(f"-C {directory}: no such directory")
    stamp = None
    if args.command == "build":
        import time

        from .noop import Stamp

        t0 = time.monotonic()
        stamp = Stamp.open(start, args)
        seen = tried is not None and stamp is not None and (tried.root, tried.key) == (stamp.root, stamp.key)
        hit = stamp.replay() if stamp is not None and not seen else None
        if seen:
            stamp = tried  # with what its check observed
        if hit is not None:  # nothing to do, known without loading a rule (noop.py)
            _print_hit(hit, time.monotonic() - t0)
            return EXIT_OK
    if args.command == "worker":
        from .reapi import worker

        return worker.main(args)
    if args.command in commands and not commands[args.command].needs_workspace:
        return commands[args.command].run(None, args)
    from . import workspace

    ws = workspace.load(workspace.find_root(start))
    cache_dir = workspace.cache_dir(ws, getattr(args, "cache_dir", None))
    if args.command == "clean":
        from .build import clean

        clean(ws, cache_dir, args.cache)
        print(f"removed {ws.root / workspace.OUT_DIR}" + (f" and what tpbuild put in {cache_dir}" if args.cache else ""))
        return EXIT_OK
    workspace.claim_cache(cache_dir)
    if args.command == "cache":
        return _verify(cache_dir, args.repair)
    if args.command == "build":
        if kept is not None:
            _keep_freed_memory(workspace.memo_dir(cache_dir, ws.root))
        return _build(ws, args, cache_dir, stamp, kept)
    if args.command == "affected":
        return _affected(ws, args, cache_dir)
    if args.command in commands:
        return commands[args.command].run(Session(ws, cache_dir, args), args)
    return _query(ws, args, cache_dir)


def _verify(cache_dir: Path, repair: bool) -> int:
    """Exit 0 when the cache is sound (or was repaired), 1 when it holds damage left in place."""
    from .build import verify_cache

    problems = verify_cache(cache_dir, repair)
    for line in problems:
        print(line)
    if not problems:
        print(f"{cache_dir}: every blob matches its name and every entry reads")
        return EXIT_OK
    print(f"{len(problems)} problem(s)" + (", repaired" if repair else "; run 'tpbuild cache verify --repair' "
                                           "to quarantine bad blobs and remove damaged entries"))
    return EXIT_OK if repair else EXIT_BUILD


def _help(parser, topic: str | None) -> int:
    """`tpbuild help [COMMAND]`: the same text as `tpbuild COMMAND --help`."""
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if topic is None:
        parser.print_help()
    elif topic in sub.choices:
        sub.choices[topic].print_help()
    else:
        raise UserError(f"no command {topic!r}: the commands are {', '.join(sorted(sub.choices))}")
    return EXIT_OK


def _query(ws, args, cache_dir: Path) -> int:
    from . import workspace
    from .analysis import analyze

    a = analyze(ws, args.patterns or ["//..."], workspace.memo_dir(cache_dir, ws.root))
    for w in a.warnings:
        print(f"warning: {w}", file=sys.stderr)
    labels = a.order if getattr(args, "deps", False) or args.command == "graph" else a.requested
    if args.command == "graph":
        print("digraph tpbuild {")
        print("  rankdir=LR;")
        for lbl in labels:
            print(f'  "{lbl}" [label="{lbl}\\n{a.graph.targets[lbl].rule.name}"];')
        for u, v in sorted(a.graph.graph.subgraph(labels).edges()):
            print(f'  "{u}" -> "{v}";')
        print("}")
    elif args.output == "json":
        out = [{"label": str(l), "rule": a.graph.targets[l].rule.name,
                "deps": sorted(str(d) for d in a.graph.graph.successors(l))} for l in labels]
        print(json.dumps(out, indent=2))
    else:
        for lbl in labels:
            print(lbl)
    return EXIT_OK


def _affected(ws, args, cache_dir: Path) -> int:
    from . import affected, workspace

    d = affected.since(ws, args.since, workspace.memo_dir(cache_dir, ws.root),
                       affected.parse_patterns(args.patterns or ["//..."]))
    if args.output == "json":
        print(json.dumps(d.to_json(), indent=2))
        return EXIT_OK
    for lbl in sorted(d.buildable()):
        print(lbl)
    for lbl in d.removed:
        print(f"removed since {args.since}: {lbl}", file=sys.stderr)
    return EXIT_OK


def _build(ws, args, cache_dir: Path, stamp, kept: list | None) -> int:
    kept = kept if kept is not None else []  # (`_main`)
    if stamp is not None and stamp.observed is not None:
        ws = ws.replace(observed=stamp.observed)  # the stats its check took, not taken again
    session = Session(ws, cache_dir, args)
    kept += (session, stamp)
    if stamp is not None and stamp.differences is not None and not (args.summary or args.profile):
        result = session.run_delta(stamp, jobs=args.jobs, keep_going=args.keep_going, report_path=args.report)
        kept.append(result)
        if result is not None:  # a change to the last build (incremental.py)
            return EXIT_OK if result.success else EXIT_BUILD
    if stamp is not None and not stamp.replayable:
        stamp = None  # left as it is, as a build it cannot answer (see noop.OBSERVING_OPTIONS)
    if stamp is not None:
        stamp.forget()  # out of date, or it would have answered
    result = session.run_build(args.patterns, jobs=args.jobs, keep_going=args.keep_going,
                               report_path=args.report, changed_since=args.changed_since,
                               summary_path=args.summary)
    kept.append(result)
    if stamp is not None and result is not None:
        stamp.record(result, cache_dir)
    return EXIT_OK if result is None or result.success else EXIT_BUILD


class Session:
    """What a command (built-in or a rule set's, such as `tpbuild test`) works with: the workspace and
    a build that reports progress and a summary exactly as `tpbuild build` does. Rule sets see it as
    `plugin.Session`; `run_build` is the engine's own, with the whole `BuildResult`."""

    def __init__(self, ws, cache_dir: Path, flags=None):
        self.ws = ws
        self.cache_dir = cache_dir
        self.flags = flags  # the parsed command line: the remote cache options of add_ci_options
        self.summary_path: Path | None = None

    @property
    def root(self) -> Path:
        return self.ws.root

    def section(self, name: str) -> dict:
        return self.ws.sections.get(name, {})

    def output(self, label) -> Path:
        from .layout import OUT_DIR

        return self.ws.root / OUT_DIR / label.path

    def analyse(self, patterns: list[str]):
        from .analysis import analyze
        from .plugin import Analysed
        from .workspace import memo_dir

        a = analyze(self.ws, patterns, memo_dir(self.cache_dir, self.ws.root))
        return Analysed(tuple(a.requested), a.infos)

    def build(self, patterns: list[str], *, jobs: int, keep_going: bool = False, report_path: str | None = None,
              changed_since: str | None = None, summary_path: str | None = None):
        from .plugin import Built

        result = self.run_build(patterns, jobs=jobs, keep_going=keep_going, report_path=report_path,
                                changed_since=changed_since, summary_path=summary_path)
        if result is None:
            return None
        placed = {}
        for label, t in result.targets.items():
            if t.status == "built" and t.outputs:
                placed[label] = result.placed[t.outputs[0]][0]
        return Built(tuple(result.analysis.requested), result.analysis.infos, result.success, placed)

    def run_build(self, patterns: list[str], *, jobs: int, keep_going: bool = False, report_path: str | None = None,
                  changed_since: str | None = None, summary_path: str | None = None):
        """None when `changed_since` leaves nothing to build (a success: the line says so)."""
        from . import prefetch, report, summary, trace
        from .analysis import analyze
        from .workspace import memo_dir

        if jobs < 1:
            raise UserError("-j/--jobs must be at least 1")
        rpath = _writable(Path(report_path).resolve(), "--report") if report_path else None
        profile = getattr(self.flags, "profile", None)
        ppath = _writable(Path(profile).resolve(), "--profile") if profile else None
        recorder = trace.Recorder() if ppath else trace.NULL
        self.summary_path = Path(summary_path).absolute() if summary_path else None  # /dev/stdout too
        if self.summary_path:
            summary.append(self.summary_path, "")  # an unwritable path is bad input, found before building
        if changed_since is not None:
            patterns = self.changed(patterns or ["//..."], changed_since)
            if not patterns:
                line = f"nothing is affected since {changed_since}"
                print(line)
                if rpath:
                    _report(rpath, {"success": True, "targets": {}, "actions": [], "seconds": 0, "warnings": []})
                if self.summary_path:
                    summary.append(self.summary_path, f"### tpbuild: {line}\n\n")
                return None
        opts = self._options(jobs, keep_going)
        opts.prune = changed_since is None and set(patterns or ["//..."]) == {"//..."}
        opts.trace = recorder
        memo = memo_dir(self.cache_dir, self.ws.root)
        opts.prefetched = prefetch.ahead(self.ws.root, memo, self.ws.observed)
        try:
            with recorder.span("analysis", "phase"):
                a = analyze(self.ws, patterns, memo, keep_going=keep_going)
        except TpbuildError as e:
            if rpath:
                _report(rpath, report.to_json(None, e.render()))
            raise
        result = self._run(a, opts, rpath)
        if self.summary_path:
            command = f"tpbuild {getattr(self.flags, 'command', 'build')}"
            summary.append(self.summary_path, summary.build_markdown(
                result, f"{command} --changed-since {changed_since}" if changed_since else command))
        if getattr(self.flags, "explain", False):
            _explain(result)
        _summary(result)
        if ppath:
            _profile(recorder, result, ppath)
        if a.errors:  # -k built what the errors left buildable; the run is still bad input
            raise collected(a.errors)
        return result

    def run_delta(self, stamp, *, jobs: int, keep_going: bool = False, report_path: str | None = None):
        """A build answered as a change to the last one (`incremental.py`) after the stamp's miss; None
        when it cannot be (nothing done then): the ordinary path."""
        from . import incremental
        from .delta import Unsettled
        from .noop import witness
        from .workspace import memo_dir

        rpath = _writable(Path(report_path).resolve(), "--report") if report_path else None
        p = incremental.plan(stamp)
        if p is None or not incremental.analyse(self.ws, p, memo_dir(self.cache_dir, self.ws.root)):
            return None
        self.ws.observed.discovery = "skipped"  # the packages are the last build's
        opts = self._options(jobs, keep_going)
        checked = incremental.Checked(stamp, p.graph)
        opts.proven = checked
        opts.unchanged = lambda: stamp.witness == witness(self.ws.root)
        try:
            result = self._run(p.analysis, opts, None, p.boundary)
        except Unsettled:
            return None
        result.execution["packages"] = len(p.packages)  # whose analysis records were read and checked
        incremental.patch(p, checked, result, self.cache_dir)
        if rpath:
            from . import report

            _report(rpath, report.to_json(result, rows=incremental.report_rows(p, result, self.cache_dir)))
        if getattr(self.flags, "explain", False):
            _explain(result)
        _summary(result, stamp.data["summary"])
        return result

    def _run(self, a, opts, rpath: Path | None, boundary: set[str] | None = None):
        """Build an analysis, with the console's progress; its report written when `rpath` is given."""
        from . import build
        from .console import Console
        from .executor import current_step
        from .scheduler import Hooks

        logs = self.ws.root / build.STATE_DIR / "logs"
        console = Console(len(a.actions), step_of=lambda action: current_step(logs, action))
        hooks = Hooks(started=console.started, finished=console.finished, warn=console.warn, settled=console.settled)
        try:
            result = build.run(self.ws, a, opts, hooks, boundary)
        finally:
            for r in (opts.remote, opts.remote_executor):
                if r is not None:
                    r.close()
        console.close()
        if rpath:
            from . import report

            _report(rpath, report.to_json(result, collected(a.errors).render() if a.errors else None))
        return result

    def _options(self, jobs: int, keep_going: bool):
        """Build options; the remote cache and eviction modules are imported only when configured."""
        from .build import Options

        opts = Options(cache_dir=self.cache_dir, jobs=jobs, keep_going=keep_going)
        flag = getattr(self.flags, "remote_cache", None)
        required = getattr(self.flags, "remote_required", False)
        no_upload = getattr(self.flags, "no_remote_upload", False)
        s = None
        if flag is not None or self.ws.cache.remote or "TPBUILD_REMOTE_CACHE" in os.environ or (
                required and not self._executor_configured()):
            from . import remote

            s = remote.settings(self.ws, flag, no_upload, required)
        grpc_cache = s is not None and s.url.startswith(("grpc://", "grpcs://"))
        if s is not None and not grpc_cache:
            from . import remote

            opts.remote = remote.open_remote(s, self.cache_dir)
        if self._executor_configured() or grpc_cache:
            from .reapi import service

            r = service.settings(self.ws, self.flags, s.url if grpc_cache else None,
                                 s.upload if s is not None else not no_upload, required)
            if r is not None:
                opts.remote_executor = service.Service(r)
        if self.ws.cache.max_size is not None:
            from .eviction import max_size

            opts.max_size = max_size(self.ws)
        return opts

    def _executor_configured(self) -> bool:
        flag = getattr(self.flags, "remote_executor", None)
        if flag is not None:
            return bool(flag)
        return bool(os.environ.get("TPBUILD_REMOTE_EXECUTOR", self.ws.remote.executor or ""))

    def changed(self, patterns: list[str], ref: str) -> list[str]:
        """The targets `patterns` name or depend on that a change since `ref` affects, as labels."""
        from . import affected
        from .analysis import analyze
        from .workspace import memo_dir

        memo = memo_dir(self.cache_dir, self.ws.root)
        wanted = set(analyze(self.ws, patterns, memo).order)
        d = affected.since(self.ws, ref, memo, affected.parse_patterns(["//..."]))
        return [str(l) for l in sorted(d.buildable() & wanted)]

    def summarize_tests(self, rows: list[tuple[str, str, bool, str]]) -> None:
        """Append test results (target, case, passed, message) to the --summary file, if one was given."""
        from . import summary

        if self.summary_path:
            summary.append(self.summary_path, summary.tests_markdown(rows))


def _report(path: Path, data: dict) -> None:
    """Write the report; checked up front, so a failure now is the disk (full): said, not a traceback."""
    from . import report

    try:
        report.write(path, data)
    except OSError as e:
        print(f"warning: could not write the report {path}: {e.strerror}", file=sys.stderr)


def _profile(recorder, result, path: Path) -> None:
    """Write the trace, its critical path on a lane of its own, and print that path with its total."""
    from . import critical

    chain, total = critical.path(result.analysis.declared, {a: o.seconds for a, o in result.outcomes.items()})
    total = round(total, 4)  # as the profile holds it, so the line printed and the file agree at a rounding edge
    on_path = set(chain)
    recorder.again([e for e in recorder.events if e["cat"] == "action" and e["args"]["id"] in on_path],
                   recorder.lane("critical path"), "critical_path")
    outcomes = [result.outcomes[a] for a in chain]
    try:
        recorder.write(path, {"critical_path": [{"id": o.action.id, "mnemonic": o.action.mnemonic,
                                                 "target": str(o.action.owner), "seconds": round(o.seconds, 4)}
                                                for o in outcomes],
                              "critical_path_seconds": total})
    except OSError as e:
        print(f"warning: could not write the profile {path}: {e.strerror}", file=sys.stderr)
    print(f"Critical path: {total:.2f}s over {len(chain)} action{'s' * (len(chain) != 1)} (profile: {path})")
    for o in outcomes:
        print(f"  {o.seconds:7.3f}s  {o.action.mnemonic} {o.action.owner} ({o.status.value})")


def _writable(path: Path, flag: str) -> Path:
    """An output file a flag names, checked before anything is built: its directory must exist (no
    directories are made anywhere) and the file must be writable; exit 2 otherwise."""
    if not path.parent.is_dir():
        raise UserError(f"{flag} {path}: the directory {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a directory; name a file")
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write it ({e.strerror})") from None
    if not existed:
        path.unlink()  # written at the end; an empty file meanwhile would look like a report
    return path


def _explain(result) -> None:
    """One line per action that ran, in build order, saying why (`explain`)."""
    from .scheduler import Status

    for label in result.analysis.order:
        for a in result.analysis.declared_of(label):
            o = result.outcomes[a.id]
            if o.why and o.status in (Status.EXECUTED, Status.FAILED):
                print(f"explain: {label} {a.mnemonic}: {o.why}")


def _summary(result, whole: dict | None = None) -> None:
    """`whole`: for a delta build, the stamp's summary of the last build's whole graph, whose part the
    result holds (the rest as it was: built, its actions from cache)."""
    from itertools import chain
    from operator import attrgetter

    from .build import TargetStatus
    from .runner import Where
    from .scheduler import Status

    # By column, counted in C: a no-op build at 10,000 models has 20,000 outcomes and 10,000 targets, and
    # an enum member's value, hash or a label's hash is a Python call each.
    statuses = list(map(attrgetter("status"), result.outcomes.values()))
    counts = {s.value: n for s in Status if (n := statuses.count(s))}
    runs = list(filter(None, map(attrgetter("executed_by"), result.outcomes.values())))
    remote_runs = sum(r.where is Where.REMOTE for r in runs)
    if counts.get("failed"):
        for o in result.errors():
            print(f"error: {o.error.render()}", file=sys.stderr)
    n_targets = len(result.targets)
    ok = list(map(attrgetter("status"), result.targets.values())).count(TargetStatus.BUILT)
    n_actions = len(result.outcomes)
    requested = result.analysis.requested
    if len(requested) == n_targets:  # every target (requested are distinct targets of the build's)
        shown = list(chain.from_iterable(map(attrgetter("outputs"), result.targets.values())))
    else:
        requested = set(requested)
        shown = [p for lbl, t in result.targets.items() if lbl in requested for p in t.outputs]
    if whole is not None:
        from .layout import OUT_DIR

        ok += whole["targets"] - n_targets
        unbuilt = {f"{OUT_DIR}/{lbl.path}" for lbl, t in result.targets.items() if t.status is not TargetStatus.BUILT}
        n_targets, n_actions = whole["targets"], whole["actions"]
        shown = [p for p in whole["shown"] if p not in unbuilt]
        counts["cached"] = n_actions - sum(n for status, n in counts.items() if status != "cached")
    parts = [f"{counts.get('executed', 0)} executed" + (f" ({remote_runs} remotely)" if remote_runs else ""),
             f"{counts.get('cached', 0)} from cache"]
    if counts.get("remote"):
        parts.append(f"{counts['remote']} from remote cache")
    for name in ("remote", "reapi"):
        if name in result.cache:
            r = result.cache[name]
            what = "remote executor" if r.get("executor") else "remote cache"
            parts.append(f"{_mb(r['downloaded_bytes'])} downloaded, {_mb(r['uploaded_bytes'])} uploaded"
                         + (f" ({what} switched off)" if r["disabled"] else ""))
    if counts.get("failed"):
        parts.append(f"{counts['failed']} failed")
    if counts.get("skipped"):
        parts.append(f"{counts['skipped']} skipped")
    _print_summary("Built" if result.success else "FAILED:", ok, n_targets, n_actions, parts,
                   result.seconds, shown)


def _print_hit(hit: dict, seconds: float) -> None:
    """A no-op build answered from its stamp: the summary the build it recorded printed."""
    _print_summary("Built", hit["targets"], hit["targets"], hit["actions"],
                   ["0 executed", f"{hit['actions']} from cache"], seconds, hit["shown"])


def _print_summary(verb: str, ok: int, n_targets: int, n_actions: int, parts: list[str], seconds: float,
                   shown: list[str]) -> None:
    print(f"{verb} {ok}/{n_targets} targets, {n_actions} actions: {', '.join(parts)} in {seconds:.2f}s")
    for p in shown[:10]:
        print(f"  {p}")
    if len(shown) > 10:
        print(f"  ... and {len(shown) - 10} more")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} B"
