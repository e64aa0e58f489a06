"""``manage.py tokens``: issue (secrets shown once), list (never a secret) and revoke, through the
same services as the API, with a clear error for an unknown tenant or token."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from deployments.models import Event
from tenants.exceptions import InvalidToken
from tenants.models import ApiToken, Tenant
from tenants.services import authenticate_token, issue_token, revoke_token, set_tenant_status
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def tokens(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("tokens", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def shown_secret(output: str) -> str:
    return re.search(r"token:\s+(tml_\S+)", output).group(1)


def test_issue_prints_a_tenant_token_that_authenticates_once():
    tenant = TenantFactory(slug="zoomride")

    out, _ = tokens("issue", "--tenant", "zoomride", "--name", "ci")

    token = ApiToken.objects.get(name="ci")
    assert token.tenant == tenant and token.scope == ApiToken.Scope.TENANT
    assert f"Issued token {token.pk} (ci) for tenant zoomride." in out
    assert authenticate_token(secret=shown_secret(out)).pk == token.pk
    assert re.search(rf"AWS access key id:\s+{token.access_key_id}", out)
    assert re.search(r"AWS secret access key:\s+\S{40}", out)
    assert Event.objects.filter(kind="token.issued", actor="cli", tenant=tenant).count() == 1


def test_issue_a_platform_token_with_an_expiry():
    out, _ = tokens("issue", "--platform", "--name", "prometheus", "--expires-in-days", "30")

    token = ApiToken.objects.get(name="prometheus")
    assert token.is_platform and token.tenant is None
    assert authenticate_token(secret=shown_secret(out)).is_platform
    expected = timezone.now() + timedelta(days=30)
    assert abs(token.expires_at - expected) < timedelta(minutes=1)
    assert "It expires at" in out


def test_issue_for_a_suspended_tenant_warns_that_the_token_waits_for_reactivation():
    tenant = TenantFactory(slug="paused")
    set_tenant_status(tenant=tenant, status=Tenant.Status.SUSPENDED, actor="test")

    _, err = tokens("issue", "--tenant", "paused", "--name", "ci")

    assert "Tenant paused is suspended" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("issue", "--tenant", "nobody", "--name", "ci"), "No tenant 'nobody'."),
        (("issue", "--platform", "--name", "   "), "name: 1 to 100 characters."),
        (("issue", "--platform", "--name", "x" * 101), "name: 1 to 100 characters."),
        (("issue", "--name", "ci"), "one of the arguments --tenant --platform is required"),
        (("issue", "--platform", "--tenant", "a", "--name", "ci"), "not allowed with argument"),
        (("issue", "--platform", "--name", "ci", "--expires-in-days", "0"), "invalid"),
        (("list", "--tenant", "nobody"), "No tenant 'nobody'."),
        (("revoke", "999999"), "No token 999999"),
        (("revoke", "abc"), "invalid int value"),
    ],
)
def test_bad_arguments_are_a_clear_error_that_changes_nothing(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        tokens(*args)

    assert not ApiToken.objects.exists()
    assert not Event.objects.filter(kind__startswith="token.").exists()


def test_list_shows_ids_prefixes_and_states_but_never_a_secret():
    acme, other = TenantFactory(slug="acme"), TenantFactory(slug="globex")
    active = issue_token(name="ci", tenant=acme, actor="test")
    revoked = issue_token(name="old", tenant=acme, actor="test")
    revoke_token(token=revoked.token, actor="test")
    expired = issue_token(
        name="trial", tenant=acme, actor="test", expires_at=timezone.now() - timedelta(days=1)
    )
    foreign = issue_token(name="theirs", tenant=other, actor="test")
    platform = issue_token(name="ops", tenant=None, actor="test")
    everyone = (active, revoked, expired, foreign, platform)

    everything, _ = tokens("list")
    only_acme, _ = tokens("list", "--tenant", "acme")
    only_platform, _ = tokens("list", "--platform")

    for issued in everyone:
        assert issued.secret not in everything
        assert issued.secret_access_key not in everything
        assert issued.token.key_digest not in everything
    rows = {line.split()[0]: line for line in everything.splitlines()[1:]}
    assert set(rows) == {str(issued.token.pk) for issued in everyone}
    assert everything.splitlines()[0].split()[:2] == ["ID", "TOKEN"]
    assert f"{active.token.prefix}…" in rows[str(active.token.pk)]
    assert active.access_key_id in rows[str(active.token.pk)]
    assert " active " in rows[str(active.token.pk)]
    assert " revoked " in rows[str(revoked.token.pk)]
    assert " expired " in rows[str(expired.token.pk)]
    assert "(platform)" in rows[str(platform.token.pk)]
    acme_ids = {line.split()[0] for line in only_acme.splitlines()[1:]}
    assert acme_ids == {str(t.token.pk) for t in (active, revoked, expired)}
    assert [line.split()[0] for line in only_platform.splitlines()[1:]] == [str(platform.token.pk)]


def test_list_with_no_tokens_says_so():
    TenantFactory(slug="acme")

    assert tokens("list", "--tenant", "acme")[0] == "No tokens.\n"


def test_revoke_stops_the_token_at_once_and_a_second_revoke_changes_nothing():
    issued = issue_token(name="ci", tenant=TenantFactory(slug="acme"), actor="test")

    out, _ = tokens("revoke", str(issued.token.pk))
    again, _ = tokens("revoke", str(issued.token.pk))

    assert f"Revoked token {issued.token.pk}" in out
    assert "was already revoked" in again
    with pytest.raises(InvalidToken):
        authenticate_token(secret=issued.secret)
    assert Event.objects.filter(kind="token.revoked", actor="cli").count() == 1
