"""Answering a tenant model's inference request: validate, route to the live copy, invoke.

The one invoke path of the REST ``invoke`` route and the proxy's schema check: the request's
inputs are checked against the platform's limit (``INVOKE_MAX_INPUTS``) and the model kind's
schema (400 naming the item, never echoing it), the model's deployment names the live version
(503 with Retry-After while its first rollout is under way, 409 with none), ``route`` picks the
loaded copy with the fewest requests in flight, and the copy's backend answers, in parts of the
kind's batch size.
"""

from __future__ import annotations

from functools import lru_cache

import jsonschema
from django.conf import settings

from config.errors import Conflict, DomainError
from deployments import usage
from deployments.backends import backend_for
from deployments.backends.base import InvokeResult
from deployments.exceptions import InstanceUnavailable, InvalidInferenceInput, ModelLoadFailed
from deployments.models import Deployment, Placement
from deployments.proxy.batching import split_list, too_many_inputs
from deployments.proxy.core import not_deployed_message
from deployments.proxy.routing import (
    expected_rollout_s,
    first_rollout_in_flight,
    rollout_retry_after_s,
)
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion, TenantModel


class ModelNotDeployed(Conflict):
    code = "not_deployed"


class DeploymentInProgress(DomainError):
    """The model's first rollout is under way: retry after ``retry_after_s``."""

    status_code = 503
    code = "deployment_in_progress"

    def __init__(self, message: str, *, retry_after_s: int, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


@lru_cache(maxsize=64)
def _validator(kind_name: str, max_inputs: int) -> jsonschema.Draft202012Validator:
    # The kind's schema describes one request to Triton (up to its batch size); callers may
    # send up to the platform's limit, split before they reach Triton.
    schema = {**get_kind(kind_name).input_schema, "maxItems": max_inputs}
    return jsonschema.Draft202012Validator(schema)


def _article(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def describe_error(error: jsonschema.ValidationError) -> str:
    """What is wrong with an input, in words that never repeat the input itself."""
    expected = error.validator_value
    match error.validator:
        case "type":
            kinds = expected if isinstance(expected, list) else [expected]
            return "must be " + " or ".join(_article(str(kind)) for kind in kinds) + "."
        case "minLength":
            return "must not be empty." if expected == 1 else f"needs {expected}+ characters."
        case "maxLength":
            return f"must be at most {expected} characters."
        case "minItems":
            return f"needs at least {expected} item(s), got {len(error.instance)}."
        case "maxItems":
            return f"holds at most {expected} item(s), got {len(error.instance)}."
        case "enum" | "const":
            return "is not one of the values this model accepts."
        case "required":
            return "misses a required field."
        case _:
            return f"does not match the model's input schema ({error.validator})."


def validate_inputs(*, kind_name: str, inputs: object) -> None:
    """Raise InvalidInferenceInput naming the field (``inputs`` or the first offending
    ``inputs[i]``) when the inputs break the platform's limits or the kind's schema."""
    if not isinstance(inputs, list):
        raise InvalidInferenceInput("inputs: must be a list of inputs.", field="inputs")
    limit = settings.TENANTML_INVOKE_MAX_INPUTS
    refusal = too_many_inputs(count=len(inputs), limit=limit)
    if refusal:
        raise InvalidInferenceInput(f"inputs: {refusal}", field="inputs")
    validator = _validator(kind_name, limit)
    error = next(iter(sorted(validator.iter_errors(inputs), key=lambda e: list(e.path))), None)
    if error is None:
        return
    field = "inputs" + "".join(f"[{part}]" for part in error.path)
    raise InvalidInferenceInput(f"{field}: {describe_error(error)}", field=field)


def route(*, version: ModelVersion) -> Placement:
    """The copy of ``version`` a request should go to: a loaded copy on a healthy instance with
    the fewest requests in flight, else any placed copy there (the request loads it).

    Instances that are draining, unhealthy or stopped get no new requests; with no copy left
    the caller gets a 503 to retry while the reconciler restores one.
    """
    candidates = list(
        Placement.objects.reachable()
        .filter(version=version)
        .select_related("version__model__tenant", "instance", "endpoint")
    )
    if not candidates:
        raise InstanceUnavailable(
            f"No healthy instance holds {version} right now; retry shortly while it is restored."
        )
    loaded = [c for c in candidates if c.actual_state == Placement.ActualState.LOADED]
    pool = loaded or [c for c in candidates if c.actual_state != Placement.ActualState.FAILED]
    if not pool:
        raise ModelLoadFailed(
            candidates[0].failure_reason or f"{version} failed to load on every instance."
        )
    return min(pool, key=lambda c: (usage.IN_FLIGHT.count(c.pk), c.pk))


def live_version(*, model: TenantModel) -> ModelVersion:
    """The version the model's requests go to; DeploymentInProgress (503) while its first
    rollout is under way, ModelNotDeployed (409) when none is."""
    deployment = (
        Deployment.objects.select_related("live_version__model__tenant", "target_version")
        .filter(model=model)
        .first()
    )
    if deployment is not None and deployment.live_version is not None:
        return deployment.live_version
    name = f"{model.tenant.slug}/{model.name}"
    if first_rollout_in_flight(deployment):
        started = deployment.rollout_started_at
        wait_s = rollout_retry_after_s(
            started_at=started.timestamp() if started else None,
            expected_s=expected_rollout_s(model_id=model.pk, kind=model.kind),
        )
        raise DeploymentInProgress(
            f"{name} v{deployment.target_version.number} is being deployed; retry in {wait_s} s.",
            retry_after_s=wait_s,
            field="model",
        )
    failed = deployment is not None and deployment.status == Deployment.Status.FAILED
    raise ModelNotDeployed(
        not_deployed_message(name, deployment.status_reason if failed else ""), field="model"
    )


def invoke_model(*, model: TenantModel, inputs: list) -> InvokeResult:
    """Answer ``inputs`` with the model's live version, in parts of the kind's batch size sent
    one after another to the same copy (the first failure fails the request)."""
    validate_inputs(kind_name=model.kind, inputs=inputs)
    version = live_version(model=model)
    placement = route(version=version)
    serving = backend_for(placement.endpoint)
    outputs, cold_start, latency_ms = [], False, 0.0
    usage.ensure_background_flush()
    with usage.IN_FLIGHT.request(placement.pk):
        for part in split_list(inputs, get_kind(model.kind).max_batch_size):
            try:
                result = serving.invoke(placement=placement, inputs=list(part))
            except DomainError as exc:
                # Triton's words name the serving name; callers know the public one.
                exc.message = exc.message.replace(
                    version.triton_model_name, f"{model.tenant.slug}.{model.name} v{version.number}"
                )
                raise
            outputs.extend(result.outputs)
            cold_start = cold_start or result.cold_start
            latency_ms += result.latency_ms
    return InvokeResult(
        outputs=outputs, cold_start=cold_start, latency_ms=latency_ms, model_version=version.number
    )
