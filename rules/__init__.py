"""The Triton Inference Server rule set for tpbuild (import name `tpbuild_triton`, source in `rules/`).

Registered through the `tpbuild.rules` entry-point group; it uses only `tpbuild.plugin`.
"""

from .env import PythonEnv
from .model import TritonModel
from .repository import ModelRepository
from .stub import PythonStub

RULES = [TritonModel, ModelRepository, PythonEnv, PythonStub]
