"""The Triton Inference Server rule set for tpbuild (import name `tpbuild_triton`, source in `rules/`).

Registered through the `tpbuild.rules` entry-point group; it uses only `tpbuild.plugin`. `RULES` is
loaded on first use: the rule modules bring pydantic and the plugin API, which what imports a module
of this package alone does not need (the engine re-deriving a model.py's facts with `pycheck`, the
`python -m tpbuild_triton.pycheck` action, a rule-set command).
"""


def __getattr__(name: str):
    if name == "RULES":
        from .env import PythonEnv
        from .model import TritonModel
        from .repository import ModelRepository
        from .stub import PythonStub

        return [TritonModel, ModelRepository, PythonEnv, PythonStub]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
