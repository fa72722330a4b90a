"""Triton ModelConfig on Triton's own protobuf schema (tritonclient's `model_config_pb2`).

Using the official schema, not a hand-written mirror of it, is what makes the checks worth having:
an unknown field, a misspelt enum or a wrong type fails here, with its field path, where the server
would only have failed at model load. protobuf's own ParseError names paths inconsistently (often not
at all), so an inline table is first walked against the schema's descriptors to find the exact field;
protobuf still judges every scalar. `validate` adds the rules the server enforces (or, for Python
models, fails to enforce) that the schema cannot express, mirroring core's ValidateModelConfig and
python_backend's name checks.

Field paths are dotted with [i] for list items and .KEY for map entries ('parameters.FOO'), which is
also the key path of the BUILD.toml table the user wrote.
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

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def from_table(table: dict, model_name: str) -> model_config_pb2.ModelConfig:
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
    validate(cfg, model_name)
    return cfg


def parse_text(text: str, model_name: str) -> model_config_pb2.ModelConfig:
    """An existing config.pbtxt -> a validated ModelConfig.

    Inputs, outputs and even name and backend may be missing: the server fills them in (name from the
    directory, backend from model.py, tensors from `auto_complete_config`), so the file stays valid as is.
    """
    cfg = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise ConfigError("", f"config.pbtxt does not parse as Triton's ModelConfig (protobuf text format) "
                              f"at line:column {e}") from None
    validate(cfg, model_name)
    return cfg


def validate(cfg: model_config_pb2.ModelConfig, model_name: str) -> None:
    _check_name("name", model_name, "model name")
    if cfg.platform:
        raise ConfigError("platform", f"remove platform {cfg.platform!r}: Python models set backend \"python\" "
                                      "and no platform (the server does not catch a wrong one)")
    if cfg.backend != "python" and (cfg.backend or default_model_filename(cfg) != "model.py"):
        why = (f"backend is {cfg.backend!r}; triton_model builds Python-backend models" if cfg.backend else
               "backend is not set, and the server infers it only from a file named model.py")
        raise ConfigError("backend", f"{why}: set backend to \"python\"")
    if cfg.name and cfg.name != model_name:
        raise ConfigError("name", f"name {cfg.name!r} differs from the model name {model_name!r} and the server "
                                  "refuses that: remove name or make the two equal")
    if cfg.max_batch_size < 0:
        raise ConfigError("max_batch_size", f"max_batch_size must be >= 0 (0 turns batching off), "
                                            f"got {cfg.max_batch_size}")
    batchers = [("dynamic_batching", cfg.dynamic_batching)] if cfg.HasField("dynamic_batching") else []
    if cfg.sequence_batching.HasField("oldest"):
        batchers.append(("sequence_batching.oldest", cfg.sequence_batching.oldest))
    for path, batcher in batchers:
        for i, size in enumerate(batcher.preferred_batch_size):
            if not 0 < size <= cfg.max_batch_size:
                limit = (f"max_batch_size ({cfg.max_batch_size})" if cfg.max_batch_size
                         else "max_batch_size, which is 0 (no batching)")
                raise ConfigError(f"{path}.preferred_batch_size[{i}]",
                                  f"preferred batch size {size} must be between 1 and {limit}: "
                                  "lower it or raise max_batch_size")
    for i, group in enumerate(cfg.instance_group):
        if group.name:  # instance names become stub process names, checked like model names
            _check_name(f"instance_group[{i}].name", group.name, "instance group name")
    fname = cfg.default_model_filename
    if fname and not _PYTHON_FILE.fullmatch(fname):
        raise ConfigError("default_model_filename", f"{fname!r} must be a file name ending in .py with no "
                                                    "other dot, e.g. \"model.py\" or \"my_model.py\"")


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
            raise ConfigError(path, f"{value!r} is not a {kind} value: "
                                    f"{_suggest(str(value), field.enum_type.values_by_name)}")
    else:
        try:
            probe = {field.name: [value] if field.is_repeated else value}
            json_format.ParseDict(probe, GetMessageClass(field.containing_type)())
        except json_format.ParseError:
            raise ConfigError(path, f"expects {_SCALARS[field.cpp_type]}, got {value!r}") from None


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(choices)}"

