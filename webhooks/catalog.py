"""The event types webhooks carry: public names, the platform event kinds they come from, and
the subscriptions (exact types or a group prefix such as ``training.``) a webhook may hold."""

from __future__ import annotations

# The platform's event kind (what ``record_event`` is called with) -> the type product teams
# subscribe to and receive. The canary types are the live gate's decisions on canary and shadow
# rollouts (deployments.services.candidates), and by-hand promotions and aborts.
PUBLIC_TYPE_BY_KIND = {
    "training.succeeded": "training.succeeded",
    "training.failed": "training.failed",
    "training.cancelled": "training.cancelled",
    "version.promoted": "version.promoted",
    "version.held": "version.held",
    "deployment.switched": "deployment.live",
    "deployment.failed": "deployment.failed",
    "model.rolled_back": "deployment.rolled_back",
    "deployment.retired": "deployment.retired",
    "canary.promoted": "canary.promoted",
    "canary.aborted": "canary.aborted",
}
EVENT_TYPES = tuple(sorted(set(PUBLIC_TYPE_BY_KIND.values())))
# Sent only by "send a test event", to the one webhook asked; never subscribed to.
TEST_EVENT_TYPE = "webhook.test"
GROUP_PREFIXES = tuple(sorted({name.split(".")[0] + "." for name in EVENT_TYPES}))
SUBSCRIPTIONS = (*GROUP_PREFIXES, *EVENT_TYPES)


def public_type(kind: str) -> str | None:
    """The webhook event type a platform event kind is sent as; None for kinds not sent."""
    return PUBLIC_TYPE_BY_KIND.get(kind)


def subscribes(subscriptions: list[str], event_type: str) -> bool:
    """Whether a webhook holding ``subscriptions`` receives ``event_type``."""
    return any(
        event_type == name or (name.endswith(".") and event_type.startswith(name))
        for name in subscriptions
    )
