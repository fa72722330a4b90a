import numpy as np
from tpbuild_runtime import BaseTritonPythonModel

from transform import transform


class TritonPythonModel(BaseTritonPythonModel):
    def infer(self, inputs):
        return {"RESULT": np.array([transform(t.decode("utf-8")) for t in inputs["TEXT"]])}
