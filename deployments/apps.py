from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from deployments import receivers  # noqa: F401  (stores events, syncs the schedule)
        from deployments.proxy import invalidation  # noqa: F401  (routing changes reach caches)
