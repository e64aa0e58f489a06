"""Deployment and inference endpoints. Thin: parse, call a service or selector, render."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from config.filters import query_filters
from config.openapi import error_responses
from config.pagination import LimitOffsetPagination
from deployments.api.serializers import (
    CaptureDatasetRequestSerializer,
    CaptureSettingsRequestSerializer,
    DeploymentRequestSerializer,
    DeploymentSerializer,
    DrainedInstanceSerializer,
    EndpointCostSerializer,
    EventFilterSerializer,
    EventSerializer,
    FleetCostsSerializer,
    FleetUtilizationSerializer,
    InvokeRequestSerializer,
    InvokeResponseSerializer,
    TenantCostSerializer,
)
from deployments.proxy import invoke as inference
from deployments.selectors import costs as cost_selectors
from deployments.selectors import events as event_selectors
from deployments.selectors import fleet as selectors
from deployments.services import capture, draining, retirement, rollouts
from models_registry import selectors as registry_selectors
from models_registry.api.serializers import DatasetSerializer
from tenants.access import caller_for_request
from tenants.api.permissions import IsPlatformCaller
from tenants.selectors import tenant_for_caller


def _model(request, slug: str, name: str):
    tenant = tenant_for_caller(caller=caller_for_request(request), slug=slug)
    return registry_selectors.model_for_tenant(tenant=tenant, name=name)


class DeploymentView(APIView):
    @extend_schema(
        operation_id="getDeployment",
        tags=["Deployments"],
        summary="Get a model's deployment",
        description="Where and how the model is served: mode, backend, replicas, endpoint, the "
        "live version, the version a rollout is moving to and the one kept for rollback.",
        responses={
            200: DeploymentSerializer,
            **error_responses({404: "No such model, or the model was never deployed."}),
        },
    )
    def get(self, request, slug: str, name: str):
        deployment = selectors.deployment_for_model(model=_model(request, slug, name))
        return Response(DeploymentSerializer(deployment).data)

    @extend_schema(
        operation_id="createDeployment",
        tags=["Deployments"],
        summary="Deploy a model",
        description="Serve a version of the model (default: its active version), in a mode "
        "(default: the current deployment's, or mme). The rollout runs in the background: "
        "follow `status` on this resource; the previous version keeps answering until the new "
        "one does. Asking again for what is live or rolling out changes nothing.",
        request=DeploymentRequestSerializer,
        responses={
            202: DeploymentSerializer,
            **error_responses(
                {
                    404: "No such model, or no such version of it.",
                    409: "The model has no active version, or the version is not ready.",
                }
            ),
        },
    )
    def post(self, request, slug: str, name: str):
        caller = caller_for_request(request)
        model = _model(request, slug, name)
        serializer = DeploymentRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = (
            registry_selectors.version_for_model(model=model, number=data["version"])
            if "version" in data
            else None
        )
        deployment, _queued = rollouts.request_deployment(
            model=model,
            version=version,
            mode=data.get("mode"),
            replicas=data.get("replicas"),
            actor=caller.label,
        )
        deployment = selectors.deployment_for_model(model=model)
        return Response(DeploymentSerializer(deployment).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="deleteDeployment",
        tags=["Deployments"],
        summary="Undeploy a model",
        description="Retire the deployment: the model stops answering at once and every copy "
        "is unloaded in the background (on SageMaker, its components, endpoints and S3 copies "
        "deleted). Undeploying a retired deployment changes nothing; deploying again starts "
        "afresh.",
        request=None,
        responses={
            202: DeploymentSerializer,
            **error_responses({404: "No such model, or the model was never deployed."}),
        },
    )
    def delete(self, request, slug: str, name: str):
        model = _model(request, slug, name)
        retirement.retire_deployment(model=model, actor=caller_for_request(request).label)
        deployment = selectors.deployment_for_model(model=model)
        return Response(DeploymentSerializer(deployment).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="updateDeploymentCapture",
        tags=["Deployments"],
        summary="Turn request capture on or off",
        description="Request capture keeps `capture_sample_percent` % of the model's answered "
        "requests with their outputs (version, latency, cold start, protocol, time, a request "
        "id) as JSON Lines under `capture/<tenant>/<model>/<YYYY-MM-DD>/` in the artifact "
        "store, for `capture_retention_days` days. Serving processes read the change within "
        "CAPTURE_SETTINGS_TTL_S seconds.",
        request=CaptureSettingsRequestSerializer,
        responses={
            200: DeploymentSerializer,
            **error_responses(
                {
                    400: "A capture field is out of range or of the wrong type.",
                    404: "No such model, or the model was never deployed.",
                }
            ),
        },
    )
    def patch(self, request, slug: str, name: str):
        deployment = selectors.deployment_for_model(model=_model(request, slug, name))
        serializer = CaptureSettingsRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        capture.update_capture_settings(
            deployment=deployment,
            actor=caller_for_request(request).label,
            enabled=data.get("capture_enabled"),
            sample_percent=data.get("capture_sample_percent"),
            retention_days=data.get("capture_retention_days"),
        )
        deployment = selectors.deployment_for_model(model=deployment.model)
        return Response(DeploymentSerializer(deployment).data)


class CapturedDaysView(APIView):
    @extend_schema(
        operation_id="getCapturedDays",
        tags=["Deployments"],
        summary="Days with captured requests",
        description="The UTC days (YYYY-MM-DD) the model has captured requests for, oldest "
        "first, and the model's name as `<tenant>.<model>`.",
        responses={
            200: inline_serializer(
                "CapturedDays", {"model": serializers.CharField(), "days": serializers.ListField()}
            ),
            **error_responses({404: "No such model."}),
        },
    )
    def get(self, request, slug: str, name: str):
        model = _model(request, slug, name)
        return Response(
            {"model": f"{slug}.{model.name}", "days": capture.captured_days(model=model)}
        )


class CapturedDayDatasetView(APIView):
    @extend_schema(
        operation_id="createDatasetFromCapture",
        tags=["Deployments"],
        summary="Turn a captured day into a dataset",
        description="A dataset, checked like an upload, of the requests captured on one day: "
        "for a classifier each text with the label the model predicted (every row marked "
        '`"label_source": "predicted"` in the stored file, for the team to correct); for a '
        "reply model each text with the reply it generated. Embedding models are refused "
        "(their answers are no training target).",
        parameters=[
            OpenApiParameter(
                "day", OpenApiTypes.DATE, OpenApiParameter.PATH, description="A UTC day."
            )
        ],
        request=CaptureDatasetRequestSerializer,
        responses={
            201: DatasetSerializer,
            **error_responses(
                {
                    400: "The day, the name or the captured rows are refused (the field is "
                    "named), or the model's kind has no training target in its answers.",
                    404: "No such model, or nothing captured that day.",
                    409: "The tenant has a dataset of that name.",
                }
            ),
        },
    )
    def post(self, request, slug: str, name: str, day: str):
        model = _model(request, slug, name)
        serializer = CaptureDatasetRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        dataset = capture.dataset_from_capture(
            model=model,
            day=day,
            name=serializer.validated_data["name"],
            actor=caller_for_request(request).label,
        )
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


class DeploymentRollbackView(APIView):
    @extend_schema(
        operation_id="rollbackDeployment",
        tags=["Deployments"],
        summary="Roll back a deployment",
        description="Serve the previously deployed version again; where its copies are still "
        "loaded the switch is immediate.",
        request=None,
        responses={
            202: DeploymentSerializer,
            **error_responses({409: "There is no earlier deployed version to roll back to."}),
        },
    )
    def post(self, request, slug: str, name: str):
        model = _model(request, slug, name)
        rollouts.rollback_deployment(model=model, actor=caller_for_request(request).label)
        deployment = selectors.deployment_for_model(model=model)
        return Response(DeploymentSerializer(deployment).data, status=status.HTTP_202_ACCEPTED)


class InvokeView(APIView):
    # Inference is rate-limited by the proxy's own limiter (PROXY_RATE_LIMIT_RPS), which answers
    # this route on the ASGI path; the management API's throttle would count it twice.
    throttle_classes = []

    @extend_schema(
        operation_id="invokeModel",
        tags=["Inference"],
        summary="Invoke a model",
        description="Predictions of the model's live version, one output per input in the "
        "inputs' order. A model not loaded anywhere is loaded first (a cold start, said in the "
        "answer).",
        request=InvokeRequestSerializer,
        responses={
            200: InvokeResponseSerializer,
            **error_responses(
                {
                    409: "The model is not deployed.",
                    413: "The body is larger than PROXY_MAX_BODY_BYTES.",
                    429: "The tenant sent more than its request rate (PROXY_RATE_LIMIT_RPS); "
                    "retry after Retry-After seconds.",
                    502: "The model failed to load or to answer.",
                    503: "No copy of the model can answer right now; retry after Retry-After "
                    "seconds.",
                }
            ),
        },
    )
    def post(self, request, slug: str, name: str):
        model = _model(request, slug, name)
        serializer = InvokeRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = inference.invoke_model(model=model, inputs=serializer.validated_data["inputs"])
        return Response(
            {
                "outputs": result.outputs,
                "model_version": result.model_version,
                "cold_start": result.cold_start,
            }
        )


class InstanceDrainView(APIView):
    permission_classes = [IsPlatformCaller]

    @extend_schema(
        operation_id="drainInstance",
        tags=["Instances"],
        summary="Drain an instance",
        description="Move every model off a local serving instance (each loaded elsewhere "
        "first), then stop it. Platform tokens only.",
        request=None,
        responses={
            200: DrainedInstanceSerializer,
            **error_responses(
                {
                    400: "The instance is on SageMaker, which replaces its own instances.",
                    502: "A model failed to load on the instance taking it.",
                    503: "The instance's models fit on no other instance right now.",
                }
            ),
        },
    )
    def post(self, request, instance_id: int):
        instance = selectors.instance_by_id(instance_id=instance_id)
        instance = draining.drain_instance(
            instance=instance, actor=caller_for_request(request).label
        )
        return Response({"instance": str(instance), "status": instance.status})


class FleetUtilizationView(APIView):
    """Memory utilization, models loaded vs placed and last hour's traffic (the overview's)."""

    @extend_schema(
        operation_id="getFleetUtilization",
        tags=["Fleet"],
        summary="Get fleet utilization",
        description="Memory in use against the instances' budgets, models loaded against "
        "models placed, and the last hour's invocations, cold starts, errors and latency. A "
        "tenant token gets its own models' share.",
        responses=FleetUtilizationSerializer,
    )
    def get(self, request):
        return Response(selectors.fleet_utilization(caller=caller_for_request(request)))


class FleetCostsView(APIView):
    """Cost per hour and month, the dedicated baseline and savings (a tenant: its share)."""

    @extend_schema(
        operation_id="getFleetCosts",
        tags=["Fleet"],
        summary="Get fleet costs",
        description="Cost per hour and month, against a dedicated endpoint per model (the "
        "savings and the formula), with the most expensive tenants and endpoints. A tenant "
        "token gets its own share.",
        responses=FleetCostsSerializer,
    )
    def get(self, request):
        return Response(cost_selectors.fleet_costs(caller=caller_for_request(request)))


class FleetTenantCostsView(GenericAPIView):
    """Every tenant's share of the cost (a tenant token: its own), most expensive first, ties by
    slug; paginated like every list."""

    pagination_class = LimitOffsetPagination
    serializer_class = TenantCostSerializer

    @extend_schema(
        operation_id="listTenantCosts",
        tags=["Fleet"],
        summary="List tenants' costs",
        description="Every tenant's share of the fleet's cost, most expensive first (ties by "
        "slug). A tenant token gets its own row.",
        responses=TenantCostSerializer(many=True),
    )
    def get(self, request):
        paginator = self.paginator
        limit, offset = paginator.get_limit(request), paginator.get_offset(request)
        result = cost_selectors.tenant_costs(
            caller=caller_for_request(request), limit=limit, offset=offset
        )
        return paginator.counted_page_response(
            request, rows=result.rows, count=result.count, limit=limit, offset=offset
        )


class FleetEndpointCostsView(GenericAPIView):
    """Every endpoint with live instances and its hourly cost, by name (platform callers)."""

    permission_classes = [IsPlatformCaller]
    pagination_class = LimitOffsetPagination
    serializer_class = EndpointCostSerializer

    @extend_schema(
        operation_id="listEndpointCosts",
        tags=["Fleet"],
        summary="List endpoints' costs",
        description="Every endpoint with live instances and its hourly cost, by name. Platform "
        "tokens only.",
        responses=EndpointCostSerializer(many=True),
    )
    def get(self, request):
        paginator = self.paginator
        limit, offset = paginator.get_limit(request), paginator.get_offset(request)
        rows, count = cost_selectors.endpoint_costs(limit=limit, offset=offset)
        return paginator.counted_page_response(
            request, rows=rows, count=count, limit=limit, offset=offset
        )


class EventListView(GenericAPIView):
    """The whole platform's event log (platform callers)."""

    permission_classes = [IsPlatformCaller]

    @extend_schema(
        operation_id="listEvents",
        tags=["Events"],
        summary="List the platform's events",
        description="What the platform did and why, every tenant's and the fleet's own, newest "
        "first: by type (exact, or a prefix ending in a dot), severity and time. Platform "
        "tokens only; a tenant reads its own at /api/v1/tenants/{slug}/events/.",
        parameters=[EventFilterSerializer],
        responses=EventSerializer(many=True),
    )
    def get(self, request):
        return _events_page(self, request, tenant=None)


class TenantEventListView(GenericAPIView):
    """One tenant's event log."""

    @extend_schema(
        operation_id="listTenantEvents",
        tags=["Events"],
        summary="List a tenant's events",
        description="What the platform did about the tenant's datasets, models, training jobs, "
        "deployments and tokens, newest first: by type (exact, or a prefix ending in a dot), "
        "severity and time.",
        parameters=[EventFilterSerializer],
        responses=EventSerializer(many=True),
    )
    def get(self, request, slug: str):
        tenant = tenant_for_caller(caller=caller_for_request(request), slug=slug)
        return _events_page(self, request, tenant=tenant)


def _events_page(view: GenericAPIView, request, *, tenant):
    filters = EventFilterSerializer(data=query_filters(request))
    filters.is_valid(raise_exception=True)
    data = filters.validated_data
    events = event_selectors.events_matching(
        caller=caller_for_request(request),
        tenant=tenant,
        event_type=data.get("type", ""),
        severity=data.get("severity", ""),
        since=data.get("since"),
        until=data.get("until"),
    )
    page = view.paginate_queryset(events)
    return view.get_paginated_response(EventSerializer(page, many=True).data)
