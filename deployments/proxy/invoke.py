"""Answering a tenant model's inference request: validate, route to the live copy, invoke.

The routing core the REST ``invoke`` route uses: the request's inputs are checked against the
model kind's schema (400 naming the item), the model's deployment names the live version, and
``runtime.route`` picks the loaded copy with the fewest requests in flight.
"""

from __future__ import annotations

from functools import lru_cache

import jsonschema

from config.errors import Conflict
from deployments.backends.local import runtime
from deployments.exceptions import InvalidInferenceInput
from deployments.models import Deployment, Endpoint
from deployments.services import usage
from models_registry.kinds import get_kind
from models_registry.models import TenantModel


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


def invoke_model(*, model: TenantModel, inputs: list) -> runtime.InvokeResult:
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
    placement = runtime.route(version=deployment.live_version)
    usage.ensure_background_flush()
    if placement.endpoint.backend == Endpoint.Backend.SAGEMAKER:
        from deployments.backends.sagemaker import deploy as sagemaker_deploy

        return sagemaker_deploy.invoke(placement=placement, inputs=inputs)
    return runtime.invoke_placement(placement=placement, inputs=inputs)
