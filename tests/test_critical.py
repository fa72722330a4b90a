"""The ready queue by critical path, through the real CLI: the last build's durations decide the order."""

from __future__ import annotations

import re


def test_the_action_that_took_longest_last_time_starts_first(ws):
    ws.write("g/BUILD.toml", """
        [genrule.a_short]
        srcs = ["src.txt"]
        outs = ["a.txt"]
        cmd = "cp $SRCS $OUT"

        [genrule.b_short]
        srcs = ["src.txt"]
        outs = ["b.txt"]
        cmd = "cp $SRCS $OUT"

        [genrule.z_long]
        srcs = ["src.txt"]
        outs = ["z.txt"]
        cmd = "sleep 0.5; cp $SRCS $OUT"
    """)
    ws.write("g/src.txt", "1\n")

    def order(r) -> list[str]:
        return re.findall(r"^\[\d+/3\] Genrule //g:(\w+)", r.output, re.M)

    first = ws.build("//...", "-j", "1", check=True)
    assert order(first) == ["a_short", "b_short", "z_long"], first.output  # nothing known yet: as declared
    ws.write("g/src.txt", "2\n")  # every action runs again
    again = ws.build("//...", "-j", "1", check=True)
    # The long one first; the two short ones in the order of their own last durations (a few ms apart).
    assert order(again)[0] == "z_long" and sorted(order(again)) == ["a_short", "b_short", "z_long"], again.output


def test_a_build_that_runs_nothing_leaves_the_durations_memo_alone(ws):
    """Only a build that has actions to order reads the durations (`build.run`): a no-op (its stamp
    removed, so the ordinary path settles every action) neither reads nor rewrites them, even when
    they do not decode (any build that saved would rewrite them whole); one that runs something does."""
    from tpbuild import workspace

    ws.write("g/BUILD.toml", '[genrule.a]\nsrcs = ["src.txt"]\nouts = ["a.txt"]\ncmd = "cp $SRCS $OUT"\n')
    ws.write("g/src.txt", "1\n")
    ws.build("//...", check=True)
    memo = workspace.memo_dir(ws.cache, ws.root.resolve()) / "durations"
    assert memo.exists()
    memo.write_text("damaged")
    (ws.root / "tpbuild-out/.tpbuild/noop").unlink(missing_ok=True)
    assert ws.build("//...", check=True).report["execution"]["settled"] == 1
    assert memo.read_text() == "damaged"
    ws.write("g/src.txt", "2\n")
    ws.build("//...", check=True)
    assert memo.read_text() != "damaged"
