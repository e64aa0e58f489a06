"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a live server:
logging in, the overview's numbers equal the fleet API's, a training job's progress moving on the
page without a reload, a deploy click taking a model live on a real Triton, and every page saved
as a screenshot."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from deployments.models import Deployment
from models_registry.models import TrainingJob
from tests.deployments.dashboard.conftest import PASSWORD
from tests.factories import (
    DatasetFactory,
    TenantFactory,
    TenantModelFactory,
    TrainingJobFactory,
)
from tests.serving_fixtures import packaged_version

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page, live_server, user) -> None:
    page.goto(f"{live_server.url}{reverse('login')}")
    page.get_by_test_id("login-form").locator("input[name=username]").fill(user.username)
    page.get_by_test_id("login-form").locator("input[name=password]").fill(PASSWORD)
    page.get_by_test_id("login-button").click()
    page.wait_for_url(re.compile(r".*/dashboard/.*"))


def figure(page, testid: str) -> float:
    return float(page.get_by_test_id(testid).get_attribute("data-value"))


def test_a_wrong_password_is_refused_and_the_right_one_lets_an_engineer_in(
    page, live_server, staff_user, screenshot
):
    page.goto(f"{live_server.url}/dashboard/")
    assert "/accounts/login/" in page.url  # not logged in: sent to the login page
    page.get_by_test_id("login-form").locator("input[name=username]").fill(staff_user.username)
    page.get_by_test_id("login-form").locator("input[name=password]").fill("wrong")
    page.get_by_test_id("login-button").click()
    assert page.get_by_test_id("login-error").is_visible()
    screenshot(page, "login")

    log_in(page, live_server, staff_user)

    assert page.get_by_test_id("current-user").inner_text().strip().startswith("operator")


def test_overview_numbers_equal_the_fleet_api(page, live_server, staff_user, fleet, screenshot):
    log_in(page, live_server, staff_user)
    page.goto(f"{live_server.url}/dashboard/")

    costs = page.request.get(f"{live_server.url}/api/v1/fleet/costs").json()
    utilization = page.request.get(f"{live_server.url}/api/v1/fleet/utilization").json()

    assert figure(page, "fleet-cost-per-hour") == pytest.approx(costs["usd_per_hour"])
    assert figure(page, "fleet-cost-per-month") == pytest.approx(costs["usd_per_month"])
    assert figure(page, "dedicated-cost-per-hour") == pytest.approx(costs["dedicated_usd_per_hour"])
    assert figure(page, "fleet-savings") == pytest.approx(costs["savings"])
    assert figure(page, "models-loaded") == utilization["models_loaded"]
    assert figure(page, "models-placed") == utilization["models_placed"]
    assert figure(page, "cold-starts-last-hour") == utilization["cold_starts_last_hour"] == 3
    assert figure(page, "invocations-last-hour") == utilization["invocations_last_hour"] == 120
    assert figure(page, "p99-latency") == utilization["p99_latency_ms_last_hour"]
    assert "1 −" in page.get_by_test_id("savings-formula").inner_text()
    assert page.locator("[data-testid=chart-invocations] title").count() >= 1
    screenshot(page, "overview")


def test_a_training_jobs_progress_moves_on_the_page_without_a_reload(
    page, live_server, staff_user, screenshot
):
    model = TenantModelFactory(tenant=TenantFactory(slug="zoomride"), name="intents")
    job = TrainingJobFactory(
        model=model,
        dataset=DatasetFactory(tenant=model.tenant),
        status=TrainingJob.Status.RUNNING,
        progress_pct=10,
    )
    log_in(page, live_server, staff_user)
    page.goto(f"{live_server.url}/dashboard/tenants/zoomride/")
    progress = page.get_by_test_id(f"training-progress-pct-{job.pk}")
    assert "10" in progress.inner_text()
    page.evaluate("window.loadedOnce = 'yes'")  # gone if the page reloads

    TrainingJob.objects.filter(pk=job.pk).update(progress_pct=65)

    page.wait_for_function(
        f"document.querySelector('[data-testid=training-progress-pct-{job.pk}]')"
        ".innerText.includes('65')",
        timeout=15_000,
    )
    assert page.evaluate("window.loadedOnce") == "yes"
    assert page.get_by_test_id(f"training-progress-{job.pk}").get_attribute("value") == "65"
    screenshot(page, "tenant-training")


def test_a_deploy_click_takes_the_model_live(
    page, live_server, staff_user, intent_artifact, local_rollouts, screenshot
):
    model = TenantModelFactory(tenant=TenantFactory(slug="threadline"), name="intents")
    version = packaged_version(model, intent_artifact, 1, promote=True)
    log_in(page, live_server, staff_user)
    page.goto(f"{live_server.url}/dashboard/tenants/threadline/")
    status = page.get_by_test_id("deployment-status-intents")
    assert status.get_attribute("data-status") == "not_deployed"

    page.get_by_test_id("deploy-button-intents").click()

    page.wait_for_function(
        "document.querySelector('[data-testid=deployment-status-intents]')"
        ".dataset.status === 'live'",
        timeout=60_000,
    )
    deployment = Deployment.objects.get(model=model)
    assert deployment.status == Deployment.Status.LIVE and deployment.live_version == version
    page.reload()  # the cost card refreshes on its own every 30 s; show it now
    assert figure(page, "tenant-cost-per-hour") > 0
    screenshot(page, "tenant")

    endpoint = deployment.endpoint.name
    page.goto(f"{live_server.url}/dashboard/endpoints/{endpoint}/")
    placement = deployment.live_version.placements.get()
    segment = page.get_by_test_id(f"segment-{placement.pk}")
    assert float(segment.get_attribute("data-memory-mb")) > 30  # measured when it loaded
    screenshot(page, "endpoint")


def test_the_remaining_pages_render_and_are_saved(page, live_server, staff_user, fleet, screenshot):
    log_in(page, live_server, staff_user)

    page.goto(f"{live_server.url}/dashboard/endpoints/")
    assert page.get_by_test_id("endpoint-row-local-intent-classifier").is_visible()
    screenshot(page, "endpoints")

    page.goto(f"{live_server.url}/dashboard/what-if/")
    form = page.get_by_test_id("what-if-form")
    form.locator("select[name=instance_type]").select_option("ml.m5.xlarge")
    form.locator("input[name=target_utilization]").fill("0.8")
    form.locator("input[name=replicas]").fill("2")
    page.get_by_test_id("what-if-submit").click()
    page.get_by_test_id("what-if-cost-per-hour").wait_for()
    assert float(page.get_by_test_id("what-if-cost-per-hour").get_attribute("data-value")) > 0
    screenshot(page, "what-if")

    page.goto(f"{live_server.url}/dashboard/events/")
    assert page.locator("[data-kind='placement.evicted']").count() == 1
    screenshot(page, "events")

    page.goto(f"{live_server.url}/dashboard/tenants/")
    screenshot(page, "tenants")
