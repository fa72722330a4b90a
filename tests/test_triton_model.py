"""triton_model and model_repository through the real CLI (no server: see test_e2e_server.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

ADD = """
    [triton_model.m]
    versions = ["1"]

    [triton_model.m.config]
    max_batch_size = 4
    input = [{ name = "A", data_type = "TYPE_FP32", dims = [2] }]
    output = [{ name = "B", data_type = "TYPE_FP32", dims = [2] }]
"""


def model(ws, pkg="m", manifest=ADD, files=("1/model.py",)):
    ws.write(f"{pkg}/BUILD.toml", manifest)
    for f in files:
        ws.write(f"{pkg}/{f}", "class TritonPythonModel:\n    pass\n")


def test_examples_build_into_a_model_repository(examples_built):
    r = examples_built.build(check=True)
    repo = examples_built.out("repository")
    got = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    assert got == [
        "add_sub/1/model.py", "add_sub/1/tpbuild_runtime.py", "add_sub/config.pbtxt",
        "labeler/1/model.py", "labeler/config.pbtxt", "labeler/labels.txt",
        "table/1/model.py", "table/1/tpbuild_runtime.py", "table/config.pbtxt", "table/tabulate.tar.gz",
        "text_transform/1/model.py", "text_transform/1/tpbuild_runtime.py", "text_transform/1/transform.py",
        "text_transform/2/model.py", "text_transform/2/tpbuild_runtime.py", "text_transform/2/transform.py",
        "text_transform/config.pbtxt",
    ]
    # Models importing tpbuild_runtime get it next to model.py; the classic labeler does not.
    assert (repo / "add_sub/1/tpbuild_runtime.py").read_bytes() == \
        (Path(__file__).resolve().parent.parent / "runtime/tpbuild_runtime/__init__.py").read_bytes()
    cfg = (repo / "add_sub/config.pbtxt").read_text()
    assert 'name: "add_sub"' in cfg and 'backend: "python"' in cfg and "TYPE_FP32" in cfg
    assert 'name: "text_transform"' in (repo / "text_transform/config.pbtxt").read_text()
    # The hand-written config is shipped byte for byte.
    assert (repo / "labeler/config.pbtxt").read_bytes() == \
        (examples_built.root / "models/labeler/config.pbtxt").read_bytes()
    assert (repo / "labeler/labels.txt").read_text() == "BIRD\nCAT\nDOG\n"
    targets = r.report["targets"]
    assert targets["//:repository"]["outputs"] == ["tpbuild-out/repository"]
    assert targets["//models/add_sub:add_sub"]["outputs"] == ["tpbuild-out/models/add_sub/add_sub"]
    mnemonics = {(a["target"], a["mnemonic"]) for a in r.report["actions"]}
    assert ("//models/add_sub:add_sub", "TritonConfig") in mnemonics
    # The table model's imports (numpy, tabulate) were resolved in its real venv-pack'ed env.
    assert ("//models/table:table", "ImportCheck") in mnemonics


def test_editing_one_model_reruns_only_it_and_the_repository(examples_built):
    examples_built.build(check=True)
    p = examples_built.root / "models/add_sub/1/model.py"
    p.write_text(p.read_text() + "\n# edited\n")
    r = examples_built.build(check=True)
    assert sorted(r.statuses("executed")) == ["//:repository%ModelRepository",
                                              "//models/add_sub:add_sub%ModelDirectory"]
    assert examples_built.out("repository/add_sub/1/model.py").read_text().endswith("# edited\n")


def test_config_is_canonical_whatever_the_key_order(ws):
    model(ws, "a", ADD)
    model(ws, "b", """
        [triton_model.m]
        versions = ["1"]
        config = { output = [{ dims = [2], data_type = "TYPE_FP32", name = "B" }], max_batch_size = 4, input = [{ name = "A", dims = [2], data_type = "TYPE_FP32" }] }
    """)
    ws.build(check=True)
    assert ws.out("a/m/config.pbtxt").read_bytes() == ws.out("b/m/config.pbtxt").read_bytes()


def test_pycache_is_not_copied_and_helpers_are(ws):
    model(ws, files=("1/model.py", "1/helper.py", "1/__pycache__/model.cpython-311.pyc", "1/x.pyc", "1/data/v.json"))
    ws.build(check=True)
    got = sorted(p.relative_to(ws.out("m/m")).as_posix() for p in ws.out("m/m").rglob("*") if p.is_file())
    assert got == ["1/data/v.json", "1/helper.py", "1/model.py", "config.pbtxt"]


def test_symlinks_in_a_version_directory_are_followed_inside_the_package_only(ws):
    model(ws, files=("1/model.py", "shared/helper.py"))
    (ws.root / "m/1/helper.py").symlink_to("../shared/helper.py")
    ws.build(check=True)
    got = sorted(p.relative_to(ws.out("m/m")).as_posix() for p in ws.out("m/m").rglob("*") if p.is_file())
    assert got == ["1/helper.py", "1/model.py", "config.pbtxt"]
    (ws.root / "m/1/hostname").symlink_to("/etc/hostname")
    r = ws.build()
    assert r.returncode == 2 and "1/hostname is a symlink leading out of the package" in r.stderr, r.stderr


def test_versions_table_maps_directories(ws):
    model(ws, manifest=ADD.replace('versions = ["1"]', 'versions = { 3 = "v3" }'), files=("v3/model.py",))
    ws.build(check=True)
    assert ws.out("m/m/3/model.py").exists()


def test_files_sources_and_labels(ws):
    model(ws, manifest=ADD.replace('versions = ["1"]', 'versions = ["1"]\nfiles = ["assets/vocab.txt", ":gen"]') + """
        [genrule.gen]
        outs = ["extra.json"]
        cmd = "echo '{}' > $OUT"
    """, files=("1/model.py", "assets/vocab.txt"))
    ws.build(check=True)
    assert ws.out("m/m/vocab.txt").exists() and ws.out("m/m/extra.json").exists()


def test_no_config_gives_a_minimal_python_config(ws):
    model(ws, manifest='[triton_model.auto]\nversions = ["1"]\n')
    ws.build(check=True)
    text = ws.out("m/auto/config.pbtxt").read_text()
    assert 'name: "auto"' in text and 'backend: "python"' in text


BAD = [
    ('platform = "onnxruntime_onnx"', "config.platform"),
    ('backend = "onnxruntime"', "config.backend"),
    ('name = "other"', "config.name"),
    ('max_batchsize = 4', "max_batchsize"),
    ('max_batch_size = -1', "config.max_batch_size"),
    ('dynamic_batching = { preferred_batch_size = [16] }', "preferred_batch_size"),
]


@pytest.mark.parametrize("line,needle", BAD)
def test_bad_config_exits_2_naming_the_field(ws, line, needle):
    model(ws, manifest=f'[triton_model.m]\nversions = ["1"]\n\n[triton_model.m.config]\nmax_batch_size = 8\n{line}\n'
          if not line.startswith("max_batch_size") else
          f'[triton_model.m]\nversions = ["1"]\n\n[triton_model.m.config]\n{line}\n')
    r = ws.build()
    assert r.returncode == 2, r.output
    assert "m/BUILD.toml:" in r.stderr and needle in r.stderr, r.stderr


def test_bad_enum_names_the_field_path(ws):
    model(ws, manifest=ADD.replace("TYPE_FP32", "TYPE_FP33", 1))
    r = ws.build()
    assert r.returncode == 2
    assert "m/BUILD.toml:6: config.input[0].data_type" in r.stderr, r.stderr


@pytest.mark.parametrize("versions,needle", [
    ('["01"]', "version '01' is not a version number"),
    ('["v1"]', "version 'v1' is not a version number"),
    ('[]', "at least one version"),
])
def test_bad_version_names(ws, versions, needle):
    model(ws, manifest=f'[triton_model.m]\nversions = {versions}\n', files=("01/model.py", "v1/model.py"))
    r = ws.build()
    assert r.returncode == 2 and "m/BUILD.toml:2: " in r.stderr and needle in r.stderr, r.stderr


def test_missing_model_py(ws):
    model(ws, files=("1/other.py",))
    r = ws.build()
    assert r.returncode == 2 and "m/BUILD.toml:2: " in r.stderr and "1/model.py does not exist" in r.stderr


@pytest.mark.parametrize("name", ["a;b", "a|b", "a$b", "a`b", "a b?", "a(b)", "x#y", "q'"])
def test_model_names_the_server_refuses(ws, name):
    model(ws, manifest=f'[triton_model.m]\nmodel_name = "{name}"\nversions = ["1"]\n')
    r = ws.build()
    assert r.returncode == 2 and "m/BUILD.toml:" in r.stderr, r.stderr


def test_existing_config_that_disagrees_or_does_not_parse(ws):
    model(ws, manifest='[triton_model.m]\nversions = ["1"]\nconfig = "config.pbtxt"\n')
    ws.write("m/config.pbtxt", 'name: "other"\nbackend: "python"\n')
    r = ws.build()  # the refusal points into the file the user wrote
    assert r.returncode == 2 and "m/config.pbtxt:1: " in r.stderr and "other" in r.stderr, r.stderr
    ws.write("m/config.pbtxt", 'backend: "python"\nmax_batch_size: [\n')
    r = ws.build()
    assert r.returncode == 2 and "m/config.pbtxt:2: " in r.stderr, r.stderr


def test_repository_rejects_two_models_with_one_name(ws):
    model(ws, "a", '[triton_model.m]\nversions = ["1"]\n')
    model(ws, "b", '[triton_model.x]\nmodel_name = "m"\nversions = ["1"]\n')
    ws.write("BUILD.toml", '[model_repository.repo]\nmodels = ["//a:m", "//b:x"]\n')
    r = ws.build("//:repo")
    assert r.returncode == 2 and "BUILD.toml:2: " in r.stderr and "two models are named 'm'" in r.stderr


def test_repository_label_must_be_a_model(ws):
    ws.write("g/BUILD.toml", '[genrule.g]\nouts = ["o"]\ncmd = "touch $OUT"\n')
    ws.write("BUILD.toml", '[model_repository.repo]\nmodels = ["//g:g"]\n')
    r = ws.build("//:repo")
    assert r.returncode == 2 and "is a genrule, not a triton_model" in r.stderr
