"""Answering a tenant model's inference request: validate, route to the live copy, invoke.

The one invoke path of the REST ``invoke`` route and the proxy's schema check: the request's
inputs are checked against the model kind's schema (400 naming the item), the model's deployment
names the live version, ``route`` picks the loaded copy with the fewest requests in flight, and
the copy's backend answers.
"""

from __future__ import annotations

from functools import lru_cache

import jsonschema

from config.errors import Conflict
from deployments import usage
from deployments.backends import backend_for
from deployments.backends.base import InvokeResult
from deployments.exceptions import InstanceUnavailable, InvalidInferenceInput, ModelLoadFailed
from deployments.models import Deployment, Placement
from models_registry.kinds import get_kind
from models_registry.models import ModelVersion, TenantModel


class ModelNotDeployed(Conflict):
    code = "not_deployed"


@lru_cache(maxsize=64)
def _validator(kind_name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(get_kind(kind_name).input_schema)


def validate_inputs(*, kind_name: str, inputs: list) -> None:
    """Raise InvalidInferenceInput naming the first offending item, per the kind's schema."""
    validator = _validator(kind_name)
    error = next(iter(sorted(validator.iter_errors(inputs), key=lambda e: list(e.path))), None)
    if error is None:
        return
    field = "inputs" + "".join(f"[{part}]" for part in error.path)
    raise InvalidInferenceInput(f"{field}: {error.message}", field=field)


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


def invoke_model(*, model: TenantModel, inputs: list) -> InvokeResult:
    """Answer ``inputs`` with the model's live version."""
    validate_inputs(kind_name=model.kind, inputs=inputs)
    deployment = (
        Deployment.objects.select_related("live_version__model__tenant").filter(model=model).first()
    )
    if deployment is None or deployment.live_version is None:
        raise ModelNotDeployed(
            f"{model} is not serving yet: deploy it (POST .../deployments/) and retry once the "
            "deployment is live.",
            field="model",
        )
    placement = route(version=deployment.live_version)
    usage.ensure_background_flush()
    with usage.IN_FLIGHT.request(placement.pk):
        return backend_for(placement.endpoint).invoke(placement=placement, inputs=inputs)
