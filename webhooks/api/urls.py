from django.urls import path

from webhooks.api import views

WEBHOOK = "webhooks/<int:webhook_id>"

urlpatterns = [
    path("webhooks/", views.WebhookListView.as_view(), name="webhook-list"),
    path(f"{WEBHOOK}/", views.WebhookDetailView.as_view(), name="webhook-detail"),
    path(
        f"{WEBHOOK}/rotate-secret",
        views.WebhookRotateSecretView.as_view(),
        name="webhook-rotate-secret",
    ),
    path(f"{WEBHOOK}/test", views.WebhookTestView.as_view(), name="webhook-test"),
    path(
        f"{WEBHOOK}/deliveries/",
        views.WebhookDeliveryListView.as_view(),
        name="webhook-delivery-list",
    ),
    path(
        f"{WEBHOOK}/deliveries/<int:delivery_id>/redeliver",
        views.WebhookRedeliverView.as_view(),
        name="webhook-redeliver",
    ),
]
