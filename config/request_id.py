"""A request id for every HTTP request, carried into its log records and the tasks it queues.

The id comes from the caller's ``X-Request-ID`` header when that is a sane one (at most
``MAX_LENGTH`` letters, digits and ``._:-``; anything else could forge or break log lines) and is
generated otherwise; the answer carries it back in ``X-Request-ID``. It lives in a context
variable, so every log record made while the request is handled sees it: in the inference
proxy's own asyncio handlers, in Django's views (asgiref copies the context into the thread a
sync view runs in) and under WSGI.

- ``RequestIdMiddleware`` wraps the ASGI application (``config.asgi``): the proxy's routes and
  Django's alike.
- ``request_id_middleware`` is the Django middleware for what does not pass through ASGI (WSGI,
  Django's test client); under ASGI it reuses the id already chosen.
- ``connect_to_celery`` passes the id to the tasks a request queues, in a message header, and
  sets it in the worker while that task runs.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Awaitable, Callable

from django.core.signals import request_finished

HEADER = "X-Request-ID"
MAX_LENGTH = 128
# What a task message's headers call the id of the request that queued it.
TASK_HEADER = "tenantml_request_id"
SANE = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_LENGTH}}}")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tenantml_request_id", default=None
)
# The id the Django middleware set itself (not under ASGI), to forget once the answer is sent.
_SET_BY_DJANGO: contextvars.ContextVar[contextvars.Token | None] = contextvars.ContextVar(
    "tenantml_request_id_django_token", default=None
)


def current_request_id() -> str | None:
    """The id of the request (or of the request that queued the task) being handled, if any."""
    return REQUEST_ID.get()


def request_id_from(value: str | None) -> str:
    """The caller's id when it is sane, else a new one."""
    if value and SANE.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """ASGI middleware: chooses the request's id, sets it for the request, returns it."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", []):
            if name.lower() == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = request_id_from(incoming)
        encoded = request_id.encode("ascii")

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"x-request-id"
                ]
                message = {**message, "headers": [*headers, (b"x-request-id", encoded)]}
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


def request_id_middleware(get_response):
    """Django middleware: the request's id as ``request.request_id`` and in the answer's header;
    chosen here when no ASGI layer chose it (WSGI, the test client)."""

    def middleware(request):
        forget_django_request_id()  # one an earlier answer here was never closed with
        request_id = REQUEST_ID.get()
        if request_id is None:
            request_id = request_id_from(request.headers.get(HEADER))
            # Kept until the answer is closed (``forget_django_request_id``), so Django's own
            # log line for a 4xx or 5xx answer, written after the middleware, carries it too.
            _SET_BY_DJANGO.set(REQUEST_ID.set(request_id))
        request.request_id = request_id
        response = get_response(request)
        response[HEADER] = request_id
        return response

    return middleware


def forget_django_request_id(**kwargs) -> None:
    """``request_finished`` receiver: the id the Django middleware set is reset."""
    token = _SET_BY_DJANGO.get()
    if token is not None:
        _SET_BY_DJANGO.set(None)
        REQUEST_ID.reset(token)


request_finished.connect(forget_django_request_id, dispatch_uid="tenantml.forget_django_request_id")


# Tasks running in this worker process, by task id: the token to reset their request id with.
_TASK_TOKENS: dict[str, contextvars.Token] = {}


def stamp_task_message(headers: dict | None = None, **kwargs) -> None:
    """``before_task_publish`` receiver: a task queued while a request is handled carries its id."""
    request_id = REQUEST_ID.get()
    if request_id and headers is not None:
        headers.setdefault(TASK_HEADER, request_id)


def enter_task(task_id: str | None = None, task=None, **kwargs) -> None:
    """``task_prerun`` receiver: the task's records carry the id of the request that queued it."""
    request_id = task.request.get(TASK_HEADER) if task is not None else None
    if task_id and isinstance(request_id, str) and SANE.fullmatch(request_id):
        _TASK_TOKENS[task_id] = REQUEST_ID.set(request_id)


def leave_task(task_id: str | None = None, **kwargs) -> None:
    """``task_postrun`` receiver: the worker forgets the finished task's request id."""
    token = _TASK_TOKENS.pop(task_id, None) if task_id else None
    if token is not None:
        REQUEST_ID.reset(token)


def connect_to_celery() -> None:
    """Carry request ids from the web process to the tasks it queues."""
    from celery import signals

    signals.before_task_publish.connect(stamp_task_message, weak=False)
    signals.task_prerun.connect(enter_task, weak=False)
    signals.task_postrun.connect(leave_task, weak=False)
