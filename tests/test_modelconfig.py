"""ModelConfig handling on Triton's real protobuf schema: parsing, field paths in errors, the server's
own rules, canonical rendering. No server: these are the checks that spare a failed model load."""

from __future__ import annotations

import sys

import pytest
from tpbuild_triton import modelconfig as mc
from tpbuild_triton.modelconfig import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ADD_SUB = """
max_batch_size = 8
input = [ { name = "INPUT0", data_type = "TYPE_FP32", dims = [4] } ]
output = [ { name = "OUTPUT0", data_type = "TYPE_FP32", dims = [4] } ]
instance_group = [ { kind = "KIND_CPU", count = 1 } ]
dynamic_batching = { preferred_batch_size = [4] }
parameters = { FOO = "bar", BAZ = { string_value = "x" } }
"""

# The same config with every table's keys (and the parameters map) written in another order.
ADD_SUB_SHUFFLED = """
parameters = { BAZ = { string_value = "x" }, FOO = "bar" }
dynamic_batching = { preferred_batch_size = [4] }
instance_group = [ { count = 1, kind = "KIND_CPU" } ]
output = [ { dims = [4], data_type = "TYPE_FP32", name = "OUTPUT0" } ]
input = [ { dims = [4], name = "INPUT0", data_type = "TYPE_FP32" } ]
backend = "python"
max_batch_size = 8
"""

# Fields come in the schema's field-number order (backend is 17), map entries sorted by key.
ADD_SUB_PBTXT = b"""\
name: "add_sub"
max_batch_size: 8
input {
  name: "INPUT0"
  data_type: TYPE_FP32
  dims: 4
}
output {
  name: "OUTPUT0"
  data_type: TYPE_FP32
  dims: 4
}
instance_group {
  count: 1
  kind: KIND_CPU
}
dynamic_batching {
  preferred_batch_size: 4
}
parameters {
  key: "BAZ"
  value {
    string_value: "x"
  }
}
parameters {
  key: "FOO"
  value {
    string_value: "bar"
  }
}
backend: "python"
"""


def table(text: str) -> dict:
    return tomllib.loads(text)


def error(fn, *args) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        fn(*args)
    return e.value


# --- inline tables ---------------------------------------------------------------------------------

def test_inline_table_renders_the_expected_pbtxt():
    cfg = mc.from_table(table(ADD_SUB), "add_sub")
    assert mc.render(cfg) == ADD_SUB_PBTXT
    assert cfg.name == "add_sub" and cfg.backend == "python"
    assert cfg.parameters["FOO"].string_value == "bar"


def test_rendering_does_not_depend_on_key_order():
    assert mc.render(mc.from_table(table(ADD_SUB_SHUFFLED), "add_sub")) == ADD_SUB_PBTXT


def test_round_trips():
    cfg = mc.from_table(table(ADD_SUB), "add_sub")
    assert mc.parse_text(mc.render(cfg).decode(), "add_sub") == cfg
    assert mc.from_table(mc.to_dict(cfg), "add_sub") == cfg


def test_to_dict_keeps_config_pbtxt_field_names():
    d = mc.to_dict(mc.from_table(table(ADD_SUB), "add_sub"))
    assert d["max_batch_size"] == 8 and d["instance_group"] == [{"kind": "KIND_CPU", "count": 1}]
    assert d["parameters"]["FOO"] == {"string_value": "bar"} and d["input"][0]["data_type"] == "TYPE_FP32"


def test_empty_table_is_a_minimal_python_config():
    assert mc.render(mc.from_table({}, "m")) == b'name: "m"\nbackend: "python"\n'


@pytest.mark.parametrize("text,field,needle", [
    ("max_batchsize = 8", "max_batchsize", "did you mean 'max_batch_size'"),
    ("maxBatchSize = 8", "maxBatchSize", "did you mean 'max_batch_size'"),
    ('input = [{ name = "A", data_type = "TYPE_FP33", dims = [1] }]', "input[0].data_type", "'TYPE_FP32'"),
    ('input = [{ name = "A", data_typ = "TYPE_FP32" }]', "input[0].data_typ", "'data_type'"),
    ('input = [{ name = "A" }, { name = "B", dims = ["x"] }]', "input[1].dims[0]", "an integer"),
    ('input = [{ name = "A", data_type = 11 }]', "input[0].data_type", "is not a DataType value"),
    ('input = { name = "A" }', "input", "expects an array"),
    ('input = ["A"]', "input[0]", "expects a table"),
    ('max_batch_size = "eight"', "max_batch_size", "an integer"),
    ("max_batch_size = 1.5", "max_batch_size", "an integer"),
    ("max_batch_size = true", "max_batch_size", "an integer"),
    ("dynamic_batching = 5", "dynamic_batching", "expects a table"),
    ("dynamic_batching = { max_queue_delay_microseconds = -1 }", "dynamic_batching.max_queue_delay_microseconds",
     ">= 0"),
    ('dynamic_batching = { priority_queue_policy = { x = {} } }', "dynamic_batching.priority_queue_policy.x",
     "integers"),
    ('dynamic_batching = { priority_levels = 2, default_priority_level = 1, '
     'priority_queue_policy = { 1 = { timeout_action = "BOUNCE" } } }',
     "dynamic_batching.priority_queue_policy.1.timeout_action", "REJECT, DELAY"),
    ('instance_group = [{ kind = "KIND_CPUX" }]', "instance_group[0].kind", "ModelInstanceGroup.Kind"),
    ('model_transaction_policy = { decoupled = "yes" }', "model_transaction_policy.decoupled", "true or false"),
    ("sequence_batching = { direct = {}, oldest = {} }", "sequence_batching", "only one of direct, oldest"),
    ('sequence_batching = { control_input = [{ name = "S", control = [{ kind = "CONTROL_SEQUENCE_STRT" }] }] }',
     "sequence_batching.control_input[0].control[0].kind", "CONTROL_SEQUENCE_START"),
    ("metric_tags = { team = 1 }", "metric_tags.team", "a string"),
    ('parameters = { FOO = { string_vlue = "x" } }', "parameters.FOO.string_vlue", "'string_value'"),
    ("parameters = { FOO = { string_value = 3 } }", "parameters.FOO.string_value", "a string"),
    ("parameters = { FOO = 3 }", "parameters.FOO", 'write FOO = "3"'),
])
def test_schema_errors_name_the_field(text, field, needle):
    e = error(mc.from_table, table(text), "m")
    assert e.field == field and needle in e.message, (e.field, e.message)


def test_parameters_shorthand_equals_the_long_form():
    short = mc.from_table(table('parameters = { FOO = "bar" }'), "m")
    long = mc.from_table(table('parameters = { FOO = { string_value = "bar" } }'), "m")
    assert short == long and mc.render(short) == mc.render(long)


def test_inline_table_is_not_modified():
    t = table(ADD_SUB)
    mc.from_table(t, "add_sub")
    assert t == table(ADD_SUB)


# --- existing config.pbtxt ---------------------------------------------------------------------------

def test_pbtxt_syntax_error_gives_line_and_column():
    e = error(mc.parse_text, 'backend: "python"\nmax_batch_size: [\n', "m")
    assert e.field == "" and "2:17" in e.message, e.message


def test_pbtxt_unknown_field_and_bad_enum_do_not_parse():
    assert "3:1" in error(mc.parse_text, 'backend: "python"\n\nmax_batchsize: 3\n', "m").message
    assert "TYPE_FP33" in error(mc.parse_text, 'backend: "python"\ninput { data_type: TYPE_FP33 }\n', "m").message


def test_auto_complete_config_without_name_backend_or_tensors_is_valid():
    # Triton takes the name from the directory, the backend from model.py, tensors from auto_complete_config.
    cfg = mc.parse_text("max_batch_size: 4\n", "m")
    assert cfg.name == "" and cfg.backend == "" and not cfg.input


def test_missing_backend_with_another_model_file_is_refused():
    # The server infers the python backend only from a file named model.py.
    e = error(mc.parse_text, 'default_model_filename: "serve.py"\n', "m")
    assert e.field == "backend"
    mc.parse_text('backend: "python"\ndefault_model_filename: "serve.py"\n', "m")


DECOUPLED = """
name: "square_int32"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: True }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [{ kind: KIND_CPU }]
"""

SEQUENCE = """
backend: "python"
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  oldest { max_candidate_sequences: 4 preferred_batch_size: [ 2, 4 ] }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
  state [ { input_name: "IN_STATE" output_name: "OUT_STATE" data_type: TYPE_INT32 dims: [ 1 ] } ]
}
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

BLS = """
name: "bls_sync"
backend: "python"
input [ { name: "MODEL_NAME" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
instance_group [ { kind: KIND_CPU } ]
parameters: { key: "EXECUTION_ENV_PATH" value: { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }
"""


@pytest.mark.parametrize("text,name", [(DECOUPLED, "square_int32"), (SEQUENCE, "seq"), (BLS, "bls_sync")])
def test_real_world_python_configs_pass_unchanged(text, name):
    cfg = mc.parse_text(text, name)
    assert mc.parse_text(mc.render(cfg).decode(), name) == cfg


# --- the server's rules --------------------------------------------------------------------------------

@pytest.mark.parametrize("text,field,needle", [
    ('platform = "onnxruntime_onnx"', "platform", "remove platform"),
    ('backend = "onnxruntime"', "backend", "\"python\""),
    ('name = "other"', "name", "'other'"),
    ("max_batch_size = -1", "max_batch_size", ">= 0"),
    ("max_batch_size = 8\ndynamic_batching = { preferred_batch_size = [4, 16] }",
     "dynamic_batching.preferred_batch_size[1]", "(8)"),
    ("max_batch_size = 8\ndynamic_batching = { preferred_batch_size = [0] }",
     "dynamic_batching.preferred_batch_size[0]", "between 1 and"),
    # With max_batch_size 0 the server refuses every preferred size (size > max_batch_size).
    ("dynamic_batching = { preferred_batch_size = [1] }", "dynamic_batching.preferred_batch_size[0]", "is 0"),
    ("max_batch_size = 2\nsequence_batching = { oldest = { preferred_batch_size = [4] } }",
     "sequence_batching.oldest.preferred_batch_size[0]", "(2)"),
    ('default_model_filename = "model.pyc"', "default_model_filename", ".py"),
    ('default_model_filename = "my.model.py"', "default_model_filename", "no other dot"),
    ('default_model_filename = "sub/model.py"', "default_model_filename", ".py"),
    ('default_model_filename = ".py"', "default_model_filename", ".py"),
    ('instance_group = [{ name = "cpu;rm", kind = "KIND_CPU" }]', "instance_group[0].name", "';'"),
])
def test_server_rules(text, field, needle):
    e = error(mc.from_table, table(text), "m")
    assert e.field == field and needle in e.message, (e.field, e.message)


def test_server_rules_hold_for_pbtxt_too():
    assert error(mc.parse_text, 'backend: "python"\nmax_batch_size: -1\n', "m").field == "max_batch_size"
    assert error(mc.parse_text, 'platform: "pytorch_libtorch"\n', "m").field == "platform"


def test_batching_settings_that_the_server_accepts():
    mc.from_table(table("max_batch_size = 8\ndynamic_batching = { preferred_batch_size = [1, 8] }"), "m")
    mc.from_table(table("dynamic_batching = {}"), "m")  # max_batch_size 0: no preferred sizes is fine
    mc.from_table(table('default_model_filename = "my_model.py"'), "m")


@pytest.mark.parametrize("name", ["a;b", "a|b", "a&b", "a$b", "a`b", "a<b", "a>b", "a(b", "a)b", "a[b", "a]b",
                                  "a{b", "a}b", "a\\b", 'a"b', "a'b", "a*b", "a?b", "a~b", "a#b", "a!b",
                                  "", " ", " a", "a/b", "..", "."])
def test_model_names_triton_refuses(name):
    e = error(mc.from_table, {}, name)
    assert e.field == "name", e.message


@pytest.mark.parametrize("name", ["add_sub", "text-transform", "resnet50.v2", "Model_1"])
def test_ordinary_model_names(name):
    assert mc.from_table({}, name).name == name


# --- execution env and defaults ----------------------------------------------------------------------------

def test_set_execution_env_adds_the_parameter():
    cfg = mc.from_table({}, "m")
    mc.set_execution_env(cfg, "env.tar.gz")
    assert cfg.parameters["EXECUTION_ENV_PATH"].string_value == "$$TRITON_MODEL_DIRECTORY/env.tar.gz"
    assert b'string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz"' in mc.render(cfg)


def test_set_execution_env_accepts_the_same_value_and_refuses_another():
    cfg = mc.from_table(table('parameters = { EXECUTION_ENV_PATH = "$$TRITON_MODEL_DIRECTORY/env.tar.gz" }'), "m")
    before = mc.render(cfg)
    mc.set_execution_env(cfg, "env.tar.gz")
    assert mc.render(cfg) == before
    e = error(mc.set_execution_env, cfg, "other.tar.gz")
    assert e.field == "parameters.EXECUTION_ENV_PATH" and "other.tar.gz" in e.message


def test_set_execution_env_keeps_other_parameters():
    cfg = mc.from_table(table('parameters = { FOO = "bar" }'), "m")
    mc.set_execution_env(cfg, "env")
    assert dict(cfg.parameters.items()).keys() == {"FOO", "EXECUTION_ENV_PATH"}


def test_default_model_filename():
    assert mc.default_model_filename(mc.from_table({}, "m")) == "model.py"
    assert mc.default_model_filename(mc.from_table({"default_model_filename": "serve.py"}, "m")) == "serve.py"


def test_config_error_carries_field_and_message():
    e = ConfigError("input[0].data_type", "bad")
    assert (e.field, e.message, str(e)) == ("input[0].data_type", "bad", "input[0].data_type: bad")
    assert str(ConfigError("", "whole")) == "whole"
