"""Canary and shadow rollouts over real HTTP in front of real Triton processes, with concurrent
callers: a canary gets its share of requests (within binomial bounds) and a request key always
lands on the same version; a shadow never changes a caller's answer nor makes it wait; the live
gate aborts a canary whose version errors (callers see no more errors than the canary's share)
and promotes a good one; promote and abort by hand through the API."""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deployments.models import Deployment, Event, Placement, VersionUsageMinute
from deployments.proxy import core, mirroring
from deployments.proxy.routing import ROUTES
from deployments.services import candidates, rollouts
from deployments.usage import flush_usage
from models_registry.models import ModelVersion
from tests.deployments.proxy.test_proxy import deploy, invoke_url
from tests.serving_fixtures import packaged_version
from tests.waiting import wait_until
from webhooks.catalog import public_type

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("local_rollouts")]

TICKETS = ["Where is my refund?", "I can't log in to my account.", "My parcel never arrived."]


@pytest.fixture(autouse=True)
def fresh_proxy_state(settings):
    from deployments.proxy.metrics import METRICS

    settings.TENANTML_PROXY_RATE_LIMIT_RPS = 10_000.0
    settings.TENANTML_PROXY_RATE_LIMIT_BURST = 10_000.0
    METRICS.reset()
    ROUTES.invalidate(None)
    core._TOKENS.clear()
    core._SEEN_LOADED.clear()
    core.reset_rate_limits()


def ask(proxy_url: str, token: str, *, key: str | None = None, texts=TICKETS[:1]):
    """One native request; (status, answered version or None, seconds, outputs)."""
    request = urllib.request.Request(
        invoke_url(proxy_url), data=json.dumps({"inputs": list(texts)}).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {token}")
    if key is not None:
        request.add_header("X-TenantML-Request-Key", key)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
            return response.status, body["model_version"], time.perf_counter() - started, body
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, None, time.perf_counter() - started, None


def same_answer(answer, expected) -> bool:
    """Equal, floats to 1e-5 relative: requests batched together on Triton may differ from a
    lone one in the last digits."""
    if isinstance(expected, dict):
        return (
            isinstance(answer, dict)
            and answer.keys() == expected.keys()
            and all(same_answer(answer[k], v) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(answer, list)
            and len(answer) == len(expected)
            and all(same_answer(a, e) for a, e in zip(answer, expected, strict=True))
        )
    if isinstance(expected, float):
        return isinstance(answer, float | int) and math.isclose(
            answer, expected, rel_tol=1e-5, abs_tol=1e-7
        )
    return answer == expected


def ask_many(proxy_url: str, token: str, count: int, *, workers: int = 8, **kwargs) -> list:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda _: ask(proxy_url, token, **kwargs), range(count)))


def with_wrapped_execute(version: ModelVersion, execute_body: str, scratch: Path) -> ModelVersion:
    """The packaged version with its model's ``execute`` wrapped: it answers its first request
    (the rollout's probe) as released, then runs ``execute_body`` before (or instead of)
    answering: a release that fails, or a slow one, behind a healthy probe."""
    unpacked = scratch / f"unpacked-{version.number}"
    with tarfile.open(version.package_uri) as tar:
        tar.extractall(unpacked, filter="data")
    model_py = unpacked / version.triton_model_name / "1" / "model.py"
    model_py.write_text(
        model_py.read_text()
        + "\n\n_Released = TritonPythonModel\n\n\n"
        + "class TritonPythonModel(_Released):\n"
        + "    calls = 0\n\n"
        + "    def execute(self, requests):\n"
        + "        TritonPythonModel.calls += 1\n"
        + "        if TritonPythonModel.calls > 1:\n"
        + "".join(f"            {line}\n" for line in execute_body.splitlines())
        + "        return super().execute(requests)\n"
    )
    package = scratch / f"model-{version.number}.tar.gz"
    with tarfile.open(package, "w:gz") as tar:
        tar.add(unpacked / version.triton_model_name, arcname=version.triton_model_name)
    version.package_uri = str(package)
    version.sha256 = hashlib.sha256(package.read_bytes()).hexdigest()
    version.save()
    return version


def start(model, version, strategy: str, **options) -> Deployment:
    deployment = candidates.start_candidate(
        model=model, version=version, strategy=strategy, actor="test", **options
    )
    rollouts.run_rollout(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.candidate_version_id == version.pk, deployment.status_reason
    return deployment


def binomial_bounds(count: int, share: float, sigmas: float = 5.0) -> tuple[float, float]:
    spread = sigmas * math.sqrt(count * share * (1 - share))
    return count * share - spread, count * share + spread


def usage_of(version: ModelVersion) -> dict:
    flush_usage()
    totals = {
        "invocations": 0,
        "errors": 0,
        "mirrored": 0,
        "mirror_dropped": 0,
        "compared": 0,
        "agreement_sum": 0.0,
    }
    for row in VersionUsageMinute.objects.filter(version=version):
        for name in totals:
            totals[name] += getattr(row, name)
    return totals


def test_a_canary_at_ten_percent_gets_about_ten_percent_of_concurrent_requests(
    proxy_url, intent_artifact
):
    model, token = deploy(intent_artifact)
    v2 = packaged_version(model, intent_artifact, 2)
    start(model, v2, "canary", share=0.1)

    answers = ask_many(proxy_url, token, 400)

    assert all(status == 200 for status, *_ in answers)
    to_canary = sum(1 for _, version, *_ in answers if version == 2)
    low, high = binomial_bounds(400, 0.1)
    assert low <= to_canary <= high, to_canary
    assert sum(1 for _, version, *_ in answers if version == 1) == 400 - to_canary
    # The time series counts each version's own requests (copies sent to compare are apart).
    canary = usage_of(v2)
    assert canary["invocations"] - canary["mirrored"] == to_canary


def test_a_request_key_always_lands_on_the_same_version(proxy_url, intent_artifact):
    model, token = deploy(intent_artifact)
    v2 = packaged_version(model, intent_artifact, 2)
    start(model, v2, "canary", share=0.5)

    seen: dict[str, set[int]] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        keyed = [f"conversation-{n}" for n in range(30) for _ in range(5)]
        for key, (status, version, *_) in zip(
            keyed, pool.map(lambda key: ask(proxy_url, token, key=key), keyed), strict=True
        ):
            assert status == 200
            seen.setdefault(key, set()).add(version)

    assert all(len(versions) == 1 for versions in seen.values()), seen
    # 30 keys at 50 %: both versions answer some of them (all on one: 2 in a billion).
    assert {version for versions in seen.values() for version in versions} == {1, 2}


def test_a_shadow_never_changes_a_callers_answer_and_is_compared(proxy_url, intent_artifact):
    model, token = deploy(intent_artifact)
    expected = ask(proxy_url, token, texts=TICKETS)[3]["outputs"]
    v2 = packaged_version(model, intent_artifact, 2)
    start(model, v2, "shadow")

    answers = ask_many(proxy_url, token, 60, texts=TICKETS)

    assert all(status == 200 and version == 1 for status, version, *_ in answers)
    # Requests batched together on Triton may differ from a lone one in the last float digits.
    assert all(same_answer(body["outputs"], expected) for *_, body in answers)
    wait_until(lambda: mirroring.in_flight() == 0, 30, "shadow copies still in flight")
    shadow = usage_of(v2)
    # Every request was copied, or its copy dropped and counted (on a busy machine more than
    # SHADOW_MAX_IN_FLIGHT copies may be under way at once).
    assert shadow["mirrored"] + shadow["mirror_dropped"] == 60
    assert shadow["mirrored"] == shadow["invocations"] > 0
    assert shadow["errors"] == 0
    # The same artifact: every label agrees.
    assert shadow["compared"] == shadow["mirrored"] * len(TICKETS)
    assert shadow["agreement_sum"] == pytest.approx(shadow["compared"])


def test_a_slow_or_failing_shadow_is_not_waited_for_and_its_errors_never_reach_callers(
    proxy_url, intent_artifact, tmp_path, settings
):
    settings.TENANTML_SHADOW_MAX_IN_FLIGHT = 4
    model, token = deploy(intent_artifact)
    v2 = with_wrapped_execute(
        packaged_version(model, intent_artifact, 2),
        "import time\ntime.sleep(1.5)\nraise RuntimeError('this release cannot answer')",
        tmp_path,
    )
    start(model, v2, "shadow")

    answers = ask_many(proxy_url, token, 40, workers=4)

    assert all(status == 200 and version == 1 for status, version, *_ in answers)
    # Each shadow copy takes 1.5 s and fails; no caller waited for one.
    slowest_s = max(seconds for _, _, seconds, _ in answers)
    assert slowest_s < 1.0, slowest_s
    wait_until(lambda: mirroring.in_flight() == 0, 60, "shadow copies still in flight")
    flush_usage()
    rows = VersionUsageMinute.objects.filter(version=v2)
    mirrored = sum(row.mirrored for row in rows)
    dropped = sum(row.mirror_dropped for row in rows)
    # At most four copies in flight: the rest were dropped and counted, never queued.
    assert mirrored + dropped == 40 and dropped > 0
    assert sum(row.errors for row in rows) >= mirrored - 4  # each stub answers its first call


def test_the_live_gate_aborts_a_canary_that_errors_and_callers_see_at_most_its_share(
    proxy_url, intent_artifact, tmp_path
):
    model, token = deploy(intent_artifact)
    v2 = with_wrapped_execute(
        packaged_version(model, intent_artifact, 2),
        "raise RuntimeError('this release cannot answer')",
        tmp_path,
    )
    start(model, v2, "canary", share=0.1, gate={"min_requests": 10})

    answers = ask_many(proxy_url, token, 300)

    failed = [answer for answer in answers if answer[0] != 200]
    assert failed, "the canary's version should have failed some requests"
    assert len(failed) <= binomial_bounds(300, 0.1)[1]
    flush_usage()

    decided = candidates.evaluate_candidates()

    assert [d["promoted"] for d in decided] == [False]
    deployment = Deployment.objects.get(model=model)
    assert deployment.live_version.number == 1 and deployment.candidate_version is None
    event = Event.objects.get(kind="canary.aborted")
    assert public_type(event.kind) == "canary.aborted"
    assert event.actor == "live-gate" and "error rate" in event.data["reason"]
    assert event.data["candidate"]["errors"] > 0 and event.data["live"]["errors"] == 0
    assert event.data["thresholds"]["min_requests"] == 10
    assert all(
        status == 200 and version == 1 for status, version, *_ in ask_many(proxy_url, token, 40)
    )
    assert not Placement.objects.filter(version=v2).exclude(
        desired_state=Placement.DesiredState.UNLOADED
    )


def test_the_live_gate_promotes_a_good_canary(proxy_url, intent_artifact):
    model, token = deploy(intent_artifact)
    v2 = packaged_version(model, intent_artifact, 2)
    # A loaded machine must not make a good release look slow: latency is not what this tests.
    start(model, v2, "canary", share=0.5, gate={"min_requests": 20, "max_p99_ms": 60_000})

    ask_many(proxy_url, token, 80)
    flush_usage()
    decided = candidates.evaluate_candidates()

    assert [d["promoted"] for d in decided] == [True]
    deployment = Deployment.objects.get(model=model)
    assert (deployment.live_version.number, deployment.previous_version.number) == (2, 1)
    model.refresh_from_db()
    assert model.active_version_id == v2.pk
    event = Event.objects.get(kind="canary.promoted")
    assert public_type(event.kind) == "canary.promoted"
    assert event.data["candidate"]["requests"] >= 20 and event.data["candidate"]["errors"] == 0
    assert all(version == 2 for _, version, *_ in ask_many(proxy_url, token, 20))


def test_the_live_gate_waits_for_enough_requests(proxy_url, intent_artifact):
    model, token = deploy(intent_artifact)
    v2 = packaged_version(model, intent_artifact, 2)
    start(model, v2, "shadow", gate={"min_requests": 1000})

    ask_many(proxy_url, token, 20)
    wait_until(lambda: mirroring.in_flight() == 0, 30, "shadow copies still in flight")
    flush_usage()

    assert candidates.evaluate_candidates() == []
    assert Deployment.objects.get(model=model).candidate_version_id == v2.pk
    assert not Event.objects.filter(kind__in=["canary.promoted", "canary.aborted"]).exists()


def test_promote_and_abort_by_hand_through_the_api(proxy_url, intent_artifact, api_client):
    model, token = deploy(intent_artifact)
    packaged_version(model, intent_artifact, 2)
    packaged_version(model, intent_artifact, 3)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    url = "/api/v1/tenants/acme/models/intents/rollouts/current"

    started = api_client.post(url, {"version": 2, "strategy": "shadow"}, format="json")

    assert started.status_code == 202, started.content
    ask_many(proxy_url, token, 10)
    wait_until(lambda: mirroring.in_flight() == 0, 30, "shadow copies still in flight")
    flush_usage()
    shown = api_client.get(url).json()
    assert shown["state"] == "comparing" and shown["strategy"] == "shadow"
    assert shown["live"]["version"] == 1 and shown["candidate"]["version"] == 2
    assert shown["candidate"]["mirrored"] == 10 and shown["candidate"]["agreement"] == 1.0

    aborted = api_client.post(f"{url}/abort")

    assert aborted.status_code == 200 and aborted.json()["live_version"] == 1
    assert api_client.get(url).status_code == 404
    assert Event.objects.get(kind="canary.aborted").actor.startswith("token:")

    assert api_client.post(
        url, {"version": 3, "strategy": "canary"}, format="json"
    ).status_code == (202)
    promoted = api_client.post(f"{url}/promote")

    assert promoted.status_code == 200, promoted.content
    assert promoted.json() == {"live_version": 3, "previous_version": 1}
    assert all(version == 3 for _, version, *_ in ask_many(proxy_url, token, 10))


def test_bad_rollout_requests_are_4xx_naming_the_field(proxy_url, intent_artifact, api_client):
    model, token = deploy(intent_artifact)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    url = "/api/v1/tenants/acme/models/intents/rollouts/current"

    wrong_strategy = api_client.post(url, {"version": 1, "strategy": "blue<b>"}, format="json")
    wrong_share = api_client.post(
        url, {"version": 1, "strategy": "canary", "share": 3}, format="json"
    )
    live_already = api_client.post(url, {"version": 1, "strategy": "canary"}, format="json")

    assert wrong_strategy.status_code == 400 and "strategy" in wrong_strategy.content.decode()
    assert "blue<b>" not in wrong_strategy.content.decode()
    assert wrong_share.status_code == 400 and "share" in wrong_share.content.decode()
    assert live_already.status_code == 409 and "version" in live_already.content.decode()
    assert api_client.post(f"{url}/promote").status_code == 409


def test_a_version_the_registry_promotes_rolls_out_as_the_deployments_strategy(
    proxy_url, intent_artifact, api_client
):
    from models_registry.services.promotion import promote_version

    model, token = deploy(intent_artifact)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    chosen = api_client.put(
        "/api/v1/tenants/acme/models/intents/rollouts/strategy",
        {"strategy": "shadow"},
        format="json",
    )
    assert chosen.status_code == 200, chosen.content
    v2 = packaged_version(model, intent_artifact, 2)

    promote_version(version=v2, actor="test")

    deployment = Deployment.objects.get(model=model)
    assert deployment.live_version.number == 1
    assert deployment.candidate_version_id == v2.pk and deployment.candidate_strategy == "shadow"
    assert all(version == 1 for _, version, *_ in ask_many(proxy_url, token, 10))

    candidates.abort_candidate(model=model, actor="test", reason="by hand")

    # The registry follows what serves: v1 is the active version again.
    model.refresh_from_db()
    assert model.active_version.number == 1
    assert Deployment.objects.get(model=model).live_version.number == 1
    assert all(version == 1 for _, version, *_ in ask_many(proxy_url, token, 10))
