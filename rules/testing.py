"""`tpbuild test`: build models, serve them from a real Triton server on loopback, and check each one.

A model is checked against the test cases declared in its manifest (`[[triton_model.<name>.test]]`),
or, without any, by a smoke test generated from the config the server reports (so auto-completed
configs are covered): it must load READY and answer with outputs of the declared names, dtypes and
shapes. Models are loaded one at a time in explicit mode, so a model that fails to load is reported
with its part of the server log and does not hold up the others.
"""

from __future__ import annotations

import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tpbuild.plugin import BuildError, Built, Command, Session, UserError


NP_OF = {
    "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16, "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8, "TYPE_INT16": np.int16, "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64, "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


@dataclass
class CaseResult:
    name: str
    ok: bool
    message: str = ""
    seconds: float = 0.0


@dataclass
class ModelResult:
    label: str
    model: str
    cases: list[CaseResult] = field(default_factory=list)
    log: str = ""
    loaded: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.cases) and all(c.ok for c in self.cases)


def _tensor(value, dtype) -> np.ndarray:
    if dtype is np.object_:
        return np.array(value, dtype=np.object_)
    return np.array(value, dtype=dtype)


def _specs(cfg: dict, key: str) -> dict[str, dict]:
    return {t["name"]: t for t in cfg.get(key, [])}


def _dtype(spec: dict):
    dt = NP_OF.get(spec.get("data_type", ""))
    if dt is None:
        raise UserError(f"tensor {spec['name']}: data type {spec.get('data_type')!r} is not supported by tpbuild test")
    return dt


def _as_text(a: np.ndarray) -> list:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in a.reshape(-1).tolist()]


def compare(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str:
    """'' when equal (floats within tolerance), else what differs."""
    if tuple(got.shape) != tuple(want.shape):
        return f"{name}: shape {list(got.shape)}, expected {list(want.shape)}"
    if want.dtype == np.object_ or got.dtype == np.object_:
        g, w = _as_text(got), _as_text(want)
        return "" if g == w else f"{name}: {g}, expected {w}"
    if np.issubdtype(want.dtype, np.floating):
        if np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True):
            return ""
    elif np.array_equal(got, want):
        return ""
    return f"{name}: {got.tolist()}, expected {want.tolist()}"


def smoke_inputs(cfg: dict) -> dict[str, np.ndarray]:
    """Inputs generated from the config: -1 dims become 1, a batch dimension of 1 is added."""
    batch = [1] if cfg.get("max_batch_size", 0) > 0 else []
    out = {}
    for name, spec in _specs(cfg, "input").items():
        if spec.get("optional"):
            continue
        dt = _dtype(spec)
        shape = batch + [d if d > 0 else 1 for d in (int(x) for x in spec.get("dims", []))]
        if dt is np.object_:
            out[name] = np.full(shape, b"tpbuild", dtype=np.object_)
        else:
            out[name] = np.ones(shape, dtype=dt)
    return out


def check_outputs(cfg: dict, got: dict[str, np.ndarray]) -> str:
    """'' when every declared output came back with its dtype and a shape matching its dims."""
    batch = cfg.get("max_batch_size", 0) > 0
    problems = []
    for name, spec in _specs(cfg, "output").items():
        if name not in got:
            problems.append(f"output {name} missing")
            continue
        a = got[name]
        dt = _dtype(spec)
        if np.dtype(dt) != a.dtype:
            problems.append(f"output {name}: dtype {a.dtype}, config says {spec['data_type']}")
        dims = [int(d) for d in spec.get("dims", [])]
        shape = list(a.shape)[1:] if batch else list(a.shape)
        if len(shape) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, shape)):
            problems.append(f"output {name}: shape {list(a.shape)} does not match dims {dims}"
                            + (" after the batch dimension" if batch else ""))
    return "; ".join(problems)


def run_case(srv, model: str, cfg: dict, case: dict, root: Path) -> CaseResult:
    t0 = time.monotonic()
    ins, outs = _specs(cfg, "input"), _specs(cfg, "output")
    try:
        if case.get("npz"):
            data = np.load(root / case["npz"], allow_pickle=True)
            inputs = {k.split(".", 1)[1]: data[k] for k in data.files if k.startswith("input.")}
            expected = {k.split(".", 1)[1]: data[k] for k in data.files if k.startswith("expected.")}
        else:
            unknown = [k for k in case.get("inputs", {}) if k not in ins] + \
                      [k for k in case.get("expected", {}) if k not in outs]
            if unknown:
                return CaseResult(case["name"], False, f"no tensor named {', '.join(unknown)} in the config")
            inputs = {k: _tensor(v, _dtype(ins[k])) for k, v in case.get("inputs", {}).items()}
            expected = {k: _tensor(v, _dtype(outs[k])) for k, v in case.get("expected", {}).items()}
        got = srv.infer(model, inputs, outputs=list(expected) or None, version=case.get("version"))
    except Exception as e:  # an inference error is this case's failure, not the run's
        return CaseResult(case["name"], False, str(e), time.monotonic() - t0)
    diffs = [d for k, w in expected.items()
             if (d := (compare(k, got[k], w, case["rtol"], case["atol"]) if k in got else f"{k}: missing"))]
    return CaseResult(case["name"], not diffs, "; ".join(diffs), time.monotonic() - t0)


def run_smoke(srv, model: str, cfg: dict) -> CaseResult:
    t0 = time.monotonic()
    try:
        got = srv.infer(model, smoke_inputs(cfg))
    except Exception as e:
        return CaseResult("smoke", False, str(e), time.monotonic() - t0)
    problem = check_outputs(cfg, got)
    return CaseResult("smoke", not problem, problem, time.monotonic() - t0)


def write_junit(path: Path, results: list[ModelResult]) -> None:
    suite = ET.Element("testsuite", name="tpbuild test", tests=str(sum(len(r.cases) or 1 for r in results)),
                       failures=str(sum(1 for r in results for c in r.cases if not c.ok)),
                       errors=str(sum(1 for r in results if not r.cases)))
    for r in results:
        if not r.cases:
            tc = ET.SubElement(suite, "testcase", classname=r.label, name="load")
            ET.SubElement(tc, "error", message="model did not load").text = r.log
        for c in r.cases:
            tc = ET.SubElement(suite, "testcase", classname=r.label, name=c.name, time=f"{c.seconds:.3f}")
            if not c.ok:
                ET.SubElement(tc, "failure", message=c.message[:500]).text = c.message
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def models_of(session: Session, result: Built, only: set | None = None) -> dict[str, tuple]:
    """model name -> (label, output dir) for the requested models and those of requested repositories
    (of those in `only`, when given) that built."""
    found: dict[str, tuple] = {}
    for label in result.requested:
        info = result.infos[label]
        members = [label] if info.rule == "triton_model" else \
            list(info.values.get("models", {}).values()) if info.rule == "model_repository" else []
        for m in members:
            if (only is not None and m not in only) or m not in result.outputs:
                continue
            found.setdefault(result.infos[m].values["model_name"], (m, session.output(m)))
    return dict(sorted(found.items()))

def check_model(srv, root: Path, name: str, label, info, load_timeout: float, run_tests: bool = True) -> ModelResult:
    """(Re)load a model in an explicit-mode server and run its cases (or the smoke test) unless
    `run_tests` is false. A load failure comes back with the server's log lines since the request."""
    res = ModelResult(str(label), name)
    mark = len(srv.log_text())
    try:
        srv.load(name, timeout=load_timeout)
    except BuildError as e:
        res.log = (e.message + "\n" + srv.log_text()[mark:]).strip()
        return res
    res.loaded = True
    if not run_tests:
        return res
    cfg = srv.model_config(name)
    cases = info.values.get("tests", ())
    res.cases = [run_case(srv, name, cfg, c, root) for c in cases] if cases else [run_smoke(srv, name, cfg)]
    if not res.ok:
        res.log = srv.log_text()[mark:].strip()
    return res


class TestCommand(Command):
    name = "test"
    help = "build models and test them on a real Triton server"
    builds = True

    def configure(self, parser) -> None:
        parser.add_argument("patterns", nargs="*", metavar="PATTERN")
        parser.add_argument("-j", "--jobs", type=int, default=__import__("os").cpu_count() or 1)
        parser.add_argument("-k", "--keep-going", action="store_true")
        parser.add_argument("--report", metavar="FILE", help="write the build's JSON report")
        parser.add_argument("--junit", metavar="FILE", help="write JUnit XML for CI test views")
        parser.add_argument("--tritonserver", metavar="PATH", help="a tritonserver binary or install directory")
        parser.add_argument("--load-timeout", type=float, default=180, help="seconds a model may take to load")

    def run(self, session: Session, args) -> int:
        from .server import TritonServer, chosen_server

        result = session.build(args.patterns, jobs=args.jobs, keep_going=args.keep_going, report_path=args.report,
                               changed_since=args.changed_since, summary_path=args.summary)
        if result is None:  # nothing changed since --changed-since
            return 0
        if not result.success:
            return 1
        # With --changed-since only the affected models are tested, not every member of a repository
        # that includes one.
        models = models_of(session, result, set(result.requested) if args.changed_since else None)
        if not models and args.changed_since:
            print(f"no model is affected since {args.changed_since}")
            return 0
        if not models:
            raise UserError("no triton_model among these targets: name models or model repositories to test")
        install = chosen_server(args.tritonserver, session)
        results: list[ModelResult] = []
        with tempfile.TemporaryDirectory(prefix="tpbuild-test-") as tmp:
            repo = Path(tmp) / "repository"
            repo.mkdir()
            for name, (label, out) in models.items():
                (repo / name).symlink_to(out)
            print(f"testing {len(models)} model(s) on {install.binary}", file=sys.stderr)
            with TritonServer(repo, install=install, explicit_models=True, log_path=Path(tmp) / "server.log") as srv:
                for name, (label, _out) in models.items():
                    results.append(self._test_model(srv, session.root, name, label, result.infos[label],
                                                    args.load_timeout))
        if args.junit:
            write_junit(Path(args.junit).resolve(), results)
        session.summarize_tests([(r.label, c.name, c.ok, c.message) for r in results for c in r.cases]
                                + [(r.label, "load", False, "did not load") for r in results if not r.cases])
        return self._print(results)

    @staticmethod
    def _test_model(srv, root: Path, name: str, label, info, load_timeout: float) -> ModelResult:
        res = check_model(srv, root, name, label, info, load_timeout)
        if res.loaded:
            srv.unload(name)
        return res

    @staticmethod
    def _print(results: list[ModelResult]) -> int:
        for r in results:
            if not r.cases:
                print(f"FAIL {r.label} ({r.model}): did not load")
            for c in r.cases:
                print(f"{'PASS' if c.ok else 'FAIL'} {r.label} {c.name}" + ("" if c.ok else f": {c.message}"))
            if not r.ok and r.log:
                print("  server log:\n" + "\n".join("    " + l for l in r.log.splitlines()[-30:]))
        passed = sum(1 for r in results for c in r.cases if c.ok)
        failed = sum(1 for r in results for c in r.cases if not c.ok) + sum(1 for r in results if not r.cases)
        print(f"{passed} passed, {failed} failed")
        return 0 if failed == 0 else 1
