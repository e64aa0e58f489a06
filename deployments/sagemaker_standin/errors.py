"""The errors the stand-in answers, shaped as botocore parses them for each protocol.

SageMaker's control plane speaks JSON 1.1 (``__type`` and ``message`` in the body); the runtime
speaks rest-json (the ``x-amzn-ErrorType`` header, and for ``ModelError`` the original status,
message and log stream in the body, which botocore lifts into ``error.response``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ModelError", "StandinError", "ValidationError", "ValidationException"]


class StandinError(Exception):
    """An AWS error answer: its code, HTTP status, message and any modeled extra fields."""

    code = "InternalFailure"
    status = 500

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def body(self) -> dict[str, Any]:
        return {"__type": self.code, "message": self.message, **self.fields}


class ValidationException(StandinError):
    """SageMaker's control-plane refusal of a request (unknown resource, invalid value)."""

    code = "ValidationException"
    status = 400


class ResourceLimitExceeded(StandinError):
    """SageMaker's refusal for lack of capacity under the account's or endpoint's limits."""

    code = "ResourceLimitExceeded"
    status = 400


class ValidationError(StandinError):
    """The runtime's refusal before a model is reached (unknown endpoint, model, component)."""

    code = "ValidationError"
    status = 400


class ModelError(StandinError):
    """The runtime's answer when the model container answered an error (or none)."""

    code = "ModelError"
    status = 424

    def __init__(
        self, message: str, *, original_status: int, original_message: str, log_stream_arn: str
    ) -> None:
        super().__init__(
            message,
            OriginalStatusCode=original_status,
            OriginalMessage=original_message,
            LogStreamArn=log_stream_arn,
        )
