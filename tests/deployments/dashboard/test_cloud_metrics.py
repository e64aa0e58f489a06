"""CloudWatch's figures on the dashboard: a SageMaker endpoint's page and the overview show its
cold-start figures (cache hit rate, loading, waiting and downloading times, models loaded),
latency, utilization and their trends; a local endpoint's page shows none, a tenant member's
overview none; each part refreshes alone under htmx; and the queries stay few whatever the
number of endpoints and minutes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deployments.models import CloudMetricMinute, Endpoint, InstanceType
from deployments.passes import CLOUD_METRICS, recorded_pass
from tenants.models import Membership
from tests.deployments.dashboard.conftest import htmx
from tests.factories import EndpointFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"


def minute(back: int):
    return timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=back)


def write(endpoint, metric: str, statistic: str, values: dict[int, float], component: str = ""):
    """Rows as the CloudWatch pass writes them: {minutes ago: value}."""
    CloudMetricMinute.objects.bulk_create(
        CloudMetricMinute(
            endpoint=endpoint,
            component=component,
            metric=metric,
            statistic=statistic,
            minute=minute(back),
            value=value,
        )
        for back, value in values.items()
    )


def sagemaker_endpoint(name: str, *, mode: str = Endpoint.Mode.MME, gpu: bool = False):
    instance_type = InstanceType.objects.get(name="ml.g4dn.xlarge" if gpu else "ml.m5.xlarge")
    return EndpointFactory(
        name=name, backend=Endpoint.Backend.SAGEMAKER, mode=mode, instance_type=instance_type
    )


def cold_starts(endpoint, *, scale: float = 1.0) -> None:
    """Three minutes of a multi-model endpoint's figures (and one from two hours ago)."""
    write(endpoint, "Invocations", "Sum", {4: 10 * scale, 3: 10 * scale, 2: 20 * scale})
    write(endpoint, "ModelCacheHit", "SampleCount", {4: 10 * scale, 3: 10 * scale, 2: 20 * scale})
    write(endpoint, "ModelCacheHit", "Sum", {4: 9 * scale, 3: 8 * scale, 2: 18 * scale})
    write(endpoint, "ModelLoadingWaitTime", "Sum", {4: 3_000_000, 2: 1_000_000})
    write(endpoint, "ModelLoadingWaitTime", "SampleCount", {4: 2, 2: 2})
    write(endpoint, "ModelLoadingTime", "Sum", {4: 4_200_000})
    write(endpoint, "ModelLoadingTime", "SampleCount", {4: 2})
    write(endpoint, "ModelDownloadingTime", "Sum", {4: 900_000})
    write(endpoint, "ModelDownloadingTime", "SampleCount", {4: 2})
    write(endpoint, "ModelLatency", "Sum", {4: 250_000, 3: 250_000, 2: 500_000})
    write(endpoint, "ModelLatency", "SampleCount", {4: 10, 3: 10, 2: 20})
    write(endpoint, "LoadedModelCount", "Sum", {4: 40, 2: 42})
    write(endpoint, "CPUUtilization", "Average", {4: 120.0, 2: 150.0})
    write(endpoint, "MemoryUtilization", "Average", {4: 60.0, 2: 64.0})
    # Outside the hour: in the trends, not in the figures.
    write(endpoint, "Invocations", "Sum", {120: 1000})


def member_of(tenant):
    user = UserFactory(username=f"{tenant.slug}-engineer")
    Membership.objects.create(user=user, tenant=tenant)
    return user


def figure(body: str, testid: str) -> str:
    marker = f'data-testid="{testid}" data-value="'
    assert marker in body, testid
    return body.split(marker, 1)[1].split('"', 1)[0]


def test_a_multi_model_endpoints_page_shows_its_cold_start_figures(staff_client):
    endpoint = sagemaker_endpoint("tml-mme-a")
    cold_starts(endpoint)

    response = staff_client.get(reverse("dashboard:endpoint", args=[endpoint.name]))

    body = response.content.decode()
    assert response.status_code == 200
    figures = response.context["cloud"]["figures"]
    assert figures["invocations"] == 40
    assert (figures["cache_hit_rate"], figures["cache_misses"]) == (0.875, 5)
    assert figures["loading_wait_ms"] == 1000.0 and figures["loading_wait_count"] == 4
    assert (figures["loading_ms"], figures["loading_count"]) == (2100.0, 2)
    assert figures["downloading_ms"] == 450.0
    assert figures["model_latency_ms"] == 25.0
    assert figures["loaded_models"] == 42  # the latest minute, all instances
    assert figures["cpu_utilization"] == 1.5 and figures["memory_utilization"] == 0.64
    assert figure(body, "cloud-cache-hit-rate") == "0.875" and "87.5 %" in body
    assert figure(body, "cloud-cache-misses") == "5" and "misses of 40 requests" in body
    assert figure(body, "cloud-loading-wait") == "1000.0" and "1,000 ms" in body
    assert figure(body, "cloud-loaded-models") == "42.0"
    assert figure(body, "cloud-cpu-utilization") == "1.5" and "150 %" in body
    assert 'data-testid="cloud-gpu-memory-utilization"' not in body  # no GPUs on ml.m5
    for chart in ("cloud-traffic", "cloud-times", "cloud-utilization"):
        svg = body.split(f'data-testid="figure-{chart}">', 1)[1].split("</figure>", 1)[0]
        root = ET.fromstring(svg.strip())
        assert root.find(f"{SVG}title").text.startswith("CloudWatch")
    # The two-hour-old minute is in the trend, not in the hour's figures.
    trend = response.context["cloud"]["trends"]["invocations_per_minute"]
    assert sum(value for _, value in trend) * 5 == pytest.approx(1040)


def test_a_local_endpoints_page_shows_no_cloud_figures(staff_client):
    endpoint = EndpointFactory(name="local-a")
    # Even a row that should not be there is not shown for a local endpoint.
    write(endpoint, "Invocations", "Sum", {2: 5})

    response = staff_client.get(reverse("dashboard:endpoint", args=[endpoint.name]))

    assert response.context["cloud"] is None
    assert 'data-testid="endpoint-cloud-metrics"' not in response.content.decode()


def test_a_sagemaker_endpoint_without_figures_yet_says_so_and_names_a_read_error(staff_client):
    endpoint = sagemaker_endpoint("tml-mme-new")
    with recorded_pass(CLOUD_METRICS) as record:
        record.errors = 1
        record.summary = {"errors": {"tml-mme-new": "GetMetricData: AccessDenied: not allowed"}}

    body = staff_client.get(reverse("dashboard:endpoint", args=[endpoint.name])).content.decode()

    assert 'data-testid="no-cloud-metrics"' in body
    assert "CloudWatch pass last ran" in body
    assert "GetMetricData: AccessDenied: not allowed" in body


def test_an_inference_component_endpoint_lists_its_busiest_components(staff_client):
    endpoint = sagemaker_endpoint("tml-ic-a", mode=Endpoint.Mode.INFERENCE_COMPONENT, gpu=True)
    write(endpoint, "GPUMemoryUtilization", "Average", {2: 70.0})
    for name, invocations in (("tml-quiet", 1), ("tml-busy", 30), ("tml-middle", 9)):
        write(endpoint, "Invocations", "Sum", {2: invocations}, component=name)
        write(endpoint, "ModelLatency", "Sum", {2: invocations * 40_000}, component=name)
        write(endpoint, "ModelLatency", "SampleCount", {2: invocations}, component=name)
        write(endpoint, "GPUMemoryUtilizationNormalized", "Average", {2: 50.0}, component=name)

    response = staff_client.get(reverse("dashboard:endpoint", args=[endpoint.name]))

    cloud = response.context["cloud"]
    assert [c["component"] for c in cloud["components"]] == ["tml-busy", "tml-middle", "tml-quiet"]
    assert cloud["components"][0]["model_latency_ms"] == 40.0
    assert cloud["components"][0]["gpu_memory_utilization"] == 0.5
    body = response.content.decode()
    assert 'data-testid="cloud-component-tml-busy"' in body
    assert figure(body, "cloud-gpu-memory-utilization") == "0.7"
    assert 'data-testid="cloud-cache-hit-rate"' not in body  # not a multi-model endpoint


def test_the_cloud_figures_refresh_alone_under_htmx(staff_client):
    endpoint = sagemaker_endpoint("tml-mme-a")
    cold_starts(endpoint)

    part = staff_client.get(
        reverse("dashboard:endpoint", args=[endpoint.name]), **htmx("endpoint-cloud-metrics")
    ).content.decode()
    overview = staff_client.get(
        reverse("dashboard:overview"), **htmx("overview-cloud-metrics")
    ).content.decode()

    for body, section in ((part, "endpoint-cloud-metrics"), (overview, "overview-cloud-metrics")):
        assert body.lstrip().startswith("<section") and "<html" not in body
        assert f'id="{section}"' in body and 'hx-trigger="every 60s"' in body


def test_the_overview_shows_the_fleets_cloud_figures_and_the_endpoints_missing_most(
    staff_client,
):
    busy = sagemaker_endpoint("tml-mme-busy")
    cold_starts(busy, scale=2.0)  # 80 requests, 70 hits: 10 misses
    calm = sagemaker_endpoint("tml-mme-calm")
    cold_starts(calm)  # 40 requests, 35 hits: 5 misses
    dedicated = sagemaker_endpoint("ded-acme-intents", mode=Endpoint.Mode.DEDICATED)
    write(dedicated, "Invocations", "Sum", {2: 500})
    write(dedicated, "ModelLatency", "Sum", {2: 500 * 10_000})
    write(dedicated, "ModelLatency", "SampleCount", {2: 500})

    response = staff_client.get(reverse("dashboard:overview"))
    member_client = Client()
    member_client.force_login(member_of(TenantFactory(slug="acme")))
    member = member_client.get(reverse("dashboard:overview"))

    cloud = response.context["cloud"]
    assert cloud["endpoints"] == 3
    assert cloud["figures"]["cache_hit_rate"] == round(105 / 120, 4)
    assert cloud["figures"]["cache_misses"] == 15
    assert cloud["figures"]["loaded_models"] == 84  # each endpoint's latest minute, added up
    assert cloud["figures"]["invocations"] == 80 + 40 + 500
    assert [row["name"] for row in cloud["rows"]] == [
        "tml-mme-busy",
        "tml-mme-calm",
        "ded-acme-intents",
    ]
    body = response.content.decode()
    assert figure(body, "fleet-cloud-cache-misses") == "15"
    assert figure(body, "cloud-endpoint-tml-mme-busy-cache-hit-rate") == "0.875"
    assert 'data-testid="figure-cloud-fleet-traffic"' in body
    assert member.context["cloud"] is None
    assert 'data-testid="overview-cloud-metrics"' not in member.content.decode()


def test_a_fleet_without_sagemaker_endpoints_shows_no_cloud_section(staff_client):
    EndpointFactory(name="local-a")

    response = staff_client.get(reverse("dashboard:overview"))

    assert response.context["cloud"] is None
    assert 'data-testid="overview-cloud-metrics"' not in response.content.decode()


def test_the_pages_make_as_many_queries_for_many_endpoints_and_minutes(
    staff_client, django_assert_max_num_queries
):
    first = sagemaker_endpoint("tml-mme-0")
    cold_starts(first)
    components = sagemaker_endpoint("tml-ic-0", mode=Endpoint.Mode.INFERENCE_COMPONENT)
    write(components, "Invocations", "Sum", {2: 3}, component="tml-acme-intents")
    pages = {
        "overview": reverse("dashboard:overview"),
        "endpoint": reverse("dashboard:endpoint", args=[first.name]),
        "components": reverse("dashboard:endpoint", args=[components.name]),
    }

    def queries() -> dict[str, int]:
        counts = {}
        for name, url in pages.items():
            with django_assert_max_num_queries(30) as captured:
                assert staff_client.get(url).status_code == 200
            counts[name] = len(captured)
        return counts

    small = queries()
    # Thirty more endpoints, each with six hours of minutes, and a hundred more components.
    many = [sagemaker_endpoint(f"tml-mme-{n}") for n in range(1, 31)]
    CloudMetricMinute.objects.bulk_create(
        CloudMetricMinute(
            endpoint=endpoint,
            metric=metric,
            statistic=statistic,
            minute=minute(back),
            value=1.0,
        )
        for endpoint in many
        for back in range(0, 360, 6)
        for metric, statistic in (
            ("Invocations", "Sum"),
            ("ModelCacheHit", "SampleCount"),
            ("LoadedModelCount", "Sum"),
        )
    )
    for number in range(100):
        write(components, "Invocations", "Sum", {2: number}, component=f"tml-t{number}-intents")

    large = queries()

    assert large == small
    with django_assert_max_num_queries(small["overview"]):
        staff_client.get(pages["overview"], **htmx("overview-cloud-metrics"))
