"""The command line: the only module that prints results or chooses an exit code.

Exit codes: 0 success, 1 a build failure, 2 bad input or usage. Expected failures arrive as
`TpbuildError` values and are rendered once here; anything else is a bug and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import EXIT_BUILD, EXIT_OK, EXIT_USAGE, TpbuildError, UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 too, but we want our own format
        raise UserError(f"{message} (see '{self.prog} --help')")


def _parser(commands: dict) -> argparse.ArgumentParser:
    # Accepted before and after the command; SUPPRESS keeps a subcommand from resetting a value given earlier.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("-C", dest="directory", metavar="DIR", help="run as if started in DIR")
    common.add_argument("--cache-dir", metavar="DIR", help="local cache (default: $TPBUILD_CACHE_DIR, "
                        "[cache] dir, ~/.cache/tpbuild)")
    p = _Parser(prog="tpbuild", description="Build Triton Python-backend model repositories.",
                parents=[common])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    b = sub.add_parser("build", parents=[common], help="build targets")
    b.add_argument("patterns", nargs="*", metavar="PATTERN")
    b.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    b.add_argument("-k", "--keep-going", action="store_true", help="build what does not depend on a failure")
    b.add_argument("--report", metavar="FILE", help="write a JSON report (also on failure)")

    q = sub.add_parser("query", parents=[common], help="list targets matching patterns")
    q.add_argument("patterns", nargs="*", metavar="PATTERN")
    q.add_argument("--output", choices=("label", "json"), default="label")
    q.add_argument("--deps", action="store_true", help="include dependencies")

    g = sub.add_parser("graph", parents=[common], help="print the target graph as Graphviz DOT")
    g.add_argument("patterns", nargs="*", metavar="PATTERN")

    c = sub.add_parser("clean", parents=[common], help="remove tpbuild-out (and with --cache, the cache)")
    c.add_argument("--cache", action="store_true", help="also empty the local cache")
    for cmd in commands.values():
        cmd.configure(sub.add_parser(cmd.name, parents=[common], help=cmd.help))
    return p


BUILTIN = ("build", "query", "graph", "clean")


def _commands(argv: list[str]) -> dict:
    """Commands of rule sets (`tpbuild.commands` entry points), loaded only when one is asked for,
    or for help, so the common commands do not pay for scanning installed packages."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first in BUILTIN:
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


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
    except TpbuildError as e:
        print(f"error: {e.render()}", file=sys.stderr)
        code = e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `tpbuild query //... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


def _main(argv: list[str]) -> int:
    commands = _commands(argv)
    parser = _parser(commands)
    args, extra = parser.parse_known_args(argv)
    # Subtractive patterns (-//pkg/...) look like options to argparse; they are patterns.
    stray = [a for a in extra if not a.startswith(("-//", "//"))]
    if stray or (extra and not hasattr(args, "patterns")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.patterns = [*args.patterns, *extra]
    from . import workspace

    directory = getattr(args, "directory", None)
    start = Path(directory) if directory else Path.cwd()
    if directory and not start.is_dir():
        raise UserError(f"-C {directory}: no such directory")
    ws = workspace.load(workspace.find_root(start))
    cache_dir = workspace.cache_dir(ws, getattr(args, "cache_dir", None))
    if args.command == "clean":
        from .build import clean

        clean(ws, cache_dir, args.cache)
        print(f"removed {ws.root / workspace.OUT_DIR}" + (f" and {cache_dir}" if args.cache else ""))
        return EXIT_OK
    if args.command == "build":
        return _build(ws, args, cache_dir)
    if args.command in commands:
        return commands[args.command].run(Session(ws, cache_dir), args)
    return _query(ws, args, cache_dir)


def _query(ws, args, cache_dir: Path) -> int:
    from . import workspace
    from .analysis import analyze

    a = analyze(ws, args.patterns or ["//..."], workspace.memo_dir(cache_dir, ws.root))
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


def _build(ws, args, cache_dir: Path) -> int:
    result = Session(ws, cache_dir).build(args.patterns, jobs=args.jobs, keep_going=args.keep_going,
                                          report_path=args.report)
    return EXIT_OK if result.success else EXIT_BUILD


class Session:
    """What a command (built-in or a rule set's, such as `tpbuild test`) works with: the workspace and
    a build that reports progress and a summary exactly as `tpbuild build` does."""

    def __init__(self, ws, cache_dir: Path):
        self.ws = ws
        self.cache_dir = cache_dir

    def build(self, patterns: list[str], *, jobs: int, keep_going: bool = False, report_path: str | None = None,
              extra_report: dict | None = None):
        from . import build, report
        from .analysis import analyze
        from .console import Console
        from .executor import current_step
        from .scheduler import Hooks
        from .workspace import memo_dir

        if jobs < 1:
            raise UserError("-j/--jobs must be at least 1")
        rpath = Path(report_path).resolve() if report_path else None
        try:
            a = analyze(self.ws, patterns, memo_dir(self.cache_dir, self.ws.root))
        except TpbuildError as e:
            if rpath:
                report.write(rpath, report.to_json(None, e.render()))
            raise
        logs = self.ws.root / build.STATE_DIR / "logs"
        console = Console(len(a.actions), step_of=lambda action: current_step(logs, action))
        hooks = Hooks(started=console.started, finished=console.finished, warn=console.warn)
        result = build.run(self.ws, a, build.Options(cache_dir=self.cache_dir, jobs=jobs, keep_going=keep_going),
                           hooks)
        console.close()
        if rpath:
            report.write(rpath, report.to_json(result))
        _summary(result)
        return result


def _summary(result) -> None:
    counts: dict[str, int] = {}
    for o in result.outcomes.values():
        counts[o.status] = counts.get(o.status, 0) + 1
    for o in result.errors():
        print(f"error: {o.error.render()}", file=sys.stderr)
    n_targets = len(result.targets)
    ok = sum(1 for t in result.targets.values() if t.status == "built")
    parts = [f"{counts.get('executed', 0)} executed", f"{counts.get('cached', 0)} from cache"]
    if counts.get("remote"):
        parts.append(f"{counts['remote']} from remote cache")
    if counts.get("failed"):
        parts.append(f"{counts['failed']} failed")
    if counts.get("skipped"):
        parts.append(f"{counts['skipped']} skipped")
    verb = "Built" if result.success else "FAILED:"
    print(f"{verb} {ok}/{n_targets} targets, {len(result.outcomes)} actions: {', '.join(parts)} "
          f"in {result.seconds:.2f}s")
    requested = set(result.analysis.requested)
    shown = [p for lbl, t in result.targets.items() if lbl in requested for p in t.outputs]
    for p in shown[:10]:
        print(f"  {p}")
    if len(shown) > 10:
        print(f"  ... and {len(shown) - 10} more")
