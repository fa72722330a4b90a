import numpy as np
import triton_python_backend_utils as pb_utils

from transform import transform


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            out = np.array([transform(t.decode("utf-8")).encode("utf-8") for t in text.reshape(-1)],
                           dtype=np.object_).reshape(text.shape)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("RESULT", out)]))
        return responses
