"""Domain errors of serving: instances that do not answer, models that do not load or answer.

``config.exceptions`` maps them to HTTP answers by their ``status_code``. Each message says what
happened in the platform's words and what to do about it; Triton's own text is kept verbatim where
it is the most precise account of the failure.
"""

from __future__ import annotations

from config.errors import Conflict, DomainError


class InstanceUnavailable(DomainError):
    """The instance (a Triton process) did not start, stopped answering or refused the call."""

    status_code = 503
    code = "instance_unavailable"

    def __init__(self, message: str, *, log_tail: str = "", field: str | None = None) -> None:
        super().__init__(_with_log(message, log_tail), field=field)
        self.log_tail = log_tail


class ModelLoadFailed(DomainError):
    """Triton refused or failed to load a model (bad package, model code raised, timed out)."""

    status_code = 502
    code = "model_load_failed"

    def __init__(
        self,
        message: str,
        *,
        model_name: str = "",
        triton_message: str = "",
        log_tail: str = "",
        field: str | None = None,
    ) -> None:
        super().__init__(_with_log(message, log_tail), field=field)
        self.model_name = model_name
        self.triton_message = triton_message
        self.log_tail = log_tail


class ModelLoadTimedOut(ModelLoadFailed):
    """The load did not finish in time; Triton goes on loading it in the background."""

    code = "model_load_timed_out"


class ModelLoadConflict(Conflict):
    """The name or the package directory is already in use on the instance for something else."""

    code = "model_load_conflict"


class ModelNotLoaded(Conflict):
    """The instance does not have the model loaded (never loaded, unloaded, or evicted).

    A conflict rather than "not found": the model exists, it is just not in memory on that
    instance, and loading it first (or retrying through the proxy, which does) resolves it.
    """

    code = "model_not_loaded"


class ModelBusy(DomainError):
    """The model still had requests in flight, so it was not unloaded (nor its room freed)."""

    status_code = 503
    code = "model_busy"


class UpstreamError(DomainError):
    """Triton answered, but not with a usable result (model code crashed, server error)."""

    status_code = 502
    code = "upstream_error"


class UnloadTimedOut(UpstreamError):
    """Triton did not confirm an unload in time: the server is wedged (see serving.md)."""

    code = "unload_timed_out"


class InvalidInferenceInput(DomainError):
    """Triton rejected the request body (wrong tensor name, shape, datatype or JSON)."""

    status_code = 400
    code = "invalid_inference_input"


class InvalidPackage(DomainError):
    """A model package that cannot be unpacked safely or is not a Triton model repository."""

    status_code = 422
    code = "invalid_package"


def _with_log(message: str, log_tail: str) -> str:
    if not log_tail.strip():
        return message
    return f"{message}\n--- last lines of the Triton log ---\n{log_tail.rstrip()}"


class CapacityExceeded(DomainError):
    """The model cannot fit: not on the instance even after evicting every unpinned model, or
    on no instance type of the catalog at all."""

    status_code = 503
    code = "capacity_exceeded"


class ForwardFailed(DomainError):
    """A copy could not answer a proxied request: the status and code the caller gets, when to
    retry, the ``/metrics`` label of an upstream failure, and whether the route that led there is
    stale (its instance stopped answering)."""

    status_code = 503
    code = "unavailable"

    def __init__(
        self,
        message: str,
        *,
        status: int = 503,
        code: str = "unavailable",
        retry_after_s: float | None = None,
        metric: str | None = None,
        stale_route: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_code = status
        self.code = code
        self.retry_after_s = retry_after_s
        self.metric = metric
        self.stale_route = stale_route


class InvalidCapture(DomainError):
    """A request-capture call that cannot be done as asked (the field is named)."""

    status_code = 400
    code = "invalid"


class CaptureNotFound(DomainError):
    """No captured requests where the caller asked for them."""

    status_code = 404
    code = "not_found"
