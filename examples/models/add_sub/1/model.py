from tpbuild_runtime import BaseTritonPythonModel


class TritonPythonModel(BaseTritonPythonModel):
    # Requests the dynamic batcher groups into one execute call are answered by one infer call.
    batched = True

    def infer(self, inputs):
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}
