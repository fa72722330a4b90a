"""The analysis memo reuses a package's analysis while what it looked at is unchanged
(tpbuild/analysiscache.py; its records in their own plain-JSON shape), and the target graph matches
patterns against the packages' records (tpbuild/graph.py): each change that can move an analysis is
still noticed, counted through `--report` on real workspaces driven through the CLI. A manifest edit
re-analyses its package, and a target reading what it offers only if that moved; a new or removed
package, what a pattern attribute or a command-line pattern matches, tpbuild.toml."""

from __future__ import annotations

import pytest
from test_edit_sequence import MANIFEST, _model_py, _workspace
from test_noop import _settle as _age

from tpbuild.label import Label


def _model(ws, name: str) -> None:
    ws.write(f"models/{name}/1/model.py", _model_py("v0"))
    ws.write(f"models/{name}/BUILD.toml", MANIFEST.format(name=name, dims=1))


def analysed(run) -> tuple[int, int]:
    """(targets in the build, packages re-analysed)."""
    a = run.report["analysis"]
    return a["targets"], a["reanalysed_packages"]


@pytest.fixture
def models(ws):
    """A repository of every model under models/ (a pattern attribute), two models and the genrule they
    ship; every file past the racy window (`_age`: aged once, as an aged file aged again moves its stat)."""
    _workspace(ws, ("a", "b"))
    _age(ws.root)
    assert analysed(ws.build(check=True)) == (4, 4)
    assert analysed(ws.build(check=True)) == (4, 0)  # every record valid: no rule runs
    return ws


def test_a_manifest_edit_re_analyses_its_package_and_only_what_reads_a_change(models):
    (models.root / "models/a/BUILD.toml").write_text(MANIFEST.format(name="a", dims=1) + "# a comment\n")
    _age(models.root / "models/a/BUILD.toml")
    assert analysed(models.build(check=True)) == (4, 1)  # the repository reads nothing that moved
    (models.root / "models/a/BUILD.toml").write_text(MANIFEST.format(name="a", dims=3))
    _age(models.root / "models/a/BUILD.toml")
    run = models.build(check=True)
    assert analysed(run) == (4, 1)  # a's model name is the same: the repository is not analysed again
    assert "dims: 3" in models.out("models/a/a/config.pbtxt").read_text()
    assert "dims: 3" in models.out("repo/a/config.pbtxt").read_text()
    assert analysed(models.build(check=True)) == (4, 0)


def test_a_new_package_is_analysed_with_what_its_pattern_now_matches(models):
    _model(models, "c")
    _age(models.root / "models/c")
    run = models.build(check=True)
    assert analysed(run) == (5, 2)  # the new model, and the repository whose pattern now matches it
    assert models.out("repo/c/config.pbtxt").exists()
    assert analysed(models.build(check=True)) == (5, 0)


def test_a_removed_package_leaves_the_graph_and_its_outputs(models):
    for p in sorted((models.root / "models/b").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (models.root / "models/b").rmdir()
    run = models.build(check=True)
    assert analysed(run) == (3, 1)  # the repository, its pattern matching one model less
    assert not models.out("repo/b").exists() and not models.out("models/b").exists()
    assert models.out("repo/a/config.pbtxt").exists()


def test_command_line_patterns_name_the_targets_of_the_recorded_packages(models):
    assert analysed(models.build("//models/...", check=True)) == (3, 0)  # a, b and the genrule they ship
    assert analysed(models.build("//models/a:all", check=True)) == (2, 0)
    assert analysed(models.build("//models/a:a", check=True)) == (2, 0)
    assert analysed(models.build("//shared/...", check=True)) == (1, 0)
    assert analysed(models.build("//...", "-//models/b/...", check=True)) == (4, 0)  # the repository still needs b
    wrong = models.build("//models/a:nope")
    assert wrong.returncode == 2 and "no target //models/a:nope: models/a declares a" in wrong.output
    nothing = models.build("//docs/...")
    assert nothing.returncode == 2 and "matches no package" in nothing.output


def test_tpbuild_toml_moves_every_analysis(models):
    (models.root / "tpbuild.toml").write_text('[cache]\nsalt = "2"\n')
    assert analysed(models.build(check=True)) == (4, 4)


def test_rule_code_runs_with_the_cyclic_collector_and_the_memo_without_it(models):
    """A build runs without the cyclic collector (cli._main) until rule code runs, which leaves cyclic
    garbage (a clean build of 10,000 models: 27 MB of its peak memory): in process, analysis from the
    memo leaves the collector off, a manifest parsed and its rule run switch it on."""
    import gc

    from tpbuild import workspace
    from tpbuild.analysis import analyze

    ws = workspace.load(models.root)
    memo = workspace.memo_dir(models.cache, ws.root)
    gc.disable()
    try:
        assert analyze(ws, ["//..."], memo).reanalysed == 0 and not gc.isenabled()
        (models.root / "models/a/BUILD.toml").write_text(MANIFEST.format(name="a", dims=2))
        assert analyze(workspace.load(models.root), ["//..."], memo).reanalysed > 0 and gc.isenabled()
    finally:
        gc.enable()


def test_parsed_manifests_are_let_go_once_analysed_and_read_again_when_asked(models):
    """A target parsed from its manifest holds the parsed TOML (data and line index) only until analysis
    is done (manifest.Target.release: at 10,000 models they held 42 MB of a clean build's peak memory);
    asked for afterwards (errors, `affected`), the manifest is read again, as a memo target's is."""
    (models.root / "models/a/BUILD.toml").write_text(MANIFEST.format(name="a", dims=2))
    a = _analysis(models)
    target = a.graph.targets[Label("models/a", "a")]
    assert a.reanalysed > 0 and target._source is None
    assert target.source.data["triton_model"]["a"]["config"]["input"][0]["dims"] == [2]
    assert target.source.line_of(target.keypath) is not None


def _analysis(models, *patterns: str):
    from tpbuild import workspace
    from tpbuild.analysis import analyze

    ws = workspace.load(models.root)
    return analyze(ws, list(patterns or ["//..."]), workspace.memo_dir(models.cache, ws.root))


def _closed(a) -> tuple:
    """What a closure decides: the roots, the order, each target's dependencies."""
    return a.requested, a.order, {lbl: a.graph.edges[lbl] for lbl in a.order}


@pytest.mark.parametrize("patterns", [("//...",), ("//models/a:a",), ("//...", "-//models/b/...")])
def test_the_closure_of_unchanged_records_is_the_recorded_one_and_the_same(models, patterns):
    """The closure memo (graph.py): taken when the same records make the graph, for any patterns (a
    target's own: its dependency's package is loaded from its record as the closing would), equal to
    the closure made again without it."""
    first = _analysis(models, *patterns)
    again = _analysis(models, *patterns)
    assert again.graph.from_memo and again.reanalysed == 0
    (models.cache / "workspaces").joinpath(again.graph.cache._journal.path.parent.name, "closure").unlink()
    fresh = _analysis(models, *patterns)
    assert not fresh.graph.from_memo
    assert _closed(again) == _closed(fresh) == _closed(first)
    assert again.graph.loaded_packages == fresh.graph.loaded_packages


def test_a_changed_record_closes_the_graph_again(models):
    """A manifest edit (a new dependency), a new package, a package the closing loaded beyond the patterns
    changed: not the recorded closure, and the one made is right."""
    assert _analysis(models).graph.from_memo
    models.write("shared/BUILD.toml", (models.root / "shared/BUILD.toml").read_text()
                 + '[genrule.other]\nsrcs = ["classes.txt"]\nouts = ["other.txt"]\ncmd = "cp $SRCS $OUT"\n')
    models.write("models/a/BUILD.toml", MANIFEST.format(name="a", dims=1).replace(
        'files = ["//shared:labels"]', 'files = ["//shared:labels", "//shared:other"]'))
    _age(models.root / "shared")
    _age(models.root / "models/a/BUILD.toml")
    a = _analysis(models)
    assert not a.graph.from_memo and a.reanalysed_packages == {"models/a", "shared"}
    assert Label("shared", "other") in a.graph.edges[Label("models/a", "a")]
    assert a.order.index(Label("shared", "other")) < a.order.index(Label("models/a", "a"))
    assert _analysis(models).graph.from_memo
    _model(models, "c")
    _age(models.root / "models/c")
    a = _analysis(models)
    assert not a.graph.from_memo and Label("models/c", "c") in a.graph.edges[Label("", "repo")]
    assert _analysis(models, "//models/a:a").graph.from_memo is False  # another set of roots
    assert _analysis(models, "//models/a:a").graph.from_memo
    models.write("shared/BUILD.toml", (models.root / "shared/BUILD.toml").read_text() + "# edited\n")
    _age(models.root / "shared/BUILD.toml")
    assert not _analysis(models, "//models/a:a").graph.from_memo  # //shared, loaded by the closing, moved


@pytest.mark.parametrize("stamp", [True, False])
def test_a_new_package_joins_a_pattern_of_the_recorded_closure(models, stamp):
    """A closure is also a function of the workspace's packages: with the repository alone as the root,
    every record it was made of is unchanged when a new model package appears, yet the repository's
    pattern attribute (`//models/...`) now matches it. Built through the CLI, with the no-op stamp and
    without it (the ordinary path then decides alone)."""
    assert models.build("//:repo", check=True).report["analysis"]["reanalysed"] == 0
    assert models.build("//:repo", check=True).report["analysis"]["reanalysed"] == 0
    _model(models, "c")
    _age(models.root / "models/c")
    if not stamp:
        (models.root / "tpbuild-out/.tpbuild/noop").unlink(missing_ok=True)
    models.build("//:repo", check=True)
    assert models.out("repo/c/config.pbtxt").exists()
    assert Label("models/c", "c") in _analysis(models, "//:repo").graph.edges[Label("", "repo")]


@pytest.mark.parametrize("damage", [b"", b"{}", b"[1]", "order", "deps", "then"])
def test_a_damaged_closure_memo_is_a_miss(models, damage):
    import json

    from tpbuild import memo
    from tpbuild.graph import CLOSURE_KIND, CLOSURE_VERSION

    header = f"tpbuild-memo {CLOSURE_KIND} v{CLOSURE_VERSION}\n".encode()

    a = _analysis(models, "//models/a:a")
    path = a.graph.cache._journal.path.parent / "closure"
    expected = _closed(a)
    if isinstance(damage, bytes):
        path.write_bytes(header + damage if damage else damage)
    else:
        data = memo.load(path, CLOSURE_KIND, CLOSURE_VERSION)
        data[damage] = [["nowhere", "x"]] if damage == "then" else "AAAA"
        path.write_bytes(header + json.dumps(data).encode())
    again = _analysis(models, "//models/a:a")
    assert not again.graph.from_memo and _closed(again) == expected


def test_the_closure_key_tells_apart_lists_that_join_alike():
    """The closure memo's key (`TargetGraph._key`) joins the loaded packages, their records' generations
    and the workspace's packages into one text: the same texts split another way between the lists (a
    package loaded, or only discovered) are another key; a generation no record has is none."""
    from tpbuild.graph import TargetGraph

    def key(loaded, gens, discovered):
        g = object.__new__(TargetGraph)
        g._all_packages = discovered
        return g._key(loaded, gens)

    assert key(["a"], ["g"], ["b", "c"]) != key(["a", "g"], ["b", "c"], []) != key([], [], ["a", "g", "b", "c"])
    assert key(["a"], ["g"], ["a"]) == key(["a"], ["g"], ["a"])
    assert key(["a"], ["g\0b"], []) is None and key(["a"], [""], []) is None and key(["a"], [None], []) is None


def test_a_target_analysed_again_under_the_recorded_closure_gets_its_patterns_resolved(models):
    """A target whose record holds but whose dependencies' infos moved (here: its record's deps digest
    changed by hand, its generation kept) runs its rule under the recorded closure, with its pattern
    attributes resolved as the closing would have (`TargetGraph.expanded_of`)."""
    first = _analysis(models)
    cache = first.graph.cache
    root = cache.record("")
    cache._journal.put("", root.replace(targets=[t.replace(deps_digest="moved") for t in root.targets]))
    cache.save()
    again = _analysis(models)
    assert again.graph.from_memo and again.reanalysed_packages == {""}
    repo = Label("", "repo")
    assert list(again.graph.expanded[repo].values()) == [[Label("models/a", "a"), Label("models/b", "b")]]
    assert [(d.id, d.inputs) for d in again.declared_of(repo)] == [(d.id, d.inputs) for d in first.declared_of(repo)]
    assert again.infos[repo] == first.infos[repo]


def _unstamped(models) -> None:
    """The next build takes the ordinary path (the no-op stamp would answer it without analysis)."""
    (models.root / "tpbuild-out/.tpbuild/noop").unlink(missing_ok=True)


def test_a_record_without_its_texts_is_a_miss_of_its_package(models):
    """A kill between the saves of the actions' texts and of the records keeps a record without its
    texts (tpbuild/analysiscache.py): its package is analysed again, the others are not."""
    (texts,) = models.cache.glob("workspaces/*/analysis-text")
    lines = texts.read_text().splitlines(keepends=True)
    assert sum('"models/a\\u0000' in line for line in lines) == 1
    texts.write_text("".join(line for line in lines if '"models/a\\u0000' not in line))
    models.write("models/a/1/model.py", _model_py("v1"))  # and a's action runs
    _age(models.root / "models/a/1/model.py")
    assert analysed(models.build(check=True)) == (4, 1)
    assert models.out("repo/a/1/model.py").read_text() == _model_py("v1")
    _unstamped(models)
    assert analysed(models.build(check=True)) == (4, 0)


def test_the_records_of_packages_asked_at_once_are_those_asked_one_by_one(models):
    """`AnalysisCache.records` (the no-op stamp's question) answers as `record` of each would: the records
    looked up at once while every one's texts are there, else one by one (a record without them: None)."""
    from tpbuild.analysiscache import _text_key

    cache = _analysis(models).graph.cache
    packages = sorted(cache._journal.keys())
    assert len(packages) >= 3 and cache.records(packages) == list(map(cache.record, packages))
    cache._texts.remove(_text_key("models/a", cache.record("models/a").gen))
    found = cache.records(packages)
    assert found[packages.index("models/a")] is None and None not in found[:packages.index("models/a")]
    assert found == list(map(cache.record, packages))


def _not_hex(record: list) -> None:
    record[0][1] = "z" * len(record[0][1])


def _nine_fields(record: list) -> None:
    record[1][0] = record[1][0][:9]


@pytest.mark.parametrize("damage", [_not_hex, _nine_fields])
def test_a_damaged_record_is_a_miss_of_its_package_alone(models, damage):
    """A hand-edited record of models/a, among the others'. Sigs that are not hex: the records' watched sigs
    are one hex text each, compared with the others' as one column (`AnalysisCache.check_all`). A target of
    nine fields: a build of every package decodes their records in one call (`AnalysisCache._records`),
    which fails, and each record is then decoded on its own. Either way that package is analysed again,
    the others are taken from the memo."""
    import json

    (memo,) = models.cache.glob("workspaces/*/analysis")
    lines = memo.read_text().splitlines(keepends=True)
    (i,) = [i for i, line in enumerate(lines) if line.startswith('"models/a"\t')]
    key, value = lines[i].split("\t")
    record = json.loads(value)
    damage(record)
    lines[i] = f"{key}\t{json.dumps(record, separators=(',', ':'))}\n"
    memo.write_text("".join(lines))
    _unstamped(models)
    assert analysed(models.build(check=True)) == (4, 1)
    _unstamped(models)
    assert analysed(models.build(check=True)) == (4, 0)


def test_a_memo_of_the_version_before_is_a_miss(models):
    from tpbuild.analysiscache import VERSION

    for path in models.cache.glob("workspaces/*/analysis*"):
        path.write_text(path.read_text().replace(f" v{VERSION}\n", f" v{VERSION - 1}\n", 1))
    _unstamped(models)
    assert analysed(models.build(check=True)) == (4, 4)


def test_an_action_run_after_a_no_op_is_made_from_its_recorded_text(models):
    """An edit that moves no analysis (a model's body) but an action's key: the action, declared by the
    memo, is made from its text in the texts journal and runs."""
    _unstamped(models)
    assert analysed(models.build(check=True)) == (4, 0)
    models.write("models/a/1/model.py", _model_py("v1"))
    _age(models.root / "models/a/1/model.py")
    assert analysed(models.build(check=True)) == (4, 0)
    assert models.out("models/a/a/1/model.py").read_text() == _model_py("v1")
    assert models.out("repo/a/1/model.py").read_text() == _model_py("v1")
