"""Triton ModelConfig on Triton's own protobuf schema (tritonclient's `model_config_pb2`).

Using the official schema, not a hand-written mirror of it, is what makes the checks worth having:
an unknown field, a misspelt enum or a wrong type fails here, with its field path, exactly where the
server would have failed at model load. On top of what the schema says, `validate` adds the rules
the server enforces (or, for Python models, fails to enforce) that the schema cannot express.
"""

from __future__ import annotations

import re
from typing import Any

FORBIDDEN_NAME_CHARS = set(";|&$`<>()[]{}\\\"'*?~#!")  # refused by the server from r25.08
ENV_PARAM = "EXECUTION_ENV_PATH"
ENV_PREFIX = "$$TRITON_MODEL_DIRECTORY/"


class ConfigError(Exception):
    """`field` is the dotted path of the offending field ('input[0].data_type'; '' for the whole config)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def _pb():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _parse_error_field(msg: str) -> str:
    m = re.search(r'has no field named "([^"]+)" at "ModelConfig\.?([^"]*)"', msg)
    if m:
        return f"{m.group(2)}.{m.group(1)}" if m.group(2) else m.group(1)
    at = re.findall(r"at ModelConfig\.?([\w.\[\]]*)", msg)
    path = at[-1].strip(".") if at else ""
    inner = re.findall(r"Failed to parse (\w+) field", msg)
    if inner and not path.endswith(inner[-1]):
        path = f"{path}.{inner[-1]}" if path else inner[-1]
    return path


def _friendly(msg: str) -> str:
    m = re.search(r'has no field named "([^"]+)"', msg)
    if m:
        return f"unknown field {m.group(1)!r} in Triton's ModelConfig: check its spelling against config.pbtxt"
    m = re.search(r"Invalid enum value (\S+) for enum type ([\w.]+)", msg)
    if m:
        return f"{m.group(1)} is not a valid {m.group(2).rsplit('.', 1)[-1]} value (e.g. TYPE_FP32, KIND_CPU)"
    return msg.split(" at ModelConfig")[0].rstrip(".")


def _expand_parameters(table: dict) -> dict:
    params = table.get("parameters")
    if not isinstance(params, dict):
        return table
    out = {}
    for k, v in params.items():
        out[k] = {"string_value": v} if isinstance(v, str) else v
    return {**table, "parameters": out}


def from_table(table: dict, model_name: str):
    """An inline BUILD.toml table -> a validated ModelConfig with name and backend filled in."""
    from google.protobuf import json_format

    cfg = _pb().ModelConfig()
    try:
        json_format.ParseDict(_expand_parameters(table), cfg)
    except json_format.ParseError as e:
        raise ConfigError(_parse_error_field(str(e)), _friendly(str(e))) from None
    if not cfg.name:
        cfg.name = model_name
    if not cfg.backend and not cfg.platform:
        cfg.backend = "python"
    validate(cfg, model_name)
    return cfg


def parse_text(text: str, model_name: str):
    """An existing config.pbtxt -> a validated ModelConfig (inputs and outputs may be left to auto-complete)."""
    from google.protobuf import text_format

    cfg = _pb().ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise ConfigError("", f"config.pbtxt does not parse: {e}") from None
    validate(cfg, model_name)
    return cfg


def validate(cfg, model_name: str) -> None:
    check_model_name(model_name)
    if cfg.platform:
        raise ConfigError("platform", f"remove platform {cfg.platform!r}: Python models set backend = \"python\" "
                                      "and no platform (the server does not catch a wrong one)")
    if cfg.backend != "python":
        raise ConfigError("backend", f"backend is {cfg.backend!r}; triton_model builds Python-backend models: "
                                     "use backend = \"python\" or remove it")
    if cfg.name and cfg.name != model_name:
        raise ConfigError("name", f"name {cfg.name!r} disagrees with model_name {model_name!r} and the server "
                                  "refuses that: remove name or make them equal")
    if cfg.max_batch_size < 0:
        raise ConfigError("max_batch_size", f"max_batch_size must be >= 0 (got {cfg.max_batch_size})")
    if cfg.HasField("dynamic_batching"):
        for i, size in enumerate(cfg.dynamic_batching.preferred_batch_size):
            if size < 1 or size > cfg.max_batch_size:
                raise ConfigError(f"dynamic_batching.preferred_batch_size[{i}]",
                                  f"preferred batch size {size} must be between 1 and max_batch_size "
                                  f"({cfg.max_batch_size}): lower it or raise max_batch_size")
    fname = cfg.default_model_filename
    if fname and (not fname.endswith(".py") or "." in fname[:-3] or "/" in fname):
        raise ConfigError("default_model_filename", f"{fname!r} must be a file name ending in .py with no "
                                                    "further dot, e.g. \"model.py\"")


def check_model_name(name: str) -> None:
    bad = sorted(set(name) & FORBIDDEN_NAME_CHARS)
    if not name or "/" in name or name in (".", "..") or bad or name != name.strip():
        what = f"characters {' '.join(bad)}" if bad else "this name"
        raise ConfigError("name", f"model name {name!r}: the server refuses {what}; use letters, digits, "
                                  "'_', '-' and '.'")


def render(cfg) -> bytes:
    """Canonical protobuf text: fields in schema order, map entries sorted, so equal configs are equal bytes."""
    from google.protobuf import text_format

    return text_format.MessageToString(cfg).encode()


def set_execution_env(cfg, env_file_name: str) -> None:
    value = ENV_PREFIX + env_file_name
    if ENV_PARAM in cfg.parameters:
        have = cfg.parameters[ENV_PARAM].string_value
        if have != value:
            raise ConfigError(f"parameters.{ENV_PARAM}", f"is {have!r} but the model's env lands at {value!r}: "
                                                        f"remove the parameter and let tpbuild set it")
        return
    cfg.parameters[ENV_PARAM].string_value = value


def default_model_filename(cfg) -> str:
    return cfg.default_model_filename or "model.py"


def to_dict(cfg) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(cfg, preserving_proto_field_name=True)
