"""``manage.py tokens``: issue, list and revoke API tokens from a shell, as the admin does.

    manage.py tokens issue --tenant zoomride --name ci [--expires-in-days 90]
    manage.py tokens issue --platform --name prometheus
    manage.py tokens list [--tenant zoomride | --platform]
    manage.py tokens revoke 42

``issue`` prints the bearer secret and the SigV4 secret access key once; nothing stores them in
clear, so they cannot be shown again. ``list`` shows ids, prefixes and access key ids, never a
secret. Every change goes through ``tenants.services`` and leaves an Event, like the API's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from config.errors import DomainError
from tenants import selectors, services
from tenants.access import Caller
from tenants.models import ApiToken, Tenant

ACTOR = "cli"
# Whoever runs manage.py is the platform's operator: every tenant is visible.
OPERATOR = Caller(label=ACTOR, is_platform=True, tenant_ids=frozenset())
COLUMNS = ("ID", "TOKEN", "ACCESS KEY ID", "TENANT", "NAME", "STATE", "LAST USED", "EXPIRES")


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = "Issue, list and revoke API tokens (secrets are shown once, at issue)."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        issue = actions.add_parser("issue", help="issue a tenant or platform token")
        owner = issue.add_mutually_exclusive_group(required=True)
        owner.add_argument("--tenant", metavar="SLUG", help="the tenant the token acts for")
        owner.add_argument(
            "--platform", action="store_true", help="a platform (operator) token: every tenant"
        )
        issue.add_argument("--name", required=True, help="what the token is for (e.g. ci)")
        issue.add_argument(
            "--expires-in-days",
            type=positive_int,
            metavar="DAYS",
            help="the token stops working after this many days (default: never)",
        )

        listing = actions.add_parser("list", help="list tokens (never their secrets)")
        scope = listing.add_mutually_exclusive_group()
        scope.add_argument("--tenant", metavar="SLUG", help="only this tenant's tokens")
        scope.add_argument("--platform", action="store_true", help="only platform tokens")

        revoke = actions.add_parser("revoke", help="revoke a token by its id")
        revoke.add_argument("token_id", type=int, metavar="ID", help="the id `tokens list` shows")

    def handle(self, *args, **options) -> None:
        actions = {"issue": self.issue, "list": self.list_tokens, "revoke": self.revoke}
        actions[options["action"]](options)

    def issue(self, options: dict) -> None:
        tenant = self.tenant(options["tenant"]) if options["tenant"] else None
        days = options["expires_in_days"]
        try:
            issued = services.issue_token(
                name=options["name"],
                tenant=tenant,
                expires_at=timezone.now() + timedelta(days=days) if days else None,
                actor=ACTOR,
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        token = issued.token
        owner = f"tenant {tenant.slug}" if tenant else "the platform"
        self.stdout.write(f"Issued token {token.pk} ({token.name}) for {owner}.")
        if token.expires_at:
            self.stdout.write(f"It expires at {when(token.expires_at)}.")
        if tenant is not None and not tenant.is_active:
            self.stderr.write(
                f"Tenant {tenant.slug} is {tenant.status}: the token works once the tenant is "
                "reactivated."
            )
        self.stdout.write("Shown once; store them now:")
        self.stdout.write(f"  token:                 {issued.secret}")
        self.stdout.write(f"  AWS access key id:     {issued.access_key_id}")
        self.stdout.write(f"  AWS secret access key: {issued.secret_access_key}")

    def list_tokens(self, options: dict) -> None:
        tenant = self.tenant(options["tenant"]) if options["tenant"] else None
        tokens = selectors.all_tokens(tenant=tenant, platform_only=options["platform"])
        now = timezone.now()
        rows = [
            (
                str(token.pk),
                f"{token.prefix}…",
                token.access_key_id or "-",
                token.tenant.slug if token.tenant else "(platform)",
                token.name,
                state(token, now),
                when(token.last_used_at) if token.last_used_at else "never",
                when(token.expires_at) if token.expires_at else "never",
            )
            for token in tokens
        ]
        if not rows:
            self.stdout.write("No tokens.")
            return
        widths = [max(len(row[i]) for row in (COLUMNS, *rows)) for i in range(len(COLUMNS))]
        for row in (COLUMNS, *rows):
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            self.stdout.write("  ".join(cells).rstrip())

    def revoke(self, options: dict) -> None:
        token = selectors.all_tokens().filter(pk=options["token_id"]).first()
        if token is None:
            raise CommandError(f"No token {options['token_id']}; `tokens list` shows their ids.")
        if token.revoked_at is not None:
            self.stdout.write(
                f"Token {token.pk}, {token}, was already revoked on {when(token.revoked_at)}."
            )
            return
        token = services.revoke_token(token=token, actor=ACTOR)
        self.stdout.write(f"Revoked token {token.pk}, {token}.")

    def tenant(self, slug: str) -> Tenant:
        try:
            return selectors.tenant_for_caller(caller=OPERATOR, slug=slug)
        except DomainError as exc:
            raise CommandError(f"No tenant {slug!r}.") from exc


def state(token: ApiToken, now: datetime) -> str:
    """What a token's row says of it: revoked, expired, its tenant suspended, or active."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    if token.tenant is not None and not token.tenant.is_active:
        return "tenant suspended"
    return "active"


def when(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")
