"""How the dashboard's live parts behave in a real browser (Debian's Chromium, Playwright):
a refused form's errors shown in place under htmx, one small live region naming the figures a
refresh changed, a deploy form's choices surviving a rollout's polling, and polling that pauses
while the tab is hidden and refreshes at once when it is shown again."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from deployments.models import Deployment
from tests.browser.test_dashboard import figure, log_in
from tests.factories import InstanceFactory, ModelVersionFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Headless Chromium never hides a page (a second tab or a minimised window stays "visible"), so
# the tests hide it as a browser does for a background tab: document.visibilityState turns
# "hidden" and a visibilitychange event fires; showing it removes the override.
HIDE_TAB = """() => {
  Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
  Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW_TAB = """() => {
  delete document.visibilityState;
  delete document.hidden;
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def record_refreshes(page) -> list[tuple[float, str]]:
    """(time, HX-Target) of every htmx request the page sends from now on."""
    sent: list[tuple[float, str]] = []

    def seen(request) -> None:
        if request.headers.get("hx-request") == "true":
            sent.append((time.monotonic(), request.headers.get("hx-target", "")))

    page.on("request", seen)
    return sent


def test_a_what_if_the_server_refuses_shows_its_error_in_place_under_htmx(
    page, live_server, staff_user, fleet
):
    # A model too big for the smallest type: valid input the browser lets through, refused
    # by the server (it fits no instance of that type).
    fleet.acme_v1.host_memory_mb = 20000.0
    fleet.acme_v1.save()
    fleet.acme_placement.host_memory_mb = None
    fleet.acme_placement.save()
    log_in(page, live_server, staff_user)
    page.goto(f"{live_server.url}{reverse('dashboard:what-if')}")
    page.evaluate("window.loadedOnce = 'yes'")  # gone if the page reloads
    form = page.get_by_test_id("what-if-form")
    form.locator("select[name=instance_type]").select_option("ml.c5.xlarge")

    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_test_id("what-if-submit").click()

    assert answer.value.status == 422
    assert answer.value.request.headers.get("hx-request") == "true"  # htmx sent it
    error = page.get_by_test_id("what-if-error-instance_type")
    error.wait_for()
    assert "fits no instance type" in error.inner_text()
    assert page.evaluate("window.loadedOnce") == "yes"  # swapped in place, no reload
    # The form keeps the user's choice, ready to pick another type.
    assert form.locator("select[name=instance_type]").input_value() == "ml.c5.xlarge"


def test_the_live_region_names_only_the_figures_a_refresh_changed(
    page, live_server, staff_user, fleet
):
    log_in(page, live_server, staff_user)
    page.goto(f"{live_server.url}{reverse('dashboard:overview')}")
    announcer = page.get_by_test_id("live-announcer")
    assert page.get_by_test_id("overview-figures").get_attribute("aria-live") is None
    assert page.locator("[aria-live]").count() == 1  # the announcer is the only live region
    assert announcer.get_attribute("aria-live") == "polite"
    assert announcer.text_content() == ""
    assert figure(page, "fleet-cost-per-hour") == pytest.approx(0.23)

    # A second instance starts: the fleet now costs twice as much an hour.
    InstanceFactory(endpoint=fleet.endpoint, ordinal=1, memory_budget_mb=13107)

    page.wait_for_function(
        "document.getElementById('live-announcer').textContent.includes('Cost per hour now')",
        timeout=15_000,
    )
    said = announcer.text_content()
    assert "Cost per hour now $0.46" in said
    assert "Cost per month now $335.80" in said
    # Figures that did not change are not read again.
    for unchanged in ("Models loaded", "Cold starts", "Invocations", "p99 latency"):
        assert unchanged not in said
    assert figure(page, "fleet-cost-per-hour") == pytest.approx(0.46)


def test_a_deploy_forms_choices_survive_the_rollouts_polling(page, live_server, staff_user, fleet):
    ModelVersionFactory(model=fleet.acme_model, number=2, package_uri="/tmp/acme-v2.tar.gz")
    fleet.acme_model.active_version = fleet.acme_v1
    fleet.acme_model.save()
    deployment = Deployment.objects.create(
        model=fleet.acme_model,
        status=Deployment.Status.ROLLING_OUT,
        target_version=fleet.acme_v1,
        endpoint=fleet.endpoint,
    )
    log_in(page, live_server, staff_user)
    page.goto(f"{live_server.url}{reverse('dashboard:tenant', args=['acme'])}")
    assert page.get_by_test_id("deployment-status-intents").get_attribute("data-status") == (
        "rolling_out"
    )
    page.get_by_test_id("deploy-version-intents").select_option("2")
    page.get_by_test_id("deploy-mode-intents").select_option("dedicated")
    page.get_by_test_id("deploy-replicas-intents").fill("3")  # still typing: focus stays here
    page.evaluate("document.getElementById('deploy-version-intents').dataset.untouched = 'yes'")

    # The rollout finishes; the next poll (every 5 s) shows it.
    Deployment.objects.filter(pk=deployment.pk).update(
        status=Deployment.Status.LIVE, live_version=fleet.acme_v1, target_version=None
    )
    page.wait_for_function(
        "document.querySelector('[data-testid=deployment-status-intents]')"
        ".dataset.status === 'live'",
        timeout=15_000,
    )

    assert page.get_by_test_id("deploy-version-intents").input_value() == "2"
    assert page.get_by_test_id("deploy-mode-intents").input_value() == "dedicated"
    assert page.get_by_test_id("deploy-replicas-intents").input_value() == "3"
    assert page.evaluate("document.activeElement.id") == "deploy-replicas-intents"
    # The very same select: the poll did not replace the form and put the choice back.
    version = "document.getElementById('deploy-version-intents').dataset.untouched"
    assert page.evaluate(version) == "yes"
    # The status parts did refresh: the buttons now offer retiring the live model, the
    # live region says so, and the polling stopped with the rollout.
    assert page.get_by_test_id("retire-button-intents").is_visible()
    assert "intents deployment now Live" in page.get_by_test_id("live-announcer").text_content()
    assert page.get_by_test_id("tenant-models-status").get_attribute("hx-trigger") is None


def test_polling_pauses_while_the_tab_is_hidden_and_refreshes_at_once_when_shown(
    page, live_server, staff_user, fleet
):
    log_in(page, live_server, staff_user)
    page.goto(f"{live_server.url}{reverse('dashboard:overview')}")
    refreshes = record_refreshes(page)
    # Polling runs while the tab is visible (every 5 s). The answer is awaited, not only the
    # request: one the server reads after the instance below exists would show its cost.
    with page.expect_response(lambda r: r.request.headers.get("hx-target") == "overview-figures"):
        pass

    page.evaluate(HIDE_TAB)
    hidden_at = time.monotonic()
    InstanceFactory(endpoint=fleet.endpoint, ordinal=1, memory_budget_mb=13107)
    page.wait_for_timeout(7_000)  # more than one 5-second period of the figures' polling

    assert [target for at, target in refreshes if at >= hidden_at] == []
    assert figure(page, "fleet-cost-per-hour") == pytest.approx(0.23)  # nothing fetched

    shown_at = time.monotonic()
    page.evaluate(SHOW_TAB)
    page.wait_for_function(
        "Number(document.getElementById('fleet-cost-per-hour').dataset.value) > 0.4",
        timeout=2_000,  # well under the figures' 5 s: refreshed when shown, not at the next tick
    )

    asked = {target for at, target in refreshes if shown_at <= at <= shown_at + 2}
    # Every live part refreshed at once, the once-a-minute cost tables and charts included.
    assert {"overview-figures", "overview-costs", "overview-charts"} <= asked
    assert figure(page, "fleet-cost-per-hour") == pytest.approx(0.46)
    with page.expect_request(
        lambda r: r.headers.get("hx-target") == "overview-figures", timeout=7_000
    ):
        pass  # and polling goes on
