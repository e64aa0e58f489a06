"""Webhook endpoints; thin: parse, call a service or selector, render."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from config.openapi import error_responses
from tenants.access import caller_for_request
from webhooks import selectors, services
from webhooks.api.serializers import (
    WebhookCreateSerializer,
    WebhookDeliverySerializer,
    WebhookSerializer,
    WebhookUpdateSerializer,
    WebhookWithSecretSerializer,
)

TAG = "Webhooks"


class WebhookListView(GenericAPIView):
    @extend_schema(
        operation_id="listWebhooks",
        tags=[TAG],
        summary="List webhooks",
        description="The webhooks the caller may see: its tenant's for a tenant token, every "
        "one (platform webhooks too) for a platform token. Never their secrets.",
        responses=WebhookSerializer(many=True),
    )
    def get(self, request):
        """The caller's webhooks; one page of them."""
        webhooks = selectors.visible_webhooks(caller=caller_for_request(request))
        page = self.paginate_queryset(webhooks)
        return self.get_paginated_response(WebhookSerializer(page, many=True).data)

    @extend_schema(
        operation_id="createWebhook",
        tags=[TAG],
        summary="Register a webhook",
        description="An endpoint the platform posts the subscribed events to, signed with a "
        "secret that the answer shows once (store it now). A tenant's webhook receives only "
        "that tenant's events; a platform webhook (platform token, no tenant) receives every "
        "tenant's. See docs/webhooks.md for payloads, signatures and retries.",
        request=WebhookCreateSerializer,
        responses={201: WebhookWithSecretSerializer},
    )
    def post(self, request):
        caller = caller_for_request(request)
        serializer = WebhookCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        tenant = selectors.owner_for_caller(caller=caller, slug=fields.pop("tenant", None))
        webhook, secret = services.create_webhook(tenant=tenant, actor=caller.label, **fields)
        data = WebhookSerializer(webhook).data | {"secret": secret}
        return Response(data, status=status.HTTP_201_CREATED)


class WebhookDetailView(APIView):
    @extend_schema(
        operation_id="getWebhook",
        tags=[TAG],
        summary="Get a webhook",
        description="One webhook: its URL, event types and whether it is enabled; never its "
        "secret.",
        responses=WebhookSerializer,
    )
    def get(self, request, webhook_id: int):
        caller = caller_for_request(request)
        webhook = selectors.webhook_for_caller(caller=caller, webhook_id=webhook_id)
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(
        operation_id="updateWebhook",
        tags=[TAG],
        summary="Update a webhook",
        description="Change its URL, event types or description, or enable or disable it. A "
        "disabled webhook gets no new events and its pending deliveries wait; enabled again, "
        "those still inside their retry window are sent.",
        request=WebhookUpdateSerializer,
        responses=WebhookSerializer,
    )
    def patch(self, request, webhook_id: int):
        caller = caller_for_request(request)
        webhook = selectors.webhook_for_caller(caller=caller, webhook_id=webhook_id)
        serializer = WebhookUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        webhook = services.update_webhook(
            webhook=webhook, actor=caller.label, **serializer.validated_data
        )
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(
        operation_id="deleteWebhook",
        tags=[TAG],
        summary="Delete a webhook",
        description="Nothing more is sent to it; its deliveries are deleted with it.",
        responses={204: None},
    )
    def delete(self, request, webhook_id: int):
        caller = caller_for_request(request)
        webhook = selectors.webhook_for_caller(caller=caller, webhook_id=webhook_id)
        services.delete_webhook(webhook=webhook, actor=caller.label)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretView(APIView):
    @extend_schema(
        operation_id="rotateWebhookSecret",
        tags=[TAG],
        summary="Rotate a webhook's secret",
        description="A new signing secret, shown once in this answer; every attempt from now "
        "on (retries of earlier events too) is signed with it.",
        request=None,
        responses={200: WebhookWithSecretSerializer},
    )
    def post(self, request, webhook_id: int):
        caller = caller_for_request(request)
        webhook = selectors.webhook_for_caller(caller=caller, webhook_id=webhook_id)
        webhook, secret = services.rotate_secret(webhook=webhook, actor=caller.label)
        return Response(WebhookSerializer(webhook).data | {"secret": secret})


class WebhookTestView(APIView):
    @extend_schema(
        operation_id="sendWebhookTestEvent",
        tags=[TAG],
        summary="Send a test event",
        description='Queues a "webhook.test" event to this webhook, signed and retried like '
        "any other; follow it in the webhook's deliveries.",
        request=None,
        responses={
            202: WebhookDeliverySerializer,
            **error_responses({409: "The webhook is disabled."}),
        },
    )
    def post(self, request, webhook_id: int):
        caller = caller_for_request(request)
        webhook = selectors.webhook_for_caller(caller=caller, webhook_id=webhook_id)
        delivery = services.send_test_event(webhook=webhook, actor=caller.label)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class WebhookDeliveryListView(GenericAPIView):
    @extend_schema(
        operation_id="listWebhookDeliveries",
        tags=[TAG],
        summary="List a webhook's deliveries",
        description="Its deliveries, newest first: the event, the body posted, the status "
        "(pending, delivering, succeeded, failed) and every attempt with its status code, "
        "error and duration.",
        responses=WebhookDeliverySerializer(many=True),
    )
    def get(self, request, webhook_id: int):
        """A webhook's deliveries with their attempts, newest first; one page of them."""
        caller = caller_for_request(request)
        webhook = selectors.webhook_for_caller(caller=caller, webhook_id=webhook_id)
        page = self.paginate_queryset(selectors.deliveries_for_webhook(webhook=webhook))
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


class WebhookRedeliverView(APIView):
    @extend_schema(
        operation_id="redeliverWebhookDelivery",
        tags=[TAG],
        summary="Redeliver an event",
        description="Sends a finished delivery (succeeded or failed) again: the same event id "
        "and body, with a fresh run of retries.",
        request=None,
        responses={
            202: WebhookDeliverySerializer,
            **error_responses({409: "The delivery is still being attempted."}),
        },
    )
    def post(self, request, webhook_id: int, delivery_id: int):
        caller = caller_for_request(request)
        webhook = selectors.webhook_for_caller(caller=caller, webhook_id=webhook_id)
        delivery = selectors.delivery_for_webhook(webhook=webhook, delivery_id=delivery_id)
        delivery = services.redeliver(delivery=delivery, actor=caller.label)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
