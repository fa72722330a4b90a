"""Synthetic workspaces: N Python-backend models, and the same build written for make, ninja and doit.

Each model `mNNNNN` has a `1/model.py` (distinct content, so the blob store cannot dedupe them into
one), an inline config whose input dims vary with the model, and the shared `labels.txt` made by one
genrule from `shared/classes.txt`. A `model_repository` at the root takes every model.

The peers build exactly the same tree below `peer-out/<peer>/` as tpbuild does below `tpbuild-out/`
(`models/<m>/<m>/{config.pbtxt,1/model.py,labels.txt}`, `repository/<m>/...`,
`shared/labels/labels.txt`), so their outputs can be compared byte for byte. Each is written the way a
competent user of that tool would write it: make without built-in rules and with order-only
directory prerequisites, ninja with one edge per file, doit with in-process Python actions and
`config_changed` (the counterpart of ninja's command tracking and of tpbuild's content keys).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

PEER_OUT = "peer-out"
WIDTH = 5  # model names stay the same length up to 99,999 models, so paths sort alike everywhere
INPUT_NAME, OUTPUT_NAME = "INPUT0", "OUTPUT0"


def model_names(n: int) -> list[str]:
    return [f"m{i:0{WIDTH}d}" for i in range(n)]


def dims_of(index: int) -> int:
    return index % 16 + 1


def config_lines(name: str, dims: int | str) -> list[str]:
    """config.pbtxt as tpbuild renders the inline table below (protobuf text format, schema order)."""
    return [
        f'name: "{name}"', "max_batch_size: 8",
        "input {", f'  name: "{INPUT_NAME}"', "  data_type: TYPE_FP32", f"  dims: {dims}", "}",
        "output {", f'  name: "{OUTPUT_NAME}"', "  data_type: TYPE_FP32", f"  dims: {dims}", "}",
        "instance_group {", "  count: 1", "  kind: KIND_CPU", "}",
        'backend: "python"',
    ]


def _build_toml(name: str, dims: int) -> str:
    return f"""[triton_model.{name}]
versions = ["1"]
files = ["//shared:labels"]

[triton_model.{name}.config]
max_batch_size = 8
input = [{{ name = "{INPUT_NAME}", data_type = "TYPE_FP32", dims = [{dims}] }}]
output = [{{ name = "{OUTPUT_NAME}", data_type = "TYPE_FP32", dims = [{dims}] }}]
instance_group = [{{ kind = "KIND_CPU", count = 1 }}]
"""


def _model_py(name: str, index: int) -> str:
    return f'''"""Synthetic model {name}: scales its input by a constant of its own."""

import numpy as np
import triton_python_backend_utils as pb_utils

SCALE = {index + 1}.0


class TritonPythonModel:
    def initialize(self, args):
        self.labels = open(args["model_repository"] + "/labels.txt").read().split()

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "{INPUT_NAME}").as_numpy()
            out = pb_utils.Tensor("{OUTPUT_NAME}", (x * SCALE).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
'''


def _classes() -> str:
    rng = random.Random(0)
    words = [f"class_{i:04d}" for i in range(1000)]
    words += rng.sample(words, 200)  # duplicates, so `sort -u` has work to do
    rng.shuffle(words)
    return "\n".join(words) + "\n"


def generate(ws: Path, n: int) -> None:
    """Write a fresh workspace with `n` models and the three peers' build files."""
    if ws.exists():
        shutil.rmtree(ws)
    (ws / "shared").mkdir(parents=True)
    (ws / "tpbuild.toml").write_text(f'[workspace]\nignore = ["{PEER_OUT}"]\n')
    (ws / "BUILD.toml").write_text('[model_repository.repository]\nmodels = ["//models/..."]\n')
    (ws / "shared" / "classes.txt").write_text(_classes())
    (ws / "shared" / "BUILD.toml").write_text(
        '[genrule.labels]\nsrcs = ["classes.txt"]\nouts = ["labels.txt"]\ncmd = "LC_ALL=C sort -u $SRCS > $OUT"\n')
    names = model_names(n)
    for i, name in enumerate(names):
        d = ws / "models" / name
        (d / "1").mkdir(parents=True)
        (d / "BUILD.toml").write_text(_build_toml(name, dims_of(i)))
        (d / "1" / "model.py").write_text(_model_py(name, i))
    (ws / "Makefile").write_text(makefile(names))
    (ws / "build.ninja").write_text(ninja_file(names))
    (ws / "dodo.py").write_text(dodo_file(names))


def model_py_path(name: str) -> str:
    return f"models/{name}/1/model.py"


def _files(out: str, name: str) -> list[tuple[str, str]]:
    """(output, input) pairs of one model's copies; the config is rendered, not copied."""
    mdir = f"{out}/models/{name}/{name}"
    rdir = f"{out}/repository/{name}"
    return [
        (f"{mdir}/1/model.py", model_py_path(name)),
        (f"{mdir}/labels.txt", f"{out}/shared/labels/labels.txt"),
        (f"{rdir}/config.pbtxt", f"{mdir}/config.pbtxt"),
        (f"{rdir}/1/model.py", f"{mdir}/1/model.py"),
        (f"{rdir}/labels.txt", f"{mdir}/labels.txt"),
    ]


def _printf_args(name: str, dims: int) -> str:
    return " ".join(f"'{line}'" for line in config_lines(name, dims))


def makefile(names: list[str]) -> str:
    out = f"{PEER_OUT}/make"
    labels = f"{out}/shared/labels/labels.txt"
    lines = [
        "# Generated by bench/synth.py: the tpbuild benchmark's build for GNU make.",
        "MAKEFLAGS += --no-builtin-rules", ".SUFFIXES:", ".DEFAULT_GOAL := all", "",
        f"{labels}: shared/classes.txt | {out}/shared/labels",
        "\tLC_ALL=C sort -u $< > $@",
        f"{out}/shared/labels:", "\tmkdir -p $@", "",
    ]
    for i, name in enumerate(names):
        mdir, rdir = f"{out}/models/{name}/{name}", f"{out}/repository/{name}"
        files = _files(out, name)
        lines += [
            f"ALL += {' '.join(o for o, _ in files)}",
            f"{mdir}/1 {rdir}/1:", "\tmkdir -p $@",
            f"{mdir}/config.pbtxt: | {mdir}/1", f"\tprintf '%s\\n' {_printf_args(name, dims_of(i))} > $@",
        ]
        for o, src in files:
            lines += [f"{o}: {src} | {mdir if o.startswith(mdir) else rdir}/1", "\tcp $< $@"]
        lines.append("")
    lines += ["all: $(ALL)", ".PHONY: all", ""]
    return "\n".join(lines)


def ninja_file(names: list[str]) -> str:
    out = f"{PEER_OUT}/ninja"
    labels = f"{out}/shared/labels/labels.txt"
    lines = [
        "# Generated by bench/synth.py: the tpbuild benchmark's build for ninja.",
        "ninja_required_version = 1.10", f"builddir = {PEER_OUT}/ninja-state", "",
        "rule render", "  command = printf '%s\\n' $text > $out", "  description = CONFIG $out",
        "rule copy", "  command = cp $in $out", "  description = COPY $out",
        "rule labels", "  command = LC_ALL=C sort -u $in > $out", "  description = LABELS $out", "",
        f"build {labels}: labels shared/classes.txt",
    ]
    for i, name in enumerate(names):
        mdir = f"{out}/models/{name}/{name}"
        lines += [f"build {mdir}/config.pbtxt: render", f"  text = {_printf_args(name, dims_of(i))}"]
        lines += [f"build {o}: copy {src}" for o, src in _files(out, name)]
    lines.append("")
    return "\n".join(lines)


def dodo_file(names: list[str]) -> str:
    return f'''"""Generated by bench/synth.py: the tpbuild benchmark's build for doit (`doit -f dodo.py`)."""

import os
import shutil
import string

from doit.tools import config_changed

OUT = "{PEER_OUT}/doit"
LABELS = OUT + "/shared/labels/labels.txt"
MODELS = {[(n, dims_of(i)) for i, n in enumerate(names)]!r}
# dbm is doit's default backend, but this Python has only dbm.dumb, which is far slower than sqlite3.
DOIT_CONFIG = {{"dep_file": "{PEER_OUT}/doit.db", "backend": "sqlite3", "verbosity": 0}}


CONFIG = string.Template({chr(10).join(config_lines("$name", "$dims")) + chr(10)!r})


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def copy(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copyfile(src, dst)


def task_labels():
    return {{"actions": [f"mkdir -p {{os.path.dirname(LABELS)}} && LC_ALL=C sort -u shared/classes.txt > {{LABELS}}"],
            "file_dep": ["shared/classes.txt"], "targets": [LABELS]}}


def task_config():
    for name, dims in MODELS:
        text = CONFIG.substitute(name=name, dims=dims)
        path = f"{{OUT}}/models/{{name}}/{{name}}/config.pbtxt"
        yield {{"name": name, "actions": [(write, [path, text])], "targets": [path],
               "uptodate": [config_changed(text)]}}


def task_copy():
    for name, _ in MODELS:
        mdir, rdir = f"{{OUT}}/models/{{name}}/{{name}}", f"{{OUT}}/repository/{{name}}"
        pairs = [(f"{{mdir}}/1/model.py", f"models/{{name}}/1/model.py"), (f"{{mdir}}/labels.txt", LABELS),
                 (f"{{rdir}}/config.pbtxt", f"{{mdir}}/config.pbtxt"), (f"{{rdir}}/1/model.py", f"{{mdir}}/1/model.py"),
                 (f"{{rdir}}/labels.txt", f"{{mdir}}/labels.txt")]
        for dst, src in pairs:
            yield {{"name": dst[len(OUT) + 1:], "actions": [(copy, [src, dst])], "file_dep": [src],
                   "targets": [dst]}}
'''


def generate_big(ws: Path, size: int) -> None:
    """A workspace whose one genrule writes `size` bytes: the large-artifact restore scenario."""
    if ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    (ws / "tpbuild.toml").write_text("")
    (ws / "BUILD.toml").write_text(
        f'[genrule.blob]\nouts = ["blob.bin"]\ncmd = "head -c {size} /dev/zero > $OUT"\n')


def generate_sleeps(ws: Path, n: int, seconds: float) -> None:
    """A workspace of `n` independent genrules that each sleep `seconds`: all wait, none computes,
    so -j N can only gain by overlapping processes (the run-action scenario)."""
    if ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True)
    (ws / "tpbuild.toml").write_text("")
    (ws / "BUILD.toml").write_text("".join(
        f'[genrule.s{i:03d}]\nouts = ["s{i:03d}.txt"]\ncmd = "sleep {seconds}; echo {i} > $OUT"\n\n' for i in range(n)))
