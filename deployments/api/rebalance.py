"""Rebalancing the local fleet over the API: what a fresh packing would save (a what-if), and
running it. Platform tokens only. Thin: parse, call the selector or the task, render."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import NotFound
from config.openapi import error_responses
from deployments.models import Endpoint
from deployments.selectors.rebalance import rebalance_report
from deployments.services import rebalance
from tenants.access import caller_for_request
from tenants.api.permissions import IsPlatformCaller


class MoveSerializer(serializers.Serializer):
    model = serializers.CharField(help_text="tenant/model")
    version = serializers.IntegerField()
    to = serializers.CharField(help_text="The instance that takes the copy.")

    def get_fields(self):
        fields = super().get_fields()
        # "from" is a Python keyword: declared here, not as an attribute.
        fields["from"] = serializers.CharField(help_text="The instance that holds it now.")
        return fields


class EndpointRebalanceSerializer(serializers.Serializer):
    endpoint = serializers.CharField()
    instances_now = serializers.IntegerField()
    instances_after = serializers.IntegerField()
    usd_per_month_saved = serializers.FloatField()
    retire = serializers.ListField(
        child=serializers.CharField(), help_text="Instances stopped once their copies moved."
    )
    moves = MoveSerializer(many=True)


class SkippedEndpointSerializer(serializers.Serializer):
    endpoint = serializers.CharField()
    reason = serializers.CharField()


class RebalanceSerializer(serializers.Serializer):
    instances_now = serializers.IntegerField()
    instances_after = serializers.IntegerField()
    instances_saved = serializers.IntegerField()
    usd_per_month_saved = serializers.FloatField()
    models_moved = serializers.IntegerField()
    copies_moved = serializers.IntegerField()
    min_saving_usd_month = serializers.FloatField(
        allow_null=True,
        help_text="REBALANCE_MIN_SAVING_USD_MONTH: the saving at which the hourly job applies "
        "a rebalance by itself (null: only when asked).",
    )
    worth_doing = serializers.BooleanField(help_text="The saving reaches that threshold.")
    endpoints = EndpointRebalanceSerializer(many=True)
    skipped = SkippedEndpointSerializer(many=True, help_text="Endpoints left as they are.")


class RebalanceRequestSerializer(serializers.Serializer):
    endpoint = serializers.CharField(
        required=False, max_length=63, help_text="Only this endpoint (default: every one)."
    )


def _endpoint_id(name: str | None) -> int | None:
    if name is None:
        return None
    endpoint = (
        Endpoint.objects.filter(name=name)
        .exclude(status__in=[Endpoint.Status.RETIRING, Endpoint.Status.RETIRED])
        .first()
    )
    if endpoint is None:
        raise NotFound(f"No live endpoint is named {name[:63]!r}.", field="endpoint")
    return endpoint.pk


DESCRIPTION = (
    "Packs the copies on each local multi-model endpoint's instances afresh and says what it "
    "would save: the instances it would stop, the USD a month their price comes to, and each "
    "copy it would move. SageMaker and shared-base endpoints are listed under `skipped` with "
    "the reason."
)


class RebalanceView(APIView):
    permission_classes = [IsPlatformCaller]

    @extend_schema(
        operation_id="getRebalance",
        tags=["Fleet"],
        summary="What a rebalance would save",
        description=DESCRIPTION + " Nothing moves.",
        parameters=[
            OpenApiParameter(
                "endpoint", OpenApiTypes.STR, description="Only this endpoint (by name)."
            )
        ],
        responses={200: RebalanceSerializer, **error_responses({404: "No such endpoint."})},
    )
    def get(self, request):
        endpoint = request.query_params.get("endpoint")
        report = rebalance_report(endpoint_id=_endpoint_id(endpoint))
        return Response(report.as_dict())

    @extend_schema(
        operation_id="rebalanceFleet",
        tags=["Fleet"],
        summary="Rebalance the local fleet",
        description=DESCRIPTION + " Runs it in the background: each copy is loaded on its new "
        "instance and warmed before its routes switch and the old copy is unloaded, then the "
        "instances left empty are stopped. The answer is the plan as it stood; the "
        "`rebalance.completed` event says what was done.",
        request=RebalanceRequestSerializer,
        responses={
            202: RebalanceSerializer,
            **error_responses({400: "A malformed body.", 404: "No such endpoint."}),
        },
    )
    def post(self, request):
        body = RebalanceRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint_id = _endpoint_id(body.validated_data.get("endpoint"))
        report = rebalance.request_rebalance(
            actor=caller_for_request(request).label, endpoint_id=endpoint_id
        )
        return Response(report.as_dict(), status=status.HTTP_202_ACCEPTED)
