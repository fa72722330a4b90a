import numpy as np
import tabulate
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "VALUES").as_numpy()
            text = tabulate.tabulate([[i, float(v)] for i, v in enumerate(values)], headers=["i", "value"])
            out = np.array([text.encode()], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TABLE", out)]))
        return responses
