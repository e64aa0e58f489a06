"""Webhooks' writes: registering endpoints, turning recorded events into deliveries, posting
them signed with retries, and the sweep that re-queues what a lost worker left.

A delivery is only marked succeeded after the receiver's 2xx; until then it is pending (due at
``next_attempt_at``) or delivering (an attempt under way, held until ``claimed_until``). So a
worker killed mid-attempt leaves a delivery the sweep finds and queues again: receivers may get
an event twice and deduplicate by its id, but never miss one.
"""

from __future__ import annotations

import http.client
import json
import random
import time
import uuid
from datetime import timedelta
from ipaddress import ip_address
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from config.errors import Conflict, DomainError
from config.events import record_event
from config.queue import registered_task
from tenants.models import Tenant
from webhooks import catalog, signing
from webhooks.models import Webhook, WebhookAttempt, WebhookDelivery

DELIVER_TASK = "webhooks.tasks.deliver_webhook"
USER_AGENT = "TenantML-Webhooks/1"
# How long past the request timeout an attempt may run before the sweep takes its worker as lost.
CLAIM_MARGIN_S = 30
# A message that arrives this early for a delivery not yet due is still taken (clocks differ).
EARLY_TOLERANCE_S = 0.1
# Deliveries re-queued by one sweep at most; the next sweep takes the rest.
SWEEP_BATCH = 500
LOOPBACK_HOSTS = frozenset({"localhost"})
URL_MAX_CHARS = 2000
ERROR_MAX_CHARS = 1000
LOST_ATTEMPT = (
    "The worker sending this attempt stopped before it finished; whether the receiver got it "
    "is unknown, so the event is sent again with the same id."
)


# --- Endpoints ------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _is_internal_address(host: str) -> bool:
    """An IP literal of this machine or a private, link-local or reserved network (a
    tenant's webhook must not reach the platform's own network by address)."""
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        address = ip_address(host)
    except ValueError:
        return False
    return not address.is_global


def check_url(url: str) -> str:
    """``url`` if a webhook may post to it: HTTPS, or plain HTTP to this machine where
    WEBHOOK_ALLOW_HTTP_LOCALHOST allows it; otherwise a 400 naming ``url``."""
    if len(url) > URL_MAX_CHARS:
        raise DomainError(f"Must be at most {URL_MAX_CHARS} characters.", field="url")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018  (a port out of range raises here)
    except ValueError:
        raise DomainError("Must be an absolute https:// URL.", field="url") from None
    if not host or parts.scheme not in ("https", "http") or any(c.isspace() for c in url):
        raise DomainError("Must be an absolute https:// URL.", field="url")
    if parts.username is not None or parts.password is not None:
        raise DomainError(
            "Must not carry credentials; the signature proves the sender.", field="url"
        )
    local_allowed = settings.TENANTML_WEBHOOK_ALLOW_HTTP_LOCALHOST and _is_loopback(host)
    if _is_internal_address(host) and not local_allowed:
        raise DomainError("Must name a public host, not a private network address.", field="url")
    plain_http_allowed = local_allowed
    if parts.scheme == "http" and not plain_http_allowed:
        raise DomainError(
            "Must use https:// (plain http is allowed only to localhost, and only where "
            "WEBHOOK_ALLOW_HTTP_LOCALHOST is set).",
            field="url",
        )
    return url


def _subscriptions(event_types: list[str]) -> list[str]:
    unknown = [name for name in event_types if name not in catalog.SUBSCRIPTIONS]
    if unknown or not event_types:
        raise DomainError(
            "Must list event types or prefixes the platform sends, e.g. "
            '"training.succeeded" or "training.".',
            field="event_types",
        )
    return list(dict.fromkeys(event_types))


def create_webhook(
    *,
    tenant: Tenant | None,
    url: str,
    event_types: list[str],
    description: str = "",
    enabled: bool = True,
    actor: str,
) -> tuple[Webhook, str]:
    """Register an endpoint (a tenant's, or the platform's when ``tenant`` is None); returns it
    and its signing secret, which is never shown again."""
    secret = signing.new_secret()
    with transaction.atomic():
        webhook = Webhook.objects.create(
            tenant=tenant,
            url=check_url(url),
            event_types=_subscriptions(event_types),
            description=description,
            enabled=enabled,
            secret_encrypted=signing.encrypt_secret(secret),
            secret_rotated_at=timezone.now(),
            created_by=actor[:64],
        )
        record_event(
            kind="webhook.created",
            actor=actor,
            tenant=tenant,
            message=f"Webhook {webhook.pk} registered for {', '.join(webhook.event_types)}.",
            data={"webhook": webhook.pk},
        )
    return webhook, secret


def update_webhook(
    *,
    webhook: Webhook,
    actor: str,
    url: str | None = None,
    event_types: list[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> Webhook:
    """Change an endpoint's URL, subscriptions, description or whether it is enabled. Disabling
    pauses its deliveries; enabling again resumes those still inside their retry window."""
    changed = []
    if url is not None:
        webhook.url = check_url(url)
        changed.append("url")
    if event_types is not None:
        webhook.event_types = _subscriptions(event_types)
        changed.append("event_types")
    if description is not None:
        webhook.description = description
        changed.append("description")
    if enabled is not None:
        webhook.enabled = enabled
        changed.append("enabled")
    if not changed:
        return webhook
    with transaction.atomic():
        resumed = enabled and not Webhook.objects.filter(pk=webhook.pk, enabled=True).exists()
        webhook.save(update_fields=[*changed, "updated_at"])
        if resumed:
            # Its waiting deliveries go now rather than at the sweep's next pass.
            for pk in webhook.deliveries.filter(status=WebhookDelivery.Status.PENDING).values_list(
                "pk", flat=True
            ):
                _queue(pk)
        record_event(
            kind="webhook.updated",
            actor=actor,
            tenant=webhook.tenant,
            message=f"Webhook {webhook.pk} changed: {', '.join(changed)}.",
            data={"webhook": webhook.pk, "fields": changed},
        )
    return webhook


def rotate_secret(*, webhook: Webhook, actor: str) -> tuple[Webhook, str]:
    """Replace an endpoint's signing secret; every later attempt is signed with the new one."""
    secret = signing.new_secret()
    with transaction.atomic():
        webhook.secret_encrypted = signing.encrypt_secret(secret)
        webhook.secret_rotated_at = timezone.now()
        webhook.save(update_fields=["secret_encrypted", "secret_rotated_at", "updated_at"])
        record_event(
            kind="webhook.secret_rotated",
            actor=actor,
            tenant=webhook.tenant,
            message=f"Webhook {webhook.pk}: signing secret rotated.",
            data={"webhook": webhook.pk},
        )
    return webhook, secret


def delete_webhook(*, webhook: Webhook, actor: str) -> None:
    """Remove an endpoint with its deliveries; nothing more is sent to it."""
    with transaction.atomic():
        pk, tenant = webhook.pk, webhook.tenant
        webhook.delete()
        record_event(
            kind="webhook.deleted",
            actor=actor,
            tenant=tenant,
            message=f"Webhook {pk} deleted.",
            data={"webhook": pk},
        )


# --- Events into deliveries -----------------------------------------------------------------


def event_body(*, event_id: str, event_type: str, created_at, tenant: Tenant | None, data) -> str:
    """The JSON body every attempt of a delivery posts."""
    payload = {
        "id": event_id,
        "type": event_type,
        "created_at": created_at.isoformat().replace("+00:00", "Z"),
        "tenant": tenant.slug if tenant is not None else None,
        "data": data,
    }
    return json.dumps(payload, separators=(",", ":"), default=str)


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def _queue(delivery_id: int, *, countdown_s: float = 0) -> None:
    """Send the delivery task once the surrounding transaction commits."""
    task = registered_task(DELIVER_TASK)
    transaction.on_commit(
        lambda: task.apply_async(args=[delivery_id], countdown=countdown_s or None)
    )


def record_deliveries(
    *,
    kind: str,
    message: str,
    severity: str,
    tenant: Tenant | None,
    version=None,
    endpoint=None,
    data: dict,
) -> list[WebhookDelivery]:
    """One delivery per enabled webhook subscribed to this event, in the caller's transaction:
    the tenant's own webhooks and the platform's; the task is queued on commit."""
    event_type = catalog.public_type(kind)
    if event_type is None:
        return []
    owners = Q(tenant__isnull=True)
    if tenant is not None:
        owners |= Q(tenant=tenant)
    webhooks = [
        webhook
        for webhook in Webhook.objects.filter(owners, enabled=True)
        if catalog.subscribes(webhook.event_types, event_type)
    ]
    if not webhooks:
        return []
    now = timezone.now()
    event_id = new_event_id()
    body = event_body(
        event_id=event_id,
        event_type=event_type,
        created_at=now,
        tenant=tenant,
        data={
            "message": message,
            "severity": severity,
            "model": version.model.name if version is not None else None,
            "version": version.number if version is not None else None,
            "endpoint": endpoint.name if endpoint is not None else None,
            "details": data,
        },
    )
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            webhook=webhook,
            event_id=event_id,
            event_type=event_type,
            body=body,
            next_attempt_at=now,
            retry_window_started_at=now,
        )
        for webhook in webhooks
    )
    for delivery in deliveries:
        _queue(delivery.pk)
    return deliveries


def send_test_event(*, webhook: Webhook, actor: str) -> WebhookDelivery:
    """Queue a ``webhook.test`` event to one endpoint, signed and retried like any other."""
    if not webhook.enabled:
        raise Conflict("The webhook is disabled; enable it to send it events.")
    now = timezone.now()
    event_id = new_event_id()
    body = event_body(
        event_id=event_id,
        event_type=catalog.TEST_EVENT_TYPE,
        created_at=now,
        tenant=webhook.tenant,
        data={"message": f"A test event sent by {actor}.", "webhook": webhook.pk},
    )
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            webhook=webhook,
            event_id=event_id,
            event_type=catalog.TEST_EVENT_TYPE,
            body=body,
            next_attempt_at=now,
            retry_window_started_at=now,
        )
        _queue(delivery.pk)
    return delivery


def redeliver(*, delivery: WebhookDelivery, actor: str) -> WebhookDelivery:
    """Send a delivery again (same event id, same body) with a fresh run of retries."""
    with transaction.atomic():
        now = timezone.now()
        updated = WebhookDelivery.objects.filter(
            pk=delivery.pk,
            status__in=[WebhookDelivery.Status.SUCCEEDED, WebhookDelivery.Status.FAILED],
        ).update(
            status=WebhookDelivery.Status.PENDING,
            next_attempt_at=now,
            retry_window_started_at=now,
            claimed_until=None,
        )
        if not updated:
            raise Conflict("The delivery is still being attempted; redeliver it once it ends.")
        record_event(
            kind="webhook.redelivery_requested",
            actor=actor,
            tenant=delivery.webhook.tenant,
            message=f"Delivery {delivery.pk} ({delivery.event_id}) queued again.",
            data={"webhook": delivery.webhook_id, "delivery": delivery.pk},
        )
        _queue(delivery.pk)
    delivery.refresh_from_db()
    return delivery


# --- Sending ----------------------------------------------------------------------------------


def retry_delay_s(attempts_in_window: int) -> float:
    """Exponential backoff with jitter: base × 2^(n−1), capped, then a random 50–100 % of it."""
    base = settings.TENANTML_WEBHOOK_RETRY_BASE_S * 2 ** max(0, attempts_in_window - 1)
    return min(base, settings.TENANTML_WEBHOOK_RETRY_MAX_DELAY_S) * random.uniform(0.5, 1.0)


def claim_s() -> float:
    return settings.TENANTML_WEBHOOK_TIMEOUT_S + CLAIM_MARGIN_S


def _attempts_in_window(delivery: WebhookDelivery) -> int:
    return delivery.attempts.filter(started_at__gte=delivery.retry_window_started_at).count()


def _record_lost_attempt(delivery: WebhookDelivery) -> None:
    """The attempt a lost worker held, recorded as unanswered."""
    started = (
        delivery.claimed_until - timedelta(seconds=claim_s())
        if delivery.claimed_until
        else timezone.now()
    )
    WebhookAttempt.objects.get_or_create(
        delivery=delivery,
        number=delivery.attempt_count,
        defaults={"started_at": started, "error": LOST_ATTEMPT},
    )


def _window_closed(delivery: WebhookDelivery, now) -> bool:
    window = timedelta(seconds=settings.TENANTML_WEBHOOK_RETRY_WINDOW_S)
    return now >= delivery.retry_window_started_at + window


def _claim(delivery_id: int) -> WebhookDelivery | None:
    """Take a due delivery for one attempt (compare-and-set, so two workers never both do);
    None when there is nothing to send now."""
    now = timezone.now()
    delivery = WebhookDelivery.objects.select_related("webhook").filter(pk=delivery_id).first()
    if delivery is None or not delivery.webhook.enabled:
        return None  # deleted, or paused until its webhook is enabled again
    status = delivery.status
    if status == WebhookDelivery.Status.DELIVERING:
        if delivery.claimed_until and delivery.claimed_until > now:
            return None  # another worker's attempt is under way
    elif status != WebhookDelivery.Status.PENDING:
        return None  # done
    elif delivery.next_attempt_at and delivery.next_attempt_at > now + timedelta(
        seconds=EARLY_TOLERANCE_S
    ):
        return None  # a duplicate message; the one sent for its due time comes later
    with transaction.atomic():
        current = WebhookDelivery.objects.filter(
            pk=delivery.pk, status=status, attempt_count=delivery.attempt_count
        )
        if status == WebhookDelivery.Status.DELIVERING:
            # Its worker was lost mid-attempt: whoever takes the delivery over records that.
            if not current.update(status=WebhookDelivery.Status.PENDING, claimed_until=None):
                return None
            _record_lost_attempt(delivery)
            current = WebhookDelivery.objects.filter(
                pk=delivery.pk,
                status=WebhookDelivery.Status.PENDING,
                attempt_count=delivery.attempt_count,
            )
        if _window_closed(delivery, now) or (
            _attempts_in_window(delivery) >= settings.TENANTML_WEBHOOK_MAX_ATTEMPTS
        ):
            current.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
            return None
        if not current.update(
            status=WebhookDelivery.Status.DELIVERING,
            attempt_count=F("attempt_count") + 1,
            claimed_until=now + timedelta(seconds=claim_s()),
        ):
            return None
    delivery.refresh_from_db()
    return delivery


def post(*, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    """POST ``body`` to ``url`` (a redirect is an answer, not followed); the answer's status
    code (None if there was none) and an error message ('' for a 2xx)."""
    parts = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(
        parts.hostname, parts.port, timeout=settings.TENANTML_WEBHOOK_TIMEOUT_S
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read(64 * 1024)
    except (OSError, http.client.HTTPException) as error:
        return None, f"No answer: {error or type(error).__name__}"[:ERROR_MAX_CHARS]
    finally:
        connection.close()
    if 200 <= response.status < 300:
        return response.status, ""
    return response.status, f"The receiver answered {response.status}."


def deliver(*, delivery_id: int) -> str:
    """One attempt of a delivery if it is due: post it signed, record the attempt, and mark it
    succeeded on a 2xx or schedule the next attempt (or fail it, once retries are spent)."""
    delivery = _claim(delivery_id)
    if delivery is None:
        current = WebhookDelivery.objects.filter(pk=delivery_id).values_list("status", flat=True)
        return current.first() or "missing"
    started = timezone.now()
    clock = time.monotonic()
    body = delivery.body.encode()
    try:
        secret = signing.decrypt_secret(delivery.webhook.secret_encrypted)
    except signing.UnreadableSecret as error:
        status_code, error_message = None, str(error)
    else:
        timestamp = int(time.time())
        status_code, error_message = post(
            url=delivery.webhook.url,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "TenantML-Event-Id": delivery.event_id,
                "TenantML-Timestamp": str(timestamp),
                "TenantML-Signature": signing.signature(
                    secret=secret, timestamp=timestamp, body=body
                ),
            },
        )
    duration_ms = (time.monotonic() - clock) * 1000
    succeeded = status_code is not None and 200 <= status_code < 300
    return _finish_attempt(
        delivery=delivery,
        started=started,
        duration_ms=duration_ms,
        status_code=status_code,
        error=error_message,
        succeeded=succeeded,
    )


def _finish_attempt(
    *,
    delivery: WebhookDelivery,
    started,
    duration_ms: float,
    status_code: int | None,
    error: str,
    succeeded: bool,
) -> str:
    now = timezone.now()
    with transaction.atomic():
        mine = WebhookDelivery.objects.filter(
            pk=delivery.pk,
            status=WebhookDelivery.Status.DELIVERING,
            attempt_count=delivery.attempt_count,
        )
        if succeeded:
            outcome = {"status": WebhookDelivery.Status.SUCCEEDED, "delivered_at": now}
        else:
            attempts = _attempts_in_window(delivery) + 1
            delay_s = retry_delay_s(attempts)
            next_at = now + timedelta(seconds=delay_s)
            spent = attempts >= settings.TENANTML_WEBHOOK_MAX_ATTEMPTS or _window_closed(
                delivery, next_at
            )
            outcome = (
                {"status": WebhookDelivery.Status.FAILED, "next_attempt_at": None}
                if spent
                else {"status": WebhookDelivery.Status.PENDING, "next_attempt_at": next_at}
            )
        if not mine.update(claimed_until=None, **outcome):
            # The sweep took this attempt for lost and sent the event again meanwhile.
            return WebhookDelivery.objects.get(pk=delivery.pk).status
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempt_count,
            started_at=started,
            duration_ms=round(duration_ms, 3),
            status_code=status_code,
            error=error[:ERROR_MAX_CHARS],
            succeeded=succeeded,
        )
        if outcome["status"] == WebhookDelivery.Status.PENDING:
            _queue(delivery.pk, countdown_s=delay_s)
    return outcome["status"]


def delete_old_deliveries(*, now=None) -> int:
    """Delete finished deliveries older than WEBHOOK_RETENTION_DAYS, a batch at a time; how
    many went."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.TENANTML_WEBHOOK_RETENTION_DAYS)
    old = WebhookDelivery.objects.filter(
        status__in=[WebhookDelivery.Status.SUCCEEDED, WebhookDelivery.Status.FAILED],
        created_at__lt=cutoff,
    ).values_list("pk", flat=True)[:SWEEP_BATCH]
    deleted, _ = WebhookDelivery.objects.filter(pk__in=list(old)).delete()
    return deleted


def sweep_deliveries(*, now=None) -> list[int]:
    """Queue again the deliveries a lost worker left: an attempt held past its claim, or a
    delivery due for longer than WEBHOOK_SWEEP_GRACE_S that no worker took; their ids. Old
    finished deliveries are deleted on the way."""
    now = now or timezone.now()
    delete_old_deliveries(now=now)
    grace = timedelta(seconds=settings.TENANTML_WEBHOOK_SWEEP_GRACE_S)
    stale = list(
        WebhookDelivery.objects.filter(webhook__enabled=True)
        .filter(
            Q(status=WebhookDelivery.Status.DELIVERING, claimed_until__lt=now)
            | Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now - grace)
        )
        .order_by("next_attempt_at", "pk")
        .values_list("pk", "status", "attempt_count")[:SWEEP_BATCH]
    )
    requeued = []
    for pk, status, attempt_count in stale:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.filter(
                pk=pk, status=status, attempt_count=attempt_count
            )
            if status == WebhookDelivery.Status.DELIVERING:
                lost = delivery.first()
                if lost is None or not delivery.update(
                    status=WebhookDelivery.Status.PENDING,
                    claimed_until=None,
                    next_attempt_at=timezone.now(),
                ):
                    continue
                _record_lost_attempt(lost)
            elif not delivery.update(next_attempt_at=timezone.now()):
                continue  # taken meanwhile
            # Due again from now, so the next sweep leaves it to this message for a while.
            _queue(pk)
            requeued.append(pk)
    return requeued
