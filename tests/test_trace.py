"""`--profile FILE`: the build's timeline as Chrome trace-event JSON, through the real CLI."""

from __future__ import annotations

import json

import pytest

REQUIRED = {"X": {"name", "cat", "ph", "ts", "dur", "pid", "tid", "args"}, "M": {"name", "ph", "pid", "tid", "args"}}


def chain_and_one_more(ws):
    ws.write("gen/BUILD.toml", """
        [genrule.first]
        srcs = ["a.txt"]
        outs = ["first.txt"]
        cmd = "sleep 0.2; cp $SRCS $OUT"

        [genrule.second]
        srcs = [":first"]
        outs = ["second.txt"]
        cmd = "cp $SRCS/first.txt $OUT"

        [genrule.alone]
        srcs = ["a.txt"]
        outs = ["alone.txt"]
        cmd = "cp $SRCS $OUT"
    """)
    ws.write("gen/a.txt", "a\n")


def profiled(ws, tmp_path, name: str):
    path = tmp_path / name
    r = ws.build("//...", "--profile", str(path), "-j", "2", check=True)
    return r, json.loads(path.read_text())


def spans(doc: dict, cat: str) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and e["cat"] == cat]


def check_format_and_lanes(doc: dict) -> None:
    events = doc["traceEvents"]
    assert events and all(REQUIRED[e["ph"]] <= e.keys() for e in events)
    xs = [e for e in events if e["ph"] == "X"]
    assert all(isinstance(e["ts"], (int, float)) and isinstance(e["dur"], (int, float)) and e["dur"] >= 0
               for e in xs)
    named = {e["tid"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {e["tid"] for e in xs} <= named  # every lane has a name
    # On one lane, spans nest or follow each other; two actions never overlap.
    by_lane: dict[int, list[dict]] = {}
    for e in xs:
        by_lane.setdefault(e["tid"], []).append(e)
    for lane in by_lane.values():
        lane.sort(key=lambda e: (e["ts"], -e["dur"]))
        open_ends: list[float] = []
        for e in lane:
            while open_ends and open_ends[-1] <= e["ts"] + 1:  # 1 us of rounding
                open_ends.pop()
            assert not open_ends or e["ts"] + e["dur"] <= open_ends[-1] + 1, (e, open_ends)
            open_ends.append(e["ts"] + e["dur"])
        acts = [e for e in lane if e["cat"] in ("action", "critical_path")]
        for a, b in zip(acts, acts[1:]):
            assert a["ts"] + a["dur"] <= b["ts"] + 1, (a, b)


def check_actions_match_the_report(doc: dict, report: dict) -> None:
    by_action = {(e["args"]["target"], e["args"]["mnemonic"]): e for e in spans(doc, "action")}
    assert len(by_action) == len(spans(doc, "action")) == len(report["actions"])
    for a in report["actions"]:
        e = by_action[(a["target"], a["mnemonic"])]
        assert e["args"]["status"] == a["status"] and e["args"]["key"] == a["key"]
        assert e["dur"] == pytest.approx(a["seconds"] * 1e6, abs=100)  # the report rounds to 0.1 ms


def test_profile_is_trace_event_json_whose_action_spans_are_the_report_s(ws, tmp_path):
    chain_and_one_more(ws)
    r, doc = profiled(ws, tmp_path, "clean.json")
    check_format_and_lanes(doc)
    check_actions_match_the_report(doc, r.report)
    assert {e["args"]["status"] for e in spans(doc, "action")} == {"executed"}
    phases = {e["name"] for e in spans(doc, "phase")}
    assert {"analysis", "actions", "place outputs"} <= phases
    main = {e["tid"] for e in doc["traceEvents"] if e["ph"] == "M" and e["args"].get("name") == "main"}
    assert {e["tid"] for e in spans(doc, "phase")} == main
    # Run actions ran on worker lanes, each executed one stored in the local cache inside its span.
    assert all(e["tid"] not in main for e in spans(doc, "action"))
    assert len(spans(doc, "cache")) >= 3

    # The critical path: first -> second, printed with its total, and on a lane of its own.
    other = doc["otherData"]
    assert [p["target"] for p in other["critical_path"]] == ["//gen:first", "//gen:second"]
    assert other["critical_path_seconds"] == pytest.approx(sum(p["seconds"] for p in other["critical_path"]),
                                                           abs=1e-3)
    assert f"Critical path: {other['critical_path_seconds']:.2f}s over 2 actions" in r.stdout
    assert [e["args"]["target"] for e in sorted(spans(doc, "critical_path"), key=lambda e: e["ts"])] == \
        ["//gen:first", "//gen:second"]

    r2, doc2 = profiled(ws, tmp_path, "again.json")
    check_format_and_lanes(doc2)
    check_actions_match_the_report(doc2, r2.report)
    assert {e["args"]["status"] for e in spans(doc2, "action")} == {"cached"}
    # A cache hit is settled on the main lane, its lookup nested in it.
    assert all(e["tid"] in main for e in spans(doc2, "action") + spans(doc2, "cache"))


def test_an_unwritable_profile_path_is_bad_input_before_anything_builds(ws, tmp_path):
    chain_and_one_more(ws)
    r = ws.build("//...", "--profile", str(tmp_path / "no" / "such" / "dir.json"))
    assert r.returncode == 2 and "--profile" in r.stderr and not (ws.root / "tpbuild-out" / "gen").exists()
