import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        # labels.txt sits at the model directory root, placed there by the build.
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "labels.txt")
        with open(path) as f:
            self.labels = [line.strip() for line in f if line.strip()]

    def execute(self, requests):
        responses = []
        for request in requests:
            index = pb_utils.get_input_tensor_by_name(request, "INDEX").as_numpy()
            try:
                label = np.array([self.labels[int(index[0])].encode()], dtype=np.object_)
            except IndexError:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"no label {int(index[0])}: there are {len(self.labels)}")))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("LABEL", label)]))
        return responses
