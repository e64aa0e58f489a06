"""SigV4 access keys: boto3's sagemaker-runtime client signs, the platform verifies or refuses."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials
from django.db import connection
from django.test import RequestFactory
from django.utils import timezone

from tenants import sigv4
from tenants.exceptions import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    SignatureRejected,
    UnrecognizedClient,
)
from tenants.models import ApiToken, Tenant
from tenants.services import (
    authenticate_signed_request,
    derive_secret_access_key,
    issue_token,
    revoke_token,
    set_tenant_status,
    sigv4_credential,
)

pytestmark = pytest.mark.django_db

PROXY = "http://proxy.test:8000"
INVOKE_PATH = "/endpoints/acme-intents/invocations"
INVOKE_BODY = json.dumps({"inputs": ["Where is my refund?"]}).encode()
INVOKE_HEADERS = {
    "Content-Type": "application/json",
    "X-Amzn-SageMaker-Target-Model": "acme.intent-classifier",
    "X-Amzn-SageMaker-Custom-Attributes": "trace=abc  123",
}


def sign(
    issued,
    *,
    url: str = PROXY + INVOKE_PATH,
    body: bytes = INVOKE_BODY,
    headers: dict[str, str] | None = None,
    service: str = "sagemaker",
    region: str = "eu-west-1",
    secret_access_key: str | None = None,
) -> AWSRequest:
    """A POST signed by botocore's own SigV4 signer, as the sagemaker-runtime client signs it."""
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers=dict(INVOKE_HEADERS if headers is None else headers),
    )
    credentials = Credentials(issued.access_key_id, secret_access_key or issued.secret_access_key)
    SigV4Auth(credentials, service, region).add_auth(request)
    return request


def as_received(request: AWSRequest) -> dict:
    """What the proxy sees of a botocore request: wire path, raw query, headers with Host, body."""
    parts = urlsplit(request.url)
    headers = {
        name: value.decode() if isinstance(value, bytes) else value
        for name, value in request.headers.items()
    }
    # The HTTP client adds Host from the URL; botocore signs that same value.
    headers.setdefault("Host", parts.netloc)
    body = request.body or b""
    return {
        "method": request.method,
        "path": parts.path,
        "query_string": parts.query,
        "headers": headers,
        "body": body.encode() if isinstance(body, str) else body,
    }


def refused(received: dict, **overrides) -> SignatureRejected:
    with pytest.raises(SignatureRejected) as caught:
        authenticate_signed_request(**(received | overrides))
    assert caught.value.status_code == 403
    return caught.value


@pytest.fixture
def issued(tenant):
    return issue_token(name="boto3 client", tenant=tenant, actor="test")


class FakeRaw(io.BytesIO):
    """The urllib3-like body botocore reads a response from."""

    def stream(self, amt: int = 1024, decode_content: bool | None = None):
        while chunk := self.read(amt):
            yield chunk


def capture_boto3_invoke(issued, **invoke_kwargs) -> tuple[AWSRequest, dict]:
    """Call InvokeEndpoint through a real boto3 client; capture what it would send."""
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url="http://127.0.0.1:1",
        region_name="us-east-1",
        aws_access_key_id=issued.access_key_id,
        aws_secret_access_key=issued.secret_access_key,
    )
    sent: list[AWSRequest] = []

    def before_send(request, **kwargs):
        sent.append(request)
        body = json.dumps({"outputs": ["refund"]}).encode()
        return AWSResponse(request.url, 200, {"Content-Type": "application/json"}, FakeRaw(body))

    client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", before_send)
    response = client.invoke_endpoint(**invoke_kwargs)
    assert json.loads(response["Body"].read()) == {"outputs": ["refund"]}
    assert len(sent) == 1
    return sent[0], as_received(sent[0])


# Issuance -------------------------------------------------------------------------------------


def test_issuing_a_token_returns_an_access_key_pair_once(issued):
    assert re.fullmatch(r"TMLK[A-Z0-9]{16}", issued.access_key_id)
    assert len(issued.secret_access_key) == 40
    assert issued.token.access_key_id == issued.access_key_id
    # The pair is bound to this token and differs for the next one.
    other = issue_token(name="another", tenant=issued.token.tenant, actor="test")
    assert other.access_key_id != issued.access_key_id
    assert other.secret_access_key != issued.secret_access_key


def test_no_column_holds_the_secret_access_key(issued):
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM tenants_apitoken WHERE id = %s", [issued.token.pk])
        row = cursor.fetchone()
    assert all(issued.secret_access_key not in str(value) for value in row)
    assert all(issued.secret not in str(value) for value in row)
    assert issued.access_key_id in row


def test_rotating_secret_key_invalidates_secret_access_keys(issued, settings):
    before = derive_secret_access_key(key_digest=issued.token.key_digest)
    assert before == issued.secret_access_key
    received = as_received(sign(issued))
    settings.SECRET_KEY = "a-rotated-secret-key-" + "x" * 40
    assert derive_secret_access_key(key_digest=issued.token.key_digest) != before
    assert refused(received).code == "InvalidSignatureException"


def test_api_issuance_shows_the_aws_pair_once(tenant_client, tenant):
    created = tenant_client.post(
        f"/api/v1/tenants/{tenant.slug}/tokens/", {"name": "boto3"}, format="json"
    )
    assert created.status_code == 201
    data = created.json()
    token = ApiToken.objects.get(pk=data["id"])
    assert data["aws_access_key_id"] == data["access_key_id"] == token.access_key_id
    assert data["aws_secret_access_key"] == derive_secret_access_key(key_digest=token.key_digest)
    listing = tenant_client.get(f"/api/v1/tenants/{tenant.slug}/tokens/")
    assert data["aws_secret_access_key"] not in listing.content.decode()
    row = next(row for row in listing.json()["results"] if row["id"] == token.pk)
    assert row["access_key_id"] == token.access_key_id
    assert "aws_secret_access_key" not in row


def test_admin_issuance_shows_the_aws_pair_once(admin_client, tenant):
    response = admin_client.post(
        "/admin/tenants/apitoken/add/",
        {"name": "boto3", "tenant": tenant.pk, "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )
    token = ApiToken.objects.get(name="boto3")
    shown = " ".join(str(message) for message in response.context["messages"])
    secret_access_key = derive_secret_access_key(key_digest=token.key_digest)
    assert token.access_key_id in shown
    assert secret_access_key in shown
    change_page = admin_client.get(f"/admin/tenants/apitoken/{token.pk}/change/")
    assert secret_access_key not in change_page.content.decode()


# Accepted requests ----------------------------------------------------------------------------


def test_botocore_signed_invoke_request_is_accepted(issued):
    received = as_received(sign(issued))
    token = authenticate_signed_request(**received)
    assert token.pk == issued.token.pk
    assert token.tenant == issued.token.tenant
    assert ApiToken.objects.get(pk=token.pk).last_used_at is not None


@pytest.mark.parametrize(
    "endpoint_name",
    ["acme-intents", "acme.intent-classifier~v2", "has space", "ünïcode+plus/slash"],
)
def test_boto3_sagemaker_runtime_client_request_is_accepted(issued, endpoint_name):
    request, received = capture_boto3_invoke(
        issued,
        EndpointName=endpoint_name,
        Body=INVOKE_BODY,
        ContentType="application/json",
        TargetModel="acme/intent v2.tar.gz",
        CustomAttributes="trace=abc  123",
    )
    assert request.method == "POST"
    assert received["path"].endswith("/invocations")
    signed_headers = request.headers["Authorization"].decode().split("SignedHeaders=")[1]
    assert "x-amzn-sagemaker-target-model" in signed_headers
    assert "host" in signed_headers
    assert authenticate_signed_request(**received).pk == issued.token.pk


def test_boto3_request_verifies_from_a_django_request(issued):
    """The proxy can hand Django's request.headers and request.path over as they are."""
    _, received = capture_boto3_invoke(
        issued,
        EndpointName="acme-intents",
        Body=INVOKE_BODY,
        ContentType="application/json",
        TargetModel="acme.intent-classifier",
    )
    headers = received["headers"]
    django_request = RequestFactory().generic(
        "POST",
        received["path"],
        data=received["body"],
        content_type=headers.pop("Content-Type"),
        headers={name: value for name, value in headers.items() if name != "Content-Length"},
    )
    token = authenticate_signed_request(
        method=django_request.method,
        path=django_request.path,
        query_string=django_request.META.get("QUERY_STRING", ""),
        headers=django_request.headers,
        body=django_request.body,
    )
    assert token.pk == issued.token.pk


def test_platform_tokens_can_sign_too():
    platform = issue_token(name="ops", tenant=None, actor="test")
    token = authenticate_signed_request(**as_received(sign(platform)))
    assert token.is_platform


def test_signed_query_string_is_accepted_in_any_order(issued):
    received = as_received(sign(issued, url=PROXY + INVOKE_PATH + "?b=2&a=x%20y"))
    token = authenticate_signed_request(**received | {"query_string": "a=x%20y&b=2"})
    assert token.pk == issued.token.pk


def test_skew_within_fifteen_minutes_is_accepted(issued):
    received = as_received(sign(issued))
    signed_at = datetime.strptime(received["headers"]["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    signed_at = signed_at.replace(tzinfo=UTC)
    for offset in (timedelta(minutes=14), -timedelta(minutes=14)):
        token = authenticate_signed_request(**received, now=signed_at + offset)
        assert token.pk == issued.token.pk, offset


# Refused requests -----------------------------------------------------------------------------


def test_tampered_body_is_refused(issued):
    received = as_received(sign(issued))
    error = refused(received, body=INVOKE_BODY.replace(b"refund", b"rebate"))
    assert error.code == "InvalidSignatureException"
    assert isinstance(error, InvalidSignature)


def test_tampered_path_is_refused(issued):
    received = as_received(sign(issued))
    error = refused(received, path="/endpoints/other-tenant/invocations")
    assert error.code == "InvalidSignatureException"


def test_tampered_target_model_header_is_refused(issued):
    received = as_received(sign(issued))
    headers = received["headers"] | {"X-Amzn-SageMaker-Target-Model": "globex.intent-classifier"}
    assert refused(received, headers=headers).code == "InvalidSignatureException"


def test_tampered_query_string_is_refused(issued):
    received = as_received(sign(issued, url=PROXY + INVOKE_PATH + "?a=1"))
    assert refused(received, query_string="a=2").code == "InvalidSignatureException"


def test_tampered_signature_is_refused(issued):
    received = as_received(sign(issued))
    authorization = received["headers"]["Authorization"]
    last = authorization[-1]
    tampered = authorization[:-1] + ("0" if last != "0" else "1")
    headers = received["headers"] | {"Authorization": tampered}
    error = refused(received, headers=headers)
    assert error.code == "InvalidSignatureException"
    assert issued.secret_access_key not in error.message


def test_wrong_secret_access_key_is_refused(issued):
    received = as_received(sign(issued, secret_access_key="x" * 40))
    assert refused(received).code == "InvalidSignatureException"


def test_unknown_access_key_id_is_refused(issued):
    stranger = type(issued)(
        token=ApiToken(access_key_id="TMLKAAAAAAAAAAAAAAAA"),
        secret="tml_unused",
        secret_access_key=issued.secret_access_key,
    )
    error = refused(as_received(sign(stranger)))
    assert isinstance(error, UnrecognizedClient)
    assert error.code == "UnrecognizedClientException"


def test_revoked_token_is_refused(issued):
    received = as_received(sign(issued))
    revoke_token(token=issued.token, actor="test")
    assert refused(received).code == "UnrecognizedClientException"


def test_expired_token_is_refused(tenant):
    expired = issue_token(
        name="old", tenant=tenant, actor="test", expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert refused(as_received(sign(expired))).code == "UnrecognizedClientException"


def test_suspended_tenants_token_is_refused_until_reactivated(issued, tenant):
    received = as_received(sign(issued))
    set_tenant_status(tenant=tenant, status=Tenant.Status.SUSPENDED, actor="test")
    assert refused(received).code == "UnrecognizedClientException"
    set_tenant_status(tenant=tenant, status=Tenant.Status.ACTIVE, actor="test")
    assert authenticate_signed_request(**received).pk == issued.token.pk


@pytest.mark.parametrize("offset", [timedelta(minutes=16), -timedelta(minutes=16)])
def test_request_outside_the_skew_is_refused(issued, offset):
    received = as_received(sign(issued))
    signed_at = datetime.strptime(received["headers"]["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    error = refused(received, now=signed_at.replace(tzinfo=UTC) + offset)
    assert error.code == "InvalidSignatureException"
    assert "Signature expired" in error.message or "not yet current" in error.message


def test_wrong_service_in_scope_is_refused(issued):
    error = refused(as_received(sign(issued, service="execute-api")))
    assert error.code == "InvalidSignatureException"
    assert "'sagemaker'" in error.message


def test_missing_authorization_is_refused(issued):
    received = as_received(sign(issued))
    headers = {k: v for k, v in received["headers"].items() if k != "Authorization"}
    error = refused(received, headers=headers)
    assert isinstance(error, MissingAuthenticationToken)
    assert error.code == "MissingAuthenticationToken"


def test_bearer_token_on_the_sigv4_route_is_refused(issued):
    received = as_received(sign(issued))
    headers = received["headers"] | {"Authorization": f"Bearer {issued.secret}"}
    error = refused(received, headers=headers)
    assert isinstance(error, IncompleteSignature)
    assert error.code == "IncompleteSignature"
    assert issued.secret not in error.message


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=TMLKAAAAAAAAAAAAAAAA/20240101/us-east-1/sagemaker",
        "AWS4-HMAC-SHA256 Credential=TMLK/20240101/us-east-1/sagemaker/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=nothex",
        "AWS4-HMAC-SHA256 Credential=TMLKAAAAAAAAAAAAAAAA/20240101/us-east-1/sagemaker/"
        "aws4_request, Signature=" + "0" * 64,
    ],
)
def test_malformed_authorization_is_refused(issued, authorization):
    received = as_received(sign(issued))
    headers = received["headers"] | {"Authorization": authorization}
    assert refused(received, headers=headers).code == "IncompleteSignature"


def test_host_must_be_signed(issued):
    received = as_received(sign(issued))
    authorization = received["headers"]["Authorization"].replace("host;", "")
    headers = received["headers"] | {"Authorization": authorization}
    error = refused(received, headers=headers)
    assert error.code == "IncompleteSignature"
    assert "host" in error.message


def test_different_host_is_refused(issued):
    received = as_received(sign(issued))
    headers = received["headers"] | {"Host": "evil.test:8000"}
    assert refused(received, headers=headers).code == "InvalidSignatureException"


def test_content_sha256_header_must_match_the_body(issued):
    headers = INVOKE_HEADERS | {"X-Amz-Content-SHA256": "0" * 64}
    error = refused(as_received(sign(issued, headers=headers)))
    assert error.code == "InvalidSignatureException"
    assert "X-Amz-Content-SHA256" in error.message


def test_unsigned_payload_is_refused(issued):
    request = AWSRequest(
        method="POST", url=PROXY + INVOKE_PATH, data=INVOKE_BODY, headers=dict(INVOKE_HEADERS)
    )
    request.context["payload_signing_enabled"] = False
    credentials = Credentials(issued.access_key_id, issued.secret_access_key)
    SigV4Auth(credentials, "sagemaker", "us-east-1").add_auth(request)
    received = as_received(request)
    assert received["headers"]["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    assert refused(received).code == "IncompleteSignature"


def test_old_tokens_without_an_access_key_cannot_sign(issued):
    received = as_received(sign(issued))
    # Tokens issued before access keys existed hold NULL; a new token is needed for SigV4.
    ApiToken.objects.filter(pk=issued.token.pk).update(access_key_id=None)
    assert refused(received).code == "UnrecognizedClientException"
    assert sigv4_credential("") is None


# Canonical form, checked against botocore itself ---------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/endpoints/acme-intents/invocations",
        "/endpoints/has%20space/invocations",
        "/endpoints/%C3%BCn%C3%AFcode%2Bplus%2Fslash/invocations",
        "/endpoints//double//slash/",
        "/endpoints/./dot/../dots/invocations",
        "",
    ],
)
def test_canonical_path_matches_botocore(path):
    signer = SigV4Auth(Credentials("a", "b"), "sagemaker", "us-east-1")
    assert sigv4.canonical_path(path) == signer._normalize_url_path(path)


@pytest.mark.parametrize("query", ["", "b=2&a=1", "a=2&a=1", "x=a%20b&y=~-_.", "flag"])
def test_canonical_query_string_matches_botocore(query):
    signer = SigV4Auth(Credentials("a", "b"), "sagemaker", "us-east-1")
    assert sigv4.canonical_query_string(query) == signer._canonical_query_string_url(
        urlsplit(f"http://h/p?{query}")
    )


def test_verify_request_returns_what_lookup_returned_without_a_database():
    principal = object()
    secret = "s" * 40
    request = AWSRequest(method="POST", url=PROXY + INVOKE_PATH, data=b"{}")
    SigV4Auth(Credentials("TMLKAAAAAAAAAAAAAAAA", secret), "sagemaker", "us-east-1").add_auth(
        request
    )
    looked_up: list[str] = []

    def lookup(access_key_id: str):
        looked_up.append(access_key_id)
        return principal, secret

    assert sigv4.verify_request(**as_received(request), lookup=lookup) is principal
    assert looked_up == ["TMLKAAAAAAAAAAAAAAAA"]
