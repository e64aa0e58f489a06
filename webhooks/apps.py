from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        # Connects the event receiver that records deliveries.
        from webhooks import receivers  # noqa: F401
