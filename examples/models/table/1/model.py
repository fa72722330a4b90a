import numpy as np
import tabulate
from tpbuild_runtime import BaseTritonPythonModel


class TritonPythonModel(BaseTritonPythonModel):
    def infer(self, inputs):
        rows = [[i, float(v)] for i, v in enumerate(inputs["VALUES"])]
        return {"TABLE": np.array([tabulate.tabulate(rows, headers=["i", "value"])])}
