"""ASGI entry point: the web server the platform runs (uvicorn config.asgi:application).

The inference proxy's routes (native invoke, Open Inference Protocol v2, SageMaker runtime,
``/metrics``) are answered on the async path before Django; everything else is Django. Every
request, either way, gets its id (``config.request_id``) for its log lines and its answer.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from config.request_id import RequestIdMiddleware  # noqa: E402
from deployments.proxy.app import ProxyApplication  # noqa: E402  (needs Django set up first)

application = RequestIdMiddleware(ProxyApplication(django_application))
