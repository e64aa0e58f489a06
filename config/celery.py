"""The Celery application: configuration comes from Django settings (``CELERY_*``)."""

import os

from celery import Celery, signals

from config import request_id

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tenantml")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# A task queued while a request is handled logs with that request's id.
request_id.connect_to_celery()


@signals.setup_logging.connect
def log_as_the_web_process_does(**kwargs) -> None:
    """The worker and beat log through ``settings.LOGGING`` (JSON lines in production) instead
    of Celery's own format; ``LOG_LEVEL`` sets their level."""
    from django.conf import settings

    from config.logs import configure_logging

    configure_logging(settings.LOGGING)
