from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from deployments import signals  # noqa: F401  (registers the post-migrate schedule sync)
        from deployments.proxy import invalidation  # noqa: F401  (routing changes reach caches)
