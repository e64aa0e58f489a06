"""Canary and shadow rollouts over the API: start one, read its comparison, promote or abort it
by hand. Thin: parse, call the service or selector, render."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from config.fields import JsonIntegerField, JsonNumberField
from config.openapi import error_responses
from deployments.models import Deployment
from deployments.selectors.candidates import candidate_rollout
from deployments.services import candidates
from models_registry import selectors as registry_selectors
from tenants.access import caller_for_request
from tenants.selectors import tenant_for_caller


class GateOverridesSerializer(serializers.Serializer):
    min_requests = JsonIntegerField(required=False, min_value=1)
    min_minutes = JsonNumberField(required=False, min_value=0)
    max_error_rate = JsonNumberField(required=False, min_value=0, max_value=1)
    max_p99_ratio = JsonNumberField(required=False, min_value=0)
    max_p99_ms = JsonNumberField(required=False, min_value=0)
    min_agreement = JsonNumberField(required=False, min_value=0, max_value=1)


class CandidateRequestSerializer(serializers.Serializer):
    version = JsonIntegerField(min_value=1, help_text="The version to roll out.")
    strategy = serializers.ChoiceField(
        choices=Deployment.Strategy.values,
        help_text="canary: a share of live requests goes to the new version; shadow: a copy of "
        "each live request goes to it and its answer is discarded.",
    )
    share = JsonNumberField(
        required=False,
        min_value=0.001,
        max_value=0.999,
        help_text="A canary's share of requests (0.1 = 10 %); default 0.1.",
    )
    gate = GateOverridesSerializer(
        required=False, help_text="This rollout's live gate thresholds (default: the settings)."
    )


def _model(request, slug: str, name: str):
    tenant = tenant_for_caller(caller=caller_for_request(request), slug=slug)
    return registry_selectors.model_for_tenant(tenant=tenant, name=name)


def _rollout_or_404(model) -> dict:
    deployment = (
        Deployment.objects.select_related("live_version", "candidate_version", "target_version")
        .filter(model=model)
        .first()
    )
    shown = candidate_rollout(deployment)
    if shown is None:
        raise NotFound(f"{model} has no canary or shadow rollout under way.")
    return shown


ROLLOUT_DESCRIPTION = (
    "While it loads: `state` loading. Then `state` comparing with each version's `requests`, "
    "`errors`, `error_rate`, `p50_ms`, `p99_ms`, `mean_ms` since it started and, for the new "
    "version, `mirrored`/`mirror_dropped` copies and `agreement` (same label, or cosine "
    "similarity of embeddings) over `compared` outputs."
)


class CandidateRolloutView(APIView):
    @extend_schema(
        operation_id="getCandidateRollout",
        tags=["Deployments"],
        summary="Read a canary or shadow rollout",
        description=ROLLOUT_DESCRIPTION,
        responses={200: dict, **error_responses({404: "No such model, or no rollout under way."})},
    )
    def get(self, request, slug: str, name: str):
        return Response(_rollout_or_404(_model(request, slug, name)))

    @extend_schema(
        operation_id="startCandidateRollout",
        tags=["Deployments"],
        summary="Start a canary or shadow rollout",
        description="Load the version beside the live one; once it answers, it gets `share` "
        "of requests (canary) or a copy of each (shadow), and the live gate promotes or aborts "
        "it from what it measured. " + ROLLOUT_DESCRIPTION,
        request=CandidateRequestSerializer,
        responses={
            202: dict,
            **error_responses(
                {
                    404: "No such model, or no such version of it.",
                    409: "Nothing is live yet, the version is live already or not ready, or "
                    "another rollout is under way.",
                }
            ),
        },
    )
    def post(self, request, slug: str, name: str):
        model = _model(request, slug, name)
        serializer = CandidateRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        candidates.start_candidate(
            model=model,
            version=registry_selectors.version_for_model(model=model, number=data["version"]),
            strategy=data["strategy"],
            share=data.get("share"),
            gate=data.get("gate"),
            actor=caller_for_request(request).label,
        )
        return Response(_rollout_or_404(model), status=status.HTTP_202_ACCEPTED)


def _decided(deployment: Deployment) -> dict:
    previous = deployment.previous_version
    return {
        "live_version": deployment.live_version.number,
        "previous_version": previous.number if previous else None,
    }


class PromoteCandidateView(APIView):
    @extend_schema(
        operation_id="promoteCandidateRollout",
        tags=["Deployments"],
        summary="Promote a canary or shadow rollout by hand",
        description="The new version becomes the live one (the old one is kept for rollback), "
        "recorded as a canary.promoted event with the figures.",
        request=None,
        responses={
            200: dict,
            **error_responses(
                {404: "No such model.", 409: "No rollout under way, or it is still loading."}
            ),
        },
    )
    def post(self, request, slug: str, name: str):
        model = _model(request, slug, name)
        actor = caller_for_request(request).label
        return Response(_decided(candidates.promote_candidate(model=model, actor=actor)))


class AbortCandidateView(APIView):
    @extend_schema(
        operation_id="abortCandidateRollout",
        tags=["Deployments"],
        summary="Abort a canary or shadow rollout by hand",
        description="The live version keeps every request and the new one is unloaded, "
        "recorded as a canary.aborted event with the figures.",
        request=None,
        responses={
            200: dict,
            **error_responses({404: "No such model.", 409: "No rollout under way."}),
        },
    )
    def post(self, request, slug: str, name: str):
        model = _model(request, slug, name)
        actor = caller_for_request(request).label
        deployment = candidates.abort_candidate(model=model, actor=actor, reason="by hand")
        return Response(_decided(deployment))


class RolloutStrategyRequestSerializer(serializers.Serializer):
    strategy = serializers.ChoiceField(
        choices=Deployment.RolloutStrategy.values,
        help_text="immediate: a promoted version takes all traffic once it answers; canary or "
        "shadow: it is tried on live traffic first and the live gate promotes or aborts it.",
    )
    share = JsonNumberField(
        required=False,
        min_value=0.001,
        max_value=0.999,
        help_text="A canary's share of requests (0.1 = 10 %); default: the current one.",
    )


class RolloutStrategyView(APIView):
    @extend_schema(
        operation_id="setRolloutStrategy",
        tags=["Deployments"],
        summary="Choose how promoted versions reach traffic",
        description="From now on, a version the registry promotes (by the quality gate or by "
        "hand) rolls out this way. A canary or shadow that the live gate aborts also rolls the "
        "registry's active version back to the live one.",
        request=RolloutStrategyRequestSerializer,
        responses={
            200: dict,
            **error_responses(
                {
                    400: "Not a strategy, a share out of range, or a kind that streams.",
                    404: "No such model, or the model was never deployed.",
                }
            ),
        },
    )
    def put(self, request, slug: str, name: str):
        model = _model(request, slug, name)
        serializer = RolloutStrategyRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        deployment = Deployment.objects.filter(model=model).first()
        if deployment is None:
            raise NotFound(f"{model} was never deployed.")
        deployment = candidates.set_rollout_strategy(
            deployment=deployment,
            strategy=serializer.validated_data["strategy"],
            share=serializer.validated_data.get("share"),
            actor=caller_for_request(request).label,
        )
        return Response(
            {"strategy": deployment.rollout_strategy, "share": deployment.candidate_share}
        )
