"""A test-only decoupled Triton python model for generation tests (packaged as ``1/model.py``).

It answers a generate-extension request (``text_input`` and ``max_new_tokens``) with one response
per piece of text, ``" <prompt>-<i>"``, every ``DELAY_S``, then a last response with
``finish_reason`` "length", and appends a line per piece it produced to ``produced.log`` in its
model directory, so a test can tell whether it stopped when the caller went away (it checks
``is_cancelled`` before each piece). A prompt of ``fail`` gets an error response after one piece.
"""

import json
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

DELAY_S = 0.05
PRODUCED_LOG = "produced.log"


def _response(text: str, finish_reason: str):
    return pb_utils.InferenceResponse(
        [
            pb_utils.Tensor("text_output", np.array([text.encode()], dtype=object)),
            pb_utils.Tensor("finish_reason", np.array([finish_reason.encode()], dtype=object)),
        ]
    )


class TritonPythonModel:
    def initialize(self, args):
        self.produced = Path(args["model_repository"]) / PRODUCED_LOG

    def execute(self, requests):
        for request in requests:
            self._answer(request)
        return None

    def _answer(self, request):
        sender = request.get_response_sender()
        prompt = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
        prompt = prompt.decode() if isinstance(prompt, bytes) else str(prompt)
        count = int(json.loads(request.parameters() or "{}").get("max_new_tokens", 8))
        for index in range(count):
            if sender.is_cancelled():
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            time.sleep(DELAY_S)
            with open(self.produced, "a") as log:
                log.write(f"{prompt}\t{index}\n")
            if prompt == "fail" and index == 1:
                sender.send(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError("the decoder broke")),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
                return
            sender.send(_response(f" {prompt}-{index}", ""))
        sender.send(_response("", "length"), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
