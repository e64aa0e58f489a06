"""The SageMaker control-plane operations the stand-in answers itself instead of moto.

moto has no inference components and no UpdateEndpoint, refuses an endpoint config whose variant
has no ModelName (an inference-component config) with a KeyError, and marks an endpoint
InService the moment it is created. These operations are answered here, over moto's objects
where moto has them, with answers serialized by botocore's own ``sagemaker`` service model so
the shapes are the ones boto3 parses. Training jobs (Create, Describe, List, Stop) are
``training``'s. Every other operation falls through to moto.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moto.core.serialize import JSONSerializer
from moto.core.utils import get_service_model
from moto.sagemaker.models import FakeEndpointConfig

from deployments.sagemaker_standin.errors import ValidationException
from deployments.sagemaker_standin.fleet import Fleet
from deployments.sagemaker_standin.training import TrainingJobs

__all__ = ["ControlPlane"]

DEFAULT_PAGE_SIZE = 10


class ControlPlane:
    """Answers the SageMaker operations moto lacks or gets wrong."""

    def __init__(self, fleet: Fleet, training: TrainingJobs | None = None) -> None:
        self.fleet = fleet
        self.moto = fleet.moto
        self._model = get_service_model("sagemaker")
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "CreateEndpointConfig": self.create_endpoint_config,
            "CreateEndpoint": self.create_endpoint,
            "UpdateEndpoint": self.update_endpoint,
            "UpdateEndpointWeightsAndCapacities": self.update_weights_and_capacities,
            "DeleteEndpoint": self.delete_endpoint,
            "CreateInferenceComponent": self.create_inference_component,
            "DescribeInferenceComponent": self.describe_inference_component,
            "UpdateInferenceComponent": self.update_inference_component,
            "UpdateInferenceComponentRuntimeConfig": self.update_runtime_config,
            "DeleteInferenceComponent": self.delete_inference_component,
            "ListInferenceComponents": self.list_inference_components,
        }
        if training is not None:
            # Training jobs that run for real (``training``) instead of moto's instant records.
            self._handlers.update(training.handlers())

    def handles(self, operation: str) -> bool:
        return operation in self._handlers

    def answer(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run one operation; its serialized answer (``body``, ``headers``, ``status_code``)."""
        result = self._handlers[operation](params)
        return JSONSerializer(self._model.operation_model(operation)).serialize(result)

    # -- endpoint configs and endpoints ------------------------------------------------------

    def create_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        backend = self.moto.sagemaker
        if name in backend.endpoint_configs:
            raise ValidationException(
                "Cannot create already existing endpoint configuration "
                f'"{self.moto.arn("endpoint-config", name)}".'
            )
        variants = params.get("ProductionVariants") or []
        for_components = any(not variant.get("ModelName") for variant in variants)
        if not for_components:
            if any(variant.get("ManagedInstanceScaling") for variant in variants):
                raise ValidationException(
                    "ManagedInstanceScaling is only supported for inference component endpoints."
                )
            config = backend.create_endpoint_config(
                endpoint_config_name=name,
                production_variants=variants,
                data_capture_config=params.get("DataCaptureConfig"),
                async_inference_config=params.get("AsyncInferenceConfig"),
                tags=params.get("Tags"),
                kms_key_id=params.get("KmsKeyId"),
            )
        else:
            if not params.get("ExecutionRoleArn"):
                raise ValidationException(
                    "ExecutionRoleArn is required for an endpoint config whose production "
                    "variants have no ModelName (inference components)."
                )
            if any(variant.get("ModelName") for variant in variants):
                raise ValidationException(
                    "Either every production variant names a model or none does."
                )
            # moto's own create would look up each variant's ModelName (a KeyError here).
            config = FakeEndpointConfig(
                account_id=self.moto.account_id,
                region_name=self.moto.region,
                endpoint_config_name=name,
                production_variants=variants,
                async_inference_config=params.get("AsyncInferenceConfig"),
                data_capture_config=params.get("DataCaptureConfig"),
                tags=params.get("Tags"),
                kms_key_id=params.get("KmsKeyId"),
            )
            backend.endpoint_configs[name] = config
        if params.get("ExecutionRoleArn"):
            # Kept so DescribeEndpointConfig gives it back (an update copies the config).
            config.execution_role_arn = params["ExecutionRoleArn"]
        return {"EndpointConfigArn": config.endpoint_config_arn}

    def create_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        if self.moto.endpoint(name) is not None:
            raise ValidationException(
                f'Cannot create already existing endpoint "{self.moto.arn("endpoint", name)}".'
            )
        config_name = params["EndpointConfigName"]
        self.moto.endpoint_config(config_name)
        endpoint = self.moto.sagemaker.create_endpoint(
            endpoint_name=name, endpoint_config_name=config_name, tags=params.get("Tags")
        )
        self.fleet.endpoint_created(name, config_name)
        return {"EndpointArn": endpoint.arn}

    def update_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        arn = self.fleet.update_endpoint(params["EndpointName"], params["EndpointConfigName"])
        return {"EndpointArn": arn}

    def update_weights_and_capacities(self, params: dict[str, Any]) -> dict[str, Any]:
        arn = self.fleet.update_weights_and_capacities(
            params["EndpointName"], params.get("DesiredWeightsAndCapacities") or []
        )
        return {"EndpointArn": arn}

    def delete_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        self.fleet.delete_endpoint(params["EndpointName"])
        return {}

    # -- inference components ----------------------------------------------------------------

    def create_inference_component(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"InferenceComponentArn": self.fleet.create_component(params)}

    def describe_inference_component(self, params: dict[str, Any]) -> dict[str, Any]:
        component = self.fleet.require_component(params["InferenceComponentName"])
        with self.fleet.lock:
            return component.describe()

    def update_inference_component(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"InferenceComponentArn": self.fleet.update_component(params)}

    def update_runtime_config(self, params: dict[str, Any]) -> dict[str, Any]:
        copies = int((params.get("DesiredRuntimeConfig") or {})["CopyCount"])
        arn = self.fleet.set_component_copies(params["InferenceComponentName"], copies)
        return {"InferenceComponentArn": arn}

    def delete_inference_component(self, params: dict[str, Any]) -> dict[str, Any]:
        self.fleet.delete_component(params["InferenceComponentName"])
        return {}

    def list_inference_components(self, params: dict[str, Any]) -> dict[str, Any]:
        components = self.fleet.list_components()
        filters = {
            "EndpointNameEquals": lambda c, v: c.endpoint_name == v,
            "VariantNameEquals": lambda c, v: c.variant_name == v,
            "StatusEquals": lambda c, v: c.status == v,
            "NameContains": lambda c, v: v in c.name,
        }
        for key, keep in filters.items():
            if params.get(key):
                components = [c for c in components if keep(c, params[key])]
        sort_by = params.get("SortBy") or "CreationTime"
        sort_key = {
            "Name": lambda c: c.name,
            "Status": lambda c: c.status,
            "CreationTime": lambda c: c.created,
        }[sort_by]
        components.sort(
            key=sort_key, reverse=(params.get("SortOrder") or "Descending") == "Descending"
        )
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults") or DEFAULT_PAGE_SIZE)
        page = components[start : start + size]
        with self.fleet.lock:
            result: dict[str, Any] = {"InferenceComponents": [c.summary() for c in page]}
        if start + size < len(components):
            result["NextToken"] = str(start + size)
        return result
