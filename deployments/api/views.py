"""Deployment and inference endpoints. Thin: parse, call a service or selector, render."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from config.pagination import LimitOffsetPagination
from deployments.api.serializers import (
    DeploymentRequestSerializer,
    DeploymentSerializer,
    EndpointCostSerializer,
    FleetCostsSerializer,
    FleetUtilizationSerializer,
    InvokeRequestSerializer,
    InvokeResponseSerializer,
    TenantCostSerializer,
)
from deployments.proxy import invoke as inference
from deployments.selectors import costs as cost_selectors
from deployments.selectors import fleet as selectors
from deployments.services import draining, retirement, rollouts
from models_registry import selectors as registry_selectors
from tenants.access import caller_for_request
from tenants.api.permissions import IsPlatformCaller
from tenants.selectors import tenant_for_caller


def _model(request, slug: str, name: str):
    tenant = tenant_for_caller(caller=caller_for_request(request), slug=slug)
    return registry_selectors.model_for_tenant(tenant=tenant, name=name)


class DeploymentView(APIView):
    @extend_schema(responses=DeploymentSerializer)
    def get(self, request, slug: str, name: str):
        deployment = selectors.deployment_for_model(model=_model(request, slug, name))
        return Response(DeploymentSerializer(deployment).data)

    @extend_schema(request=DeploymentRequestSerializer, responses={202: DeploymentSerializer})
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

    @extend_schema(request=None, responses={202: DeploymentSerializer})
    def delete(self, request, slug: str, name: str):
        """Retire the deployment: the model stops answering and every copy is unloaded (on
        SageMaker, its components, endpoints and S3 copies deleted)."""
        model = _model(request, slug, name)
        retirement.retire_deployment(model=model, actor=caller_for_request(request).label)
        deployment = selectors.deployment_for_model(model=model)
        return Response(DeploymentSerializer(deployment).data, status=status.HTTP_202_ACCEPTED)


class DeploymentRollbackView(APIView):
    @extend_schema(request=None, responses={202: DeploymentSerializer})
    def post(self, request, slug: str, name: str):
        model = _model(request, slug, name)
        rollouts.rollback_deployment(model=model, actor=caller_for_request(request).label)
        deployment = selectors.deployment_for_model(model=model)
        return Response(DeploymentSerializer(deployment).data, status=status.HTTP_202_ACCEPTED)


class InvokeView(APIView):
    @extend_schema(request=InvokeRequestSerializer, responses=InvokeResponseSerializer)
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

    @extend_schema(request=None, responses={200: None})
    def post(self, request, instance_id: int):
        instance = selectors.instance_by_id(instance_id=instance_id)
        instance = draining.drain_instance(
            instance=instance, actor=caller_for_request(request).label
        )
        return Response({"instance": str(instance), "status": instance.status})


class FleetUtilizationView(APIView):
    """Memory utilization, models loaded vs placed and last hour's traffic (the overview's)."""

    @extend_schema(responses=FleetUtilizationSerializer)
    def get(self, request):
        return Response(selectors.fleet_utilization(caller=caller_for_request(request)))


class FleetCostsView(APIView):
    """Cost per hour and month, the dedicated baseline and savings (a tenant: its share)."""

    @extend_schema(responses=FleetCostsSerializer)
    def get(self, request):
        return Response(cost_selectors.fleet_costs(caller=caller_for_request(request)))


class FleetTenantCostsView(GenericAPIView):
    """Every tenant's share of the cost (a tenant token: its own), most expensive first, ties by
    slug; paginated like every list."""

    pagination_class = LimitOffsetPagination
    serializer_class = TenantCostSerializer

    @extend_schema(responses=TenantCostSerializer(many=True))
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

    @extend_schema(responses=EndpointCostSerializer(many=True))
    def get(self, request):
        paginator = self.paginator
        limit, offset = paginator.get_limit(request), paginator.get_offset(request)
        rows, count = cost_selectors.endpoint_costs(limit=limit, offset=offset)
        return paginator.counted_page_response(
            request, rows=rows, count=count, limit=limit, offset=offset
        )
