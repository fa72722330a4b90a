"""Triton ModelConfig on Triton's own protobuf schema (tritonclient's `model_config_pb2`).

Using the official schema, not a hand-written mirror of it, is what makes the checks worth having:
an unknown field, a misspelt enum or a wrong type fails here, with its field path, where the server
would only have failed at model load. protobuf's own ParseError names paths inconsistently (often not
at all), so an inline table is first walked against the schema's descriptors to find the exact field;
protobuf still judges every scalar. `validate` adds the rules the server enforces (or, for Python
models, fails to enforce) that the schema cannot express, mirroring core's ValidateModelConfig,
ValidateModelIOConfig and ValidateInstanceGroup (src/model_config_utils.cc, as of the release in
`[triton] version`) and python_backend's name checks; every broken rule is reported, not the first.

Field paths are dotted with [i] for list items and .KEY for map entries ('parameters.FOO'), which is
also the key path of the BUILD.toml table the user wrote; `pbtxt_lines` finds them in a config.pbtxt.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message_factory import GetMessageClass


def _load_schema():
    """tritonclient's model_config_pb2, loaded without running `tritonclient.grpc/__init__`, which
    imports grpcio, numpy and ml_dtypes (0.12 s) for a schema module that needs only protobuf (0.015 s).
    The file is the same one `from tritonclient.grpc import model_config_pb2` gives."""
    import importlib.util
    import sys
    from pathlib import Path

    name = "tritonclient.grpc.model_config_pb2"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("tritonclient is not installed: pip install 'tritonclient[grpc]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    mspec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(module)
    sys.modules[name] = module  # a later `from tritonclient.grpc import model_config_pb2` reuses it
    return module


model_config_pb2 = _load_schema()

# python_backend refuses these in model and instance names from r25.08 (pb_utils.h INVALID_CHARS).
_FORBIDDEN_NAME_CHARS = frozenset(";|&$`<>()[]{}\\\"'*?~#!")
_ENV_PARAM = "EXECUTION_ENV_PATH"
_ENV_PREFIX = "$$TRITON_MODEL_DIRECTORY/"  # substituted by the backend only at the very start of the value
_PYTHON_FILE = re.compile(r"[^./]+\.py")  # the stub imports `<version>.<stem>`: a dot in the stem nests modules
# What a scalar field takes, for messages: protobuf's own ("invalid literal for int()") are Python-speak.
_SCALARS = {
    FieldDescriptor.CPPTYPE_INT32: "an integer (int32)",
    FieldDescriptor.CPPTYPE_INT64: "an integer (int64)",
    FieldDescriptor.CPPTYPE_UINT32: "an integer >= 0 (uint32)",
    FieldDescriptor.CPPTYPE_UINT64: "an integer >= 0 (uint64)",
    FieldDescriptor.CPPTYPE_FLOAT: "a number",
    FieldDescriptor.CPPTYPE_DOUBLE: "a number",
    FieldDescriptor.CPPTYPE_BOOL: "true or false",
    FieldDescriptor.CPPTYPE_STRING: "a string",
}


class ConfigError(Exception):
    """`field` is the dotted path of the offending field ('input[0].data_type'; '' for the whole config)."""

    def __init__(self, field: str, message: str, *, line: int | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.line = line  # in a config.pbtxt, when the parser said


def from_table(table: dict, model_name: str, **rules) -> model_config_pb2.ModelConfig:
    """An inline BUILD.toml table -> a validated ModelConfig with name and backend filled in."""
    table = _expand_parameters(table)
    _check_message(table, model_config_pb2.ModelConfig.DESCRIPTOR, "")
    cfg = model_config_pb2.ModelConfig()
    try:
        json_format.ParseDict(table, cfg)
    except json_format.ParseError as e:  # the walk above missed a rule of this protobuf version
        raise ConfigError("", f"Triton's ModelConfig schema refuses the config: {e}") from None
    if not cfg.name:
        cfg.name = model_name
    if not cfg.backend and not cfg.platform:
        cfg.backend = "python"
    validate(cfg, model_name, **rules)
    return cfg


def parse_text(text: str, model_name: str, **rules) -> model_config_pb2.ModelConfig:
    """An existing config.pbtxt -> a validated ModelConfig.

    Inputs, outputs and even name and backend may be missing: the server fills them in (name from the
    directory, backend from model.py, tensors from `auto_complete_config`), so the file stays valid as is.
    """
    cfg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise ConfigError("", f"config.pbtxt does not parse as Triton's ModelConfig (protobuf text format) "
                              f"at line:column {e}", line=e.GetLine()) from None
    validate(cfg, model_name, **rules)
    return cfg


_PBTXT_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|[{}\[\]<>:,;]|[^\s{}\[\]<>:,;"\'#]+')


def pbtxt_lines(text: str) -> dict[tuple, int]:
    """The line of each field of a config.pbtxt by key path, with an index after every field name
    (('input', 1, 'dims', 0); ('dynamic_batching', 0, 'preferred_batch_size', 0)), so a refusal
    points into the file the user wrote. A small scanner: it only needs where each field name stands
    and how deep it is; protobuf has judged the syntax already."""
    lines: dict[tuple, int] = {}
    # One frame per open message: its key path, occurrences of each field so far, and its open lists
    # as [field occurrence, whether a message of that list was opened yet].
    frames: list[dict] = [{"path": (), "counts": {}, "lists": []}]
    field: tuple = ()  # the last field occurrence named
    value = False  # after ':', the next scalar is a value, not a field name
    line = 1
    for m in _PBTXT_TOKEN.finditer(text):
        tok = m.group(0)
        start_line = line
        line += tok.count("\n")
        if tok.isspace() or tok.startswith("#") or tok in (",", ";", ":"):
            value = value or tok == ":"
            continue
        frame = frames[-1]
        if tok == "[":
            frame["lists"].append([field, False])
            value = False
        elif tok == "]":
            if frame["lists"]:
                frame["lists"].pop()
        elif tok in "{<":
            if frame["lists"]:  # a message of `input [ {...}, {...} ]`: each is the field's next occurrence
                entry = frame["lists"][-1]
                if entry[1]:
                    name = entry[0][-2]
                    field = (*entry[0][:-1], frame["counts"][name])
                    frame["counts"][name] += 1
                    lines[field] = start_line
                else:
                    field, entry[1] = entry[0], True
            frames.append({"path": field, "counts": {}, "lists": []})
            value = False
        elif tok in "}>":
            if len(frames) > 1:
                frames.pop()
        elif value or frame["lists"]:
            value = False  # a scalar value, or an item of a scalar list
        else:
            idx = frame["counts"].get(tok, 0)
            frame["counts"][tok] = idx + 1
            field = (*frame["path"], tok, idx)
            lines.setdefault(field[:-1], start_line)
            lines[field] = start_line
    return lines


def pbtxt_keypath(keypath: tuple) -> tuple:
    """A `_keypath`-style path (('dynamic_batching', 'preferred_batch_size', 0)) in pbtxt_lines' form,
    where every field name is followed by its occurrence index."""
    out: list = []
    for i, part in enumerate(keypath):
        out.append(part)
        if isinstance(part, str) and not (i + 1 < len(keypath) and isinstance(keypath[i + 1], int)):
            out.append(0)
    return tuple(out)


def validate(cfg: model_config_pb2.ModelConfig, model_name: str, *, release: str | None = None,
             gpus: int | None = None, versions: tuple[str, ...] | None = None) -> None:
    """Every rule the server applies when it loads a Python model, all checked (raises ConfigErrors
    with each broken one). Mirrors ValidateModelConfig, ValidateModelIOConfig and ValidateInstanceGroup
    of triton-inference-server/core src/model_config_utils.cc (r24.10; rules added later apply from
    their release, see `_since`), plus the rules the server fails to enforce for Python models.
    `release` is `[triton] version` ("24.10"), `gpus` the server's GPU count when known, `versions`
    the version directories the model ships."""
    errors: list[ConfigError] = []

    def refuse(field: str, message: str) -> None:
        errors.append(ConfigError(field, message))

    if release is None or _since(release, "25.08"):
        try:
            _check_name("name", model_name, "model name")
        except ConfigError as e:
            errors.append(e)
    if cfg.platform:
        refuse("platform", f"remove platform {cfg.platform!r}: Python models set backend \"python\" "
                           "and no platform (the server does not catch a wrong one)")
    if cfg.backend != "python" and (cfg.backend or default_model_filename(cfg) != "model.py"):
        why = (f"backend is {cfg.backend!r}; triton_model builds Python-backend models" if cfg.backend else
               "backend is not set, and the server infers it only from a file named model.py")
        refuse("backend", f"{why}: set backend to \"python\"")
    if cfg.name and cfg.name != model_name:
        refuse("name", f"name {cfg.name!r} differs from the model name {model_name!r} and the server "
                       "refuses that: remove name or make the two equal")
    if cfg.max_batch_size < 0:
        refuse("max_batch_size", f"max_batch_size must be >= 0 (0 turns batching off), got {cfg.max_batch_size}")
    _check_tensors(cfg, refuse)
    _check_batch_io(cfg, refuse)
    _check_dynamic_batching(cfg, refuse)
    _check_sequence_batching(cfg, refuse)
    if cfg.HasField("ensemble_scheduling"):
        refuse("ensemble_scheduling", "an ensemble is a model of platform \"ensemble\" with no backend, not a "
                                      "Python model: remove ensemble_scheduling (write the ensemble's config.pbtxt "
                                      "as a file placed with a genrule)")
    if cfg.model_transaction_policy.decoupled and cfg.response_cache.enable:
        refuse("response_cache.enable", "the response cache does not support decoupled models: remove "
                                        "response_cache or set model_transaction_policy.decoupled = false")
    if cfg.HasField("model_metrics"):
        _check_metrics(cfg, release, refuse)
    _check_instance_groups(cfg, gpus, refuse)
    if cfg.version_policy.HasField("specific") and versions is not None:
        for i, v in enumerate(cfg.version_policy.specific.versions):
            if str(v) not in versions:
                refuse(f"version_policy.specific.versions[{i}]",
                       f"version {v} is not among the model's versions ({', '.join(versions)}): "
                       "the server cannot load it; add it to versions or remove it here")
    fname = cfg.default_model_filename
    if fname and not _PYTHON_FILE.fullmatch(fname):
        refuse("default_model_filename", f"{fname!r} must be a file name ending in .py with no "
                                         "other dot, e.g. \"model.py\" or \"my_model.py\"")
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)


class ConfigErrors(ConfigError):
    """Several broken rules of one config, found in one pass (`field` is the first one's)."""

    def __init__(self, errors: list[ConfigError]):
        super().__init__(errors[0].field, "; ".join(str(e) for e in errors))
        self.errors = errors


def _since(release: str, first: str) -> bool:
    return int(release.replace(".", "")) >= int(first.replace(".", ""))


_WILDCARD = -1


def _element_count(dims) -> int:
    """As triton::common::GetElementCount: -1 when any dimension is variable."""
    n = 1
    for d in dims:
        if d == _WILDCARD:
            return _WILDCARD
        n *= d
    return n


def _segments(dims) -> list[int]:
    """Element counts of the runs between variable-size dimensions: [2, 4, -1, 6] -> [8, 6]."""
    out, cnt = [], 1
    for d in dims:
        if d == _WILDCARD:
            out.append(cnt)
            cnt = 1
        else:
            cnt *= d
    return [*out, cnt]


def _check_tensors(cfg, refuse) -> None:
    """ValidateIOShape, ValidateModelInput/Output, and unique names (the server takes duplicate names
    and then binds only one of the tensors)."""
    for key in ("input", "output"):
        seen: dict[str, int] = {}
        for i, io in enumerate(getattr(cfg, key)):
            at = f"{key}[{i}]"
            if not io.name:
                refuse(f"{at}.name", f"every {key} needs a name")
            elif io.name in seen:
                refuse(f"{at}.name", f"{key} name {io.name!r} is already used by {key}[{seen[io.name]}]: "
                                     "tensor names must be unique")
            else:
                seen[io.name] = i
            if io.data_type == model_config_pb2.TYPE_INVALID:
                refuse(f"{at}.data_type", "set data_type, e.g. \"TYPE_FP32\"")
            if not io.dims:
                refuse(f"{at}.dims", "set dims (the shape without the batch dimension), e.g. [3] or [-1]; "
                                     "the server does not take scalar tensors: use [1]")
            for j, d in enumerate(io.dims):
                if d < 1 and d != _WILDCARD:
                    refuse(f"{at}.dims[{j}]", f"dimension {d}: each must be >= 1, or -1 for a variable size")
            if io.HasField("reshape"):
                _check_reshape(cfg, io, at, refuse)
            if key == "input" and io.format in (model_config_pb2.ModelInput.FORMAT_NHWC,
                                                model_config_pb2.ModelInput.FORMAT_NCHW) and len(io.dims) != 3:
                refuse(f"{at}.format", f"format {model_config_pb2.ModelInput.Format.Name(io.format)} needs exactly "
                                       f"3 dims, got {len(io.dims)}")
            if io.is_shape_tensor:
                refuse(f"{at}.is_shape_tensor", "shape tensors exist only for TensorRT models: remove it")
            if io.is_non_linear_format_io:
                refuse(f"{at}.is_non_linear_format_io", "non-linear IO formats exist only for TensorRT models: "
                                                        "remove it")


def _check_reshape(cfg, io, at: str, refuse) -> None:
    shape = list(io.reshape.shape)
    if not shape and cfg.max_batch_size == 0:
        refuse(f"{at}.reshape", "an empty reshape makes a scalar, which a model without batching "
                                "(max_batch_size 0) cannot have")
    bad = [d for d in shape if d < 1 and d != _WILDCARD]
    if bad:
        refuse(f"{at}.reshape.shape", f"dimension {bad[0]}: each must be >= 1, or -1 for a variable size")
        return
    if not io.dims or any(d < 1 and d != _WILDCARD for d in io.dims):
        return  # reported above
    n_dims, n_shape = _element_count(io.dims), _element_count(shape)
    if n_dims != n_shape and (n_shape != 0 or n_dims != 1):
        refuse(f"{at}.reshape", f"reshape {shape} does not hold the same number of elements as dims "
                                f"{list(io.dims)}")
    elif n_dims == _WILDCARD:
        a, b = _segments(io.dims), _segments(shape)
        if len(a) != len(b):
            refuse(f"{at}.reshape", f"reshape {shape} and dims {list(io.dims)} have a different number of "
                                    "variable-size (-1) dimensions")
        elif a != b:
            refuse(f"{at}.reshape", f"reshape {shape} and dims {list(io.dims)}: the runs between -1 "
                                    "dimensions must hold the same number of elements")


def _check_batch_io(cfg, refuse) -> None:
    inputs = {io.name for io in cfg.input}
    outputs = {io.name for io in cfg.output}
    one_source = {"BATCH_ELEMENT_COUNT", "BATCH_ACCUMULATED_ELEMENT_COUNT",
                  "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE",
                  "BATCH_ITEM_SHAPE", "BATCH_ITEM_SHAPE_FLATTEN"}
    for i, b in enumerate(cfg.batch_input):
        kind = model_config_pb2.BatchInput.Kind.Name(b.kind)
        if kind in one_source and len(b.source_input) != 1:
            refuse(f"batch_input[{i}].source_input", f"kind {kind} takes exactly 1 source input, "
                                                     f"got {len(b.source_input)}")
        if b.data_type not in (model_config_pb2.TYPE_INT32, model_config_pb2.TYPE_FP32):
            refuse(f"batch_input[{i}].data_type", "a batch input is TYPE_INT32 or TYPE_FP32")
        for j, name in enumerate(b.source_input):
            if name not in inputs:
                refuse(f"batch_input[{i}].source_input[{j}]", f"no input named {name!r}")
    for i, b in enumerate(cfg.batch_output):
        if len(b.source_input) != 1:
            refuse(f"batch_output[{i}].source_input", f"takes exactly 1 source input, got {len(b.source_input)}")
        for j, name in enumerate(b.source_input):
            if name not in inputs:
                refuse(f"batch_output[{i}].source_input[{j}]", f"no input named {name!r}")
        seen: set[str] = set()
        for j, name in enumerate(b.target_name):
            if name not in outputs:
                refuse(f"batch_output[{i}].target_name[{j}]", f"no output named {name!r}")
            elif name in seen:
                refuse(f"batch_output[{i}].target_name[{j}]", f"output {name!r} is named twice")
            seen.add(name)


def _check_preferred(cfg, path: str, sizes, refuse) -> None:
    for i, size in enumerate(sizes):
        if not 0 < size <= cfg.max_batch_size:
            limit = (f"max_batch_size ({cfg.max_batch_size})" if cfg.max_batch_size
                     else "max_batch_size, which is 0 (no batching)")
            refuse(f"{path}.preferred_batch_size[{i}]", f"preferred batch size {size} must be between 1 and "
                                                       f"{limit}: lower it or raise max_batch_size")


def _check_dynamic_batching(cfg, refuse) -> None:
    if not cfg.HasField("dynamic_batching"):
        return
    db = cfg.dynamic_batching
    _check_preferred(cfg, "dynamic_batching", db.preferred_batch_size, refuse)
    levels = db.priority_levels
    if levels:
        if not 1 <= db.default_priority_level <= levels:
            refuse("dynamic_batching.default_priority_level",
                   f"must be between 1 and priority_levels ({levels}), got {db.default_priority_level}")
        for level in sorted(db.priority_queue_policy):
            if not 1 <= level <= levels:
                refuse(f"dynamic_batching.priority_queue_policy.{level}",
                       f"priority level {level} must be between 1 and priority_levels ({levels})")
    if db.preserve_ordering:
        if levels > 1:
            refuse("dynamic_batching.preserve_ordering", "preserve_ordering allows only one priority level")
        delay = model_config_pb2.ModelQueuePolicy.DELAY
        policies = [("default_queue_policy", db.default_queue_policy)] + \
                   [(f"priority_queue_policy.{k}", v) for k, v in sorted(db.priority_queue_policy.items())]
        for path, policy in policies:
            if policy.default_timeout_microseconds and policy.timeout_action == delay:
                refuse(f"dynamic_batching.{path}.timeout_action",
                       "DELAY cannot be the timeout action when preserve_ordering is true")


def _check_sequence_batching(cfg, refuse) -> None:
    if not cfg.HasField("sequence_batching"):
        return
    sb = cfg.sequence_batching
    if cfg.response_cache.enable:
        refuse("response_cache.enable", "the response cache does not support sequence batching: "
                                        "remove response_cache")
    Control = model_config_pb2.ModelSequenceBatching.Control
    seen_tensor: dict[str, int] = {}
    seen_kind: dict[int, int] = {}
    for i, ci in enumerate(sb.control_input):
        at = f"sequence_batching.control_input[{i}]"
        if not ci.name:
            refuse(f"{at}.name", "a control input needs a name")
        elif ci.name in seen_tensor:
            refuse(f"{at}.name", f"tensor {ci.name!r} is already control_input[{seen_tensor[ci.name]}]: "
                                 "one tensor serves one control")
        else:
            seen_tensor[ci.name] = i
        for j, c in enumerate(ci.control):
            cat = f"{at}.control[{j}]"
            kind = Control.Kind.Name(c.kind)
            if c.kind in seen_kind:
                refuse(f"{cat}.kind", f"{kind} is set twice (also in control_input[{seen_kind[c.kind]}])")
            seen_kind.setdefault(c.kind, i)
            given = [n for n in ("int32_false_true", "fp32_false_true", "bool_false_true") if len(getattr(c, n))]
            if c.kind == Control.CONTROL_SEQUENCE_CORRID:
                if given:
                    refuse(f"{cat}.{given[0]}", f"{kind} takes a data_type, not {given[0]}")
                allowed = ("TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING")
                if model_config_pb2.DataType.Name(c.data_type) not in allowed:
                    refuse(f"{cat}.data_type", f"{kind} takes data_type {', '.join(allowed)}")
            elif c.kind in (Control.CONTROL_SEQUENCE_START, Control.CONTROL_SEQUENCE_END,
                            Control.CONTROL_SEQUENCE_READY):
                if len(given) != 1:
                    refuse(cat, f"{kind} takes exactly one of int32_false_true, fp32_false_true, bool_false_true")
                elif len(getattr(c, given[0])) != 2:
                    refuse(f"{cat}.{given[0]}", f"{given[0]} takes exactly 2 values: [false, true]")
    if sb.HasField("oldest"):
        _check_preferred(cfg, "sequence_batching.oldest", sb.oldest.preferred_batch_size, refuse)
    if sb.HasField("direct") and not 0.0 <= sb.direct.minimum_slot_utilization <= 1.0:
        refuse("sequence_batching.direct.minimum_slot_utilization", "must be between 0.0 and 1.0")


def _check_metrics(cfg, release: str | None, refuse) -> None:
    """model_metrics arrived in r24.11 (ValidateModelMetrics); an older server refuses the field itself."""
    if release is not None and not _since(release, "24.11"):
        refuse("model_metrics", f"Triton {release} does not know model_metrics (from 24.11): remove it")
        return
    for i, mc in enumerate(cfg.model_metrics.metric_control):
        at = f"model_metrics.metric_control[{i}]"
        if not mc.HasField("metric_identifier"):
            refuse(at, "set metric_identifier")
        elif not mc.metric_identifier.family:
            refuse(f"{at}.metric_identifier.family", "set a non-empty family")
        if not mc.HasField("histogram_options"):
            refuse(at, "set histogram_options")
        elif not mc.histogram_options.buckets:
            refuse(f"{at}.histogram_options.buckets", "set at least one bucket")


def _check_instance_groups(cfg, gpus: int | None, refuse) -> None:
    """ValidateInstanceGroup after NormalizeInstanceGroup (KIND_AUTO becomes CPU or GPU, a count below
    1 becomes the default): `gpus` = 0 is a CPU-only server, which refuses KIND_GPU."""
    G = model_config_pb2.ModelInstanceGroup
    for i, group in enumerate(cfg.instance_group):
        at = f"instance_group[{i}]"
        if group.name:  # instance names become stub process names, checked like model names
            try:
                _check_name(f"{at}.name", group.name, "instance group name")
            except ConfigError as e:
                refuse(e.field, e.message)
        if group.count < 0:
            refuse(f"{at}.count", f"count {group.count}: the number of instances is >= 1 (0 or unset means 1)")
        if group.kind in (G.KIND_CPU, G.KIND_MODEL) and group.gpus:
            refuse(f"{at}.gpus", f"kind {G.Kind.Name(group.kind)} runs on no GPU: remove gpus, or use KIND_GPU")
        if group.kind == G.KIND_GPU and gpus == 0:
            refuse(f"{at}.kind", "KIND_GPU on a server with no GPU ([triton] gpus = 0): the server refuses "
                                 "the model; use KIND_CPU (or KIND_AUTO, which picks a GPU when there is one)")
        for j, gid in enumerate(group.gpus):
            if gid < 0 or (gpus is not None and gid >= gpus):
                have = f"GPUs 0 to {gpus - 1}" if gpus else "no GPU"
                refuse(f"{at}.gpus[{j}]", f"GPU {gid} does not exist" + (f" (the server has {have}, "
                                          "[triton] gpus)" if gpus is not None else ""))
        if group.profile:
            refuse(f"{at}.profile", "profile exists only for TensorRT models: remove it")


def render(cfg: model_config_pb2.ModelConfig) -> bytes:
    """Canonical protobuf text: fields in schema order and map entries sorted, so equal configs are equal bytes."""
    return text_format.MessageToString(cfg).encode()


def set_execution_env(cfg: model_config_pb2.ModelConfig, env_file_name: str) -> None:
    value = _ENV_PREFIX + env_file_name
    if _ENV_PARAM in cfg.parameters:
        have = cfg.parameters[_ENV_PARAM].string_value
        if have != value:
            raise ConfigError(f"parameters.{_ENV_PARAM}", f"is {have!r} but the model's env lands at {value!r}: "
                                                         "remove the parameter and let tpbuild set it")
        return
    cfg.parameters[_ENV_PARAM].string_value = value


def default_model_filename(cfg: model_config_pb2.ModelConfig) -> str:
    return cfg.default_model_filename or "model.py"


def to_dict(cfg: model_config_pb2.ModelConfig) -> dict[str, Any]:
    """The proto3 JSON mapping with config.pbtxt's field names (note: 64-bit integers such as dims are strings)."""
    return json_format.MessageToDict(cfg, preserving_proto_field_name=True)


def _check_name(field: str, name: str, what: str) -> None:
    bad = sorted(set(name) & _FORBIDDEN_NAME_CHARS)
    if not name or name != name.strip() or "/" in name or name in (".", "..") or bad:
        why = f"the characters {' '.join(map(repr, bad))}" if bad else "empty names, '/', '..' and surrounding spaces"
        raise ConfigError(field, f"{what} {name!r}: Triton refuses {why}; use letters, digits, '_', '-' and '.'")


def _expand_parameters(table: dict) -> dict:
    """`KEY = "value"` is shorthand for `KEY = { string_value = "value" }`, the only kind Triton has."""
    params = table.get("parameters")
    if not isinstance(params, dict):
        return table
    out = {}
    for key, value in params.items():
        if not isinstance(value, (str, dict)):
            raise ConfigError(f"parameters.{key}", f"parameter values are strings: write {key} = \"{value}\"")
        out[key] = {"string_value": value} if isinstance(value, str) else value
    return {**table, "parameters": out}


def _check_message(value: Any, desc, path: str) -> None:
    """Walks a table along a message descriptor, raising at the first field the schema refuses."""
    if not isinstance(value, dict):
        raise ConfigError(path, f"expects a table of {desc.name} fields, got {value!r}")
    for oneof in desc.oneofs:
        chosen = [f.name for f in oneof.fields if f.name in value]
        if len(chosen) > 1:
            raise ConfigError(path, f"set only one of {', '.join(chosen)} (they are alternatives)")
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        field = desc.fields_by_name.get(key)
        if field is None:
            raise ConfigError(where, f"unknown field {key!r} in {desc.name}: "
                                     f"{_suggest(key, desc.fields_by_name)} (names are as in config.pbtxt)")
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if not isinstance(item, dict):
                raise ConfigError(where, f"expects a table, got {item!r}")
            key_field, value_field = (field.message_type.fields_by_name[n] for n in ("key", "value"))
            for k, v in item.items():
                if key_field.cpp_type != FieldDescriptor.CPPTYPE_STRING and not str(k).isdecimal():
                    raise ConfigError(f"{where}.{k}", f"keys of {key} are integers >= 0, got {k!r}")
                _check_value(v, value_field, f"{where}.{k}")
        elif field.is_repeated:
            if not isinstance(item, list):
                raise ConfigError(where, f"expects an array, got {item!r}: write {key} = [ ... ]")
            for i, v in enumerate(item):
                _check_value(v, field, f"{where}[{i}]")
        else:
            _check_value(item, field, where)


def _check_value(value: Any, field, path: str) -> None:
    if field.message_type is not None:
        _check_message(value, field.message_type, path)
    elif field.enum_type is not None:
        if not (isinstance(value, str) and value in field.enum_type.values_by_name):
            kind = field.enum_type.full_name.removeprefix("inference.")
            alias = _DATA_TYPE_ALIASES.get(str(value).upper().removeprefix("TYPE_")) if kind == "DataType" else None
            hint = f"did you mean {alias!r}?" if alias else _suggest(str(value), field.enum_type.values_by_name)
            raise ConfigError(path, f"{value!r} is not a {kind} value: {hint}")
    else:
        try:
            probe = {field.name: [value] if field.is_repeated else value}
            json_format.ParseDict(probe, GetMessageClass(field.containing_type)())
        except json_format.ParseError:
            raise ConfigError(path, f"expects {_SCALARS[field.cpp_type]}, got {value!r}") from None


# Names other frameworks use for Triton's data types, which spelling distance would not find.
_DATA_TYPE_ALIASES = {"FLOAT": "TYPE_FP32", "FLOAT32": "TYPE_FP32", "DOUBLE": "TYPE_FP64", "FLOAT64": "TYPE_FP64",
                      "HALF": "TYPE_FP16", "FLOAT16": "TYPE_FP16", "BFLOAT16": "TYPE_BF16", "INT": "TYPE_INT32",
                      "LONG": "TYPE_INT64", "STR": "TYPE_STRING", "BYTES": "TYPE_STRING", "BOOLEAN": "TYPE_BOOL"}


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(choices)}"

