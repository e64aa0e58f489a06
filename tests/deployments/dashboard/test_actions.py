"""The deploy, promote and roll-back buttons call the API's services; errors become messages
(under htmx: the models partial with the message, answered 422 so htmx swaps it in place)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from deployments.models import Deployment
from tests.deployments.dashboard.conftest import htmx
from tests.factories import ModelVersionFactory


def test_deploy_button_records_the_deployment_and_queues_the_rollout(
    staff_client, fleet, django_capture_on_commit_callbacks
):
    fleet.acme_model.active_version = fleet.acme_v1
    fleet.acme_model.save()
    url = reverse("dashboard:deploy", args=["acme", "intents"])

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = staff_client.post(url, {"mode": "mme", "replicas": "1"}, follow=True)

    deployment = Deployment.objects.get(model=fleet.acme_model)
    assert deployment.status == Deployment.Status.ROLLING_OUT
    assert deployment.target_version == fleet.acme_v1
    assert len(queued) == 1  # the rollout task, sent only after commit
    body = response.content.decode()
    assert "rollout of v1 queued" in body
    assert 'data-testid="deployment-status-intents" data-status="rolling_out"' in body


def test_deploy_with_htmx_returns_the_models_partial_with_its_message(staff_client, fleet):
    fleet.acme_model.active_version = fleet.acme_v1
    fleet.acme_model.save()

    response = staff_client.post(
        reverse("dashboard:deploy", args=["acme", "intents"]), {"version": "1"}, **htmx()
    )

    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert 'id="tenant-models"' in body and "rollout of v1 queued" in body
    assert 'hx-trigger="every 5s"' in body  # it polls while the rollout runs


def test_deploy_without_an_active_version_shows_the_reason(staff_client, fleet):
    response = staff_client.post(reverse("dashboard:deploy", args=["acme", "intents"]), follow=True)

    assert response.status_code == 200
    assert "has no active version" in response.content.decode()
    assert not Deployment.objects.filter(model=fleet.acme_model).exists()


def test_deploy_in_a_mode_the_backend_lacks_shows_the_reason(staff_client, fleet):
    fleet.acme_model.active_version = fleet.acme_v1
    fleet.acme_model.save()

    response = staff_client.post(
        reverse("dashboard:deploy", args=["acme", "intents"]),
        {"mode": "inference-component"},
        follow=True,
    )

    assert "needs DEPLOY_BACKEND=sagemaker" in response.content.decode()
    assert not Deployment.objects.filter(model=fleet.acme_model).exists()


def test_deploy_form_errors_are_messages(staff_client, fleet):
    response = staff_client.post(
        reverse("dashboard:deploy", args=["acme", "intents"]), {"replicas": "99"}, follow=True
    )
    assert "replicas:" in response.content.decode()
    assert not Deployment.objects.exists()


def test_promote_button_makes_the_version_active(member_client, fleet):
    response = member_client.post(
        reverse("dashboard:promote", args=["acme", "intents", 1]), follow=True
    )

    fleet.acme_model.refresh_from_db()
    assert fleet.acme_model.active_version == fleet.acme_v1
    assert "is now the active version" in response.content.decode()


def test_promote_a_version_that_is_not_ready_shows_the_reason(staff_client, fleet):
    ModelVersionFactory(model=fleet.acme_model, number=2, status="packaging")

    response = staff_client.post(
        reverse("dashboard:promote", args=["acme", "intents", 2]), follow=True
    )

    assert "only a ready version can be promoted" in response.content.decode()
    fleet.acme_model.refresh_from_db()
    assert fleet.acme_model.active_version is None


def test_promote_an_unknown_version_shows_the_reason(staff_client, fleet):
    response = staff_client.post(
        reverse("dashboard:promote", args=["acme", "intents", 9]), follow=True
    )
    assert "No version 9" in response.content.decode()


def test_rollback_without_an_earlier_deployment_shows_the_reason(staff_client, fleet):
    response = staff_client.post(
        reverse("dashboard:rollback", args=["acme", "intents"]), follow=True
    )

    assert response.status_code == 200
    assert "no earlier deployed version to roll back to" in response.content.decode()


def test_rollback_button_requests_the_previous_version(
    staff_client, fleet, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    fleet.acme_v1.promoted_at = now - timedelta(days=1)
    fleet.acme_v1.save()
    v2 = ModelVersionFactory(
        model=fleet.acme_model, number=2, package_uri="/tmp/v2.tar.gz", promoted_at=now
    )
    fleet.acme_model.active_version = v2
    fleet.acme_model.save()
    Deployment.objects.create(
        model=fleet.acme_model,
        status=Deployment.Status.LIVE,
        live_version=v2,
        previous_version=fleet.acme_v1,
        endpoint=fleet.endpoint,
    )

    with django_capture_on_commit_callbacks(execute=False):
        response = staff_client.post(
            reverse("dashboard:rollback", args=["acme", "intents"]), follow=True
        )

    deployment = Deployment.objects.get(model=fleet.acme_model)
    assert deployment.status == Deployment.Status.ROLLING_OUT
    assert deployment.target_version == fleet.acme_v1
    assert "rolling back to v1" in response.content.decode()


def test_buttons_are_post_only(staff_client, fleet):
    assert (
        staff_client.get(reverse("dashboard:deploy", args=["acme", "intents"])).status_code == 405
    )


def test_csrf_is_enforced_on_every_form(staff_user, fleet):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    fleet.acme_model.active_version = fleet.acme_v1
    fleet.acme_model.save()
    posts = [
        (reverse("dashboard:deploy", args=["acme", "intents"]), {}),
        (reverse("dashboard:promote", args=["acme", "intents", 1]), {}),
        (reverse("dashboard:rollback", args=["acme", "intents"]), {}),
        (
            reverse("dashboard:what-if"),
            {"instance_type": "ml.m5.xlarge", "target_utilization": "0.8", "replicas": "1"},
        ),
        (reverse("logout"), {}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    assert not Deployment.objects.exists()

    page = client.get(reverse("dashboard:tenant", args=["acme"]))
    assert page.content.decode().count("csrfmiddlewaretoken") >= 3
    token = client.cookies["csrftoken"].value
    response = client.post(
        reverse("dashboard:deploy", args=["acme", "intents"]), {"csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert Deployment.objects.filter(model=fleet.acme_model).exists()


def test_retire_button_stops_serving_and_queues_the_unloading(
    staff_client, fleet, django_capture_on_commit_callbacks
):
    Deployment.objects.create(
        model=fleet.acme_model,
        status=Deployment.Status.LIVE,
        live_version=fleet.acme_v1,
        endpoint=fleet.endpoint,
    )

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = staff_client.post(
            reverse("dashboard:retire", args=["acme", "intents"]), follow=True
        )

    deployment = Deployment.objects.get(model=fleet.acme_model)
    assert deployment.status == Deployment.Status.RETIRED and deployment.live_version is None
    assert len(queued) == 1  # the unloading task
    body = response.content.decode()
    assert "retired; its copies are being unloaded" in body
    assert 'data-testid="retire-button-intents"' not in body


def test_retire_without_a_deployment_shows_the_reason(staff_client, fleet):
    response = staff_client.post(reverse("dashboard:retire", args=["acme", "intents"]), follow=True)

    assert response.status_code == 200
    assert "has not been deployed" in response.content.decode()


@pytest.mark.parametrize(
    ("action", "args", "data", "reason"),
    [
        ("deploy", ["acme", "intents"], {}, "has no active version"),
        ("deploy", ["acme", "intents"], {"replicas": "99"}, "replicas:"),
        ("promote", ["acme", "intents", 9], {}, "No version 9"),
        ("rollback", ["acme", "intents"], {}, "no earlier deployed version to roll back to"),
        ("retire", ["acme", "intents"], {}, "has not been deployed"),
    ],
)
def test_a_refused_button_under_htmx_answers_422_with_the_models_and_the_reason(
    staff_client, fleet, action, args, data, reason
):
    response = staff_client.post(reverse(f"dashboard:{action}", args=args), data, **htmx())

    body = response.content.decode()
    # 422 is the status the dashboard's htmx configuration swaps, so the reason shows in place.
    assert response.status_code == 422
    assert body.lstrip().startswith('<section id="tenant-models"') and "<html" not in body
    assert 'data-testid="message-error"' in body and reason in body
    assert not Deployment.objects.filter(model=fleet.acme_model).exists()


def test_a_refused_button_without_javascript_goes_back_to_the_page_with_the_reason(
    staff_client, fleet
):
    response = staff_client.post(reverse("dashboard:deploy", args=["acme", "intents"]))

    assert response.status_code == 302
    page = staff_client.get(response["Location"]).content.decode()
    assert 'data-testid="message-error"' in page and "has no active version" in page


def test_a_deploy_in_an_unknown_mode_names_the_field_without_echoing_it(staff_client, fleet):
    fleet.acme_model.active_version = fleet.acme_v1
    fleet.acme_model.save()

    response = staff_client.post(
        reverse("dashboard:deploy", args=["acme", "intents"]), {"mode": "warp-drive"}, **htmx()
    )

    body = response.content.decode()
    assert response.status_code == 422
    assert "mode: Choose one of the listed modes." in body
    assert "warp-drive" not in body
    assert not Deployment.objects.exists()


def test_a_rollouts_poll_answers_each_models_status_out_of_band_and_never_its_deploy_form(
    staff_client, fleet
):
    fleet.acme_model.active_version = fleet.acme_v1
    fleet.acme_model.save()
    deployment = Deployment.objects.create(
        model=fleet.acme_model,
        status=Deployment.Status.ROLLING_OUT,
        target_version=fleet.acme_v1,
        endpoint=fleet.endpoint,
    )
    url = reverse("dashboard:tenant", args=["acme"])

    page = staff_client.get(url).content.decode()
    rolling = staff_client.get(url, **htmx("tenant-models-status")).content.decode()
    Deployment.objects.filter(pk=deployment.pk).update(
        status=Deployment.Status.LIVE, live_version=fleet.acme_v1, target_version=None
    )
    settled = staff_client.get(url, **htmx("tenant-models-status")).content.decode()

    # The page polls with a small element, not the section holding the deploy forms.
    assert '<section id="tenant-models" data-testid="tenant-models">' in page
    assert 'id="tenant-models-status"' in page and 'hx-trigger="every 5s"' in page
    assert rolling.lstrip().startswith('<p id="tenant-models-status"')
    assert 'hx-trigger="every 5s"' in rolling
    for part in ("model-status-intents", "model-actions-intents", "versions-intents"):
        assert f'id="{part}"' in rolling and f'id="{part}"' in settled
    assert rolling.count('hx-swap-oob="true"') == 3
    assert 'data-status="rolling_out"' in rolling
    assert "deploy-form-intents" not in rolling and "deploy-form-intents" not in settled
    # Once the rollout is over the answer stops the polling and shows the model live.
    assert 'data-status="live"' in settled and "hx-trigger" not in settled
    assert 'data-testid="retire-button-intents"' in settled


def test_a_tenant_page_without_a_rollout_does_not_poll_its_models(staff_client, fleet):
    page = staff_client.get(reverse("dashboard:tenant", args=["acme"])).content.decode()

    assert 'id="tenant-models-status"' in page
    assert 'hx-trigger="every 5s"' not in page
