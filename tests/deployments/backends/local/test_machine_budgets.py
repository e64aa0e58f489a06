"""Local instances share the machine's real memory: started and stopped through the platform's
own paths on real Triton servers, with the machine's memory read from files the test writes
(``LOCAL_MACHINE_ROOT``) so it can be an 8 GB laptop or a container with a 6 GB limit.

Expected budgets are worked out from the platform memory each recompute recorded (what the
platform's processes and Triton baselines held at that moment), so they hold whatever else runs
on the machine the tests run on.
"""

from __future__ import annotations

import pytest

from deployments.backends.local import runtime
from deployments.backends.local.budgets import BUDGET_EVENT
from deployments.models import Endpoint, Event, Instance, InstanceType, Placement
from deployments.placement.budgets import FLOOR_MB
from tests.admin_support import admin_url
from tests.deployments.backends.local.machine_support import GIB, fake_machine
from tests.deployments.backends.local.test_runtime import TICKETS, loaded_names, packaged

MB = 1024 * 1024
RESERVE_MB = 2048


@pytest.fixture
def machine(db, local_rollouts, settings, tmp_path):
    """Point the memory reading at a fake machine of the given size (and cgroup limit)."""
    settings.TENANTML_LOCAL_MEMORY_RESERVE_MB = RESERVE_MB
    settings.TENANTML_LOCAL_MEMORY_BUDGET_MB = 0

    def make(total_gib: int, *, cgroup_gib: int | None = None):
        files = {"memory.max": f"{cgroup_gib * GIB}\n"} if cgroup_gib else {"memory.max": "max\n"}
        root = fake_machine(tmp_path / "machine", total_kb=total_gib * 1024 * 1024, files=files)
        settings.TENANTML_LOCAL_MACHINE_ROOT = str(root)
        return total_gib * 1024 if cgroup_gib is None else min(total_gib, cgroup_gib) * 1024

    return make


def budgets(instances) -> list[int]:
    return [Instance.objects.get(pk=i.pk).memory_budget_mb for i in instances]


def last_sharing(instance) -> dict:
    """The data of the last recompute that changed this instance's budget."""
    return (
        Event.objects.filter(kind=BUDGET_EVENT, instance=instance, data__has_key="platform_mb")
        .latest("id")
        .data
    )


def default_instances() -> list[Instance]:
    """One instance each of the intent and embedding endpoints (the figures below are worked out
    for two; the reply endpoint, a default too, is left out)."""
    runtime.ensure_default_local_endpoints(actor="test")
    Endpoint.objects.exclude(model_kind__in=("intent-classifier", "embedding")).delete()
    started = runtime.start_local_endpoints(actor="test")
    assert len(started) == 2
    return started


def test_two_default_endpoints_on_an_8_gb_machine_get_no_more_than_it_has(machine):
    limit_mb = machine(8)

    first, second = default_instances()

    shared = last_sharing(second)
    assert shared["total_mb"] == 8192 and shared["instances"] == 2
    assert shared["platform_mb"] >= RESERVE_MB  # the platform's own processes come first
    expected = int((limit_mb - shared["platform_mb"]) / 2 * 0.8)
    assert budgets([first, second]) == [expected, expected]
    # What ``up`` prints for each instance started is its budget once both have started.
    assert [first.memory_budget_mb, second.memory_budget_mb] == [expected, expected]
    assert sum(budgets([first, second])) <= limit_mb - RESERVE_MB
    # The old fixed figure (80 % of the catalog's 16 GB each) was 25.6 GB on this machine.
    assert expected < 8192 * 0.8 / 2


def test_a_cgroup_limit_below_total_memory_wins(machine):
    limit_mb = machine(24, cgroup_gib=6)
    endpoint = runtime.ensure_default_local_endpoints(actor="test")[0]

    instance = runtime.start_local_instance(endpoint=endpoint, actor="test")

    started = Event.objects.get(kind=BUDGET_EVENT, instance=instance).data
    assert limit_mb == 6144 and started["operator_mb"] is None
    assert budgets([instance]) == [started["budget_mb"]]
    # Sized from the 6 GB limit (less the platform), not from the 24 GB the machine has.
    assert (6144 - RESERVE_MB - 1000) * 0.8 < started["budget_mb"] <= (6144 - RESERVE_MB) * 0.8


def test_a_third_instance_shrinks_the_others_and_stopping_it_grows_them_back(machine):
    limit_mb = machine(8)
    first, second = default_instances()
    before = budgets([first, second])

    third = runtime.start_local_instance(endpoint=second.endpoint, actor="test")

    shared = last_sharing(first)
    assert (
        shared["instances"] == 3
        and "is starting"
        in Event.objects.filter(kind=BUDGET_EVENT, instance=first).latest("id").message
    )
    third_share = int((limit_mb - shared["platform_mb"]) / 3 * 0.8)
    assert budgets([first, second, third]) == [third_share] * 3
    assert third_share < before[0]
    assert sum(budgets([first, second, third])) <= limit_mb - RESERVE_MB

    runtime.stop_local_instance(instance=third, actor="test", reason="scaled in")

    shared = last_sharing(first)
    assert shared["instances"] == 2
    grown = int((limit_mb - shared["platform_mb"]) / 2 * 0.8)
    assert budgets([first, second]) == [grown, grown]
    assert grown > third_share
    assert abs(grown - before[0]) < 100  # the same split; Triton baselines move a little


def test_an_override_above_the_machine_is_capped_and_recorded(machine, settings):
    limit_mb = machine(8)
    settings.TENANTML_LOCAL_MEMORY_BUDGET_MB = 64 * 1024

    first, second = default_instances()

    shared = last_sharing(second)
    assert shared["override_mb"] == 64 * 1024
    assert shared["pool_mb"] == shared["available_mb"] == limit_mb - shared["platform_mb"]
    # The operator's total is the budget itself: no utilization target on top.
    assert budgets([first, second]) == [shared["pool_mb"] // 2] * 2
    assert sum(budgets([first, second])) <= limit_mb - RESERVE_MB
    capped = Event.objects.filter(kind="instance.memory_budget_capped").latest("id")
    assert capped.severity == "warning"
    assert "LOCAL_MEMORY_BUDGET_MB asks for 65,536 MB" in capped.message
    assert "capped" in capped.message


def edit_in_admin(admin_client, capture, instance, budget_mb: int) -> None:
    """Change an instance's budget on its admin page, as an operator does (and let what runs
    once the edit commits run)."""
    with capture(execute=True):
        response = admin_client.post(
            admin_url(Instance, "change", instance.pk), {"memory_budget_mb": budget_mb}
        )
    assert response.status_code == 302


def test_an_admin_edit_survives_a_restart_and_other_starts_where_it_fits(
    machine, admin_client, django_capture_on_commit_callbacks
):
    limit_mb = machine(24)
    edited, other = default_instances()

    edit_in_admin(admin_client, django_capture_on_commit_callbacks, edited, 3000)

    assert budgets([edited]) == [3000]
    edit = Event.objects.filter(kind=BUDGET_EVENT, instance=edited).latest("id")
    assert edit.data["operator_mb"] == 3000 and "operator's 3,000 MB kept" in edit.message
    assert edit.actor.startswith("admin:")

    runtime.restart_local_instance(instance=edited, actor="test", reason="did not answer")
    third = runtime.start_local_instance(endpoint=other.endpoint, actor="test")

    shared = last_sharing(other)
    assert budgets([edited]) == [3000]
    rest = int((limit_mb - shared["platform_mb"] - 3000) / 2 * 0.8)
    assert budgets([other, third]) == [rest, rest]

    runtime.stop_local_instance(instance=third, actor="test", reason="scaled in")

    assert budgets([edited]) == [3000]
    shared = last_sharing(other)
    assert budgets([other]) == [int((limit_mb - shared["platform_mb"] - 3000) * 0.8)]


def test_an_admin_edit_above_the_machine_is_lowered_at_once_and_never_raised_above_it(
    machine, admin_client, django_capture_on_commit_callbacks
):
    limit_mb = machine(8)
    edited, other = default_instances()

    edit_in_admin(admin_client, django_capture_on_commit_callbacks, edited, 100_000)

    shared = last_sharing(edited)
    assert budgets([edited]) == [limit_mb - shared["platform_mb"] - FLOOR_MB]
    lowered = Event.objects.filter(kind=BUDGET_EVENT, instance=edited).latest("id")
    assert lowered.severity == "warning" and lowered.data["operator_mb"] == 100_000
    assert "do not fit; lowered" in lowered.message
    assert sum(budgets([edited, other])) <= limit_mb - RESERVE_MB

    third = runtime.start_local_instance(endpoint=other.endpoint, actor="test")

    shared = last_sharing(edited)
    assert budgets([edited]) == [limit_mb - shared["platform_mb"] - 2 * FLOOR_MB]
    assert sum(budgets([edited, other, third])) <= limit_mb - RESERVE_MB

    edit_in_admin(admin_client, django_capture_on_commit_callbacks, edited, 1000)

    # Room for 1,000 MB: the operator's figure exactly, the others sharing the rest.
    assert budgets([edited]) == [1000]


def test_a_budget_shrunk_below_what_is_resident_evicts_unpinned_models(
    machine, settings, intent_artifact
):
    machine(24)
    settings.TENANTML_LOCAL_MEMORY_BUDGET_MB = 10_000
    endpoints = runtime.ensure_default_local_endpoints(actor="test")
    intents = next(e for e in endpoints if e.model_kind == "intent-classifier")
    instance = runtime.start_local_instance(endpoint=intents, actor="test")
    pinned = runtime.place_on_instance(
        version=packaged(intent_artifact), instance=instance, actor="test", pinned=True
    )
    evictable = runtime.place_on_instance(
        version=packaged(intent_artifact), instance=instance, actor="test"
    )
    for placement in (pinned, evictable):
        runtime.invoke_placement(placement=placement, inputs=TICKETS[:1])
    pinned_mb = Placement.objects.get(pk=pinned.pk).host_memory_mb
    evictable_mb = Placement.objects.get(pk=evictable.pk).host_memory_mb
    # Two instances will split this equally: each gets room for the pinned model and half the
    # other.
    settings.TENANTML_LOCAL_MEMORY_BUDGET_MB = 2 * int(pinned_mb + evictable_mb / 2)

    runtime.start_local_instance(endpoint=next(e for e in endpoints if e != intents), actor="test")

    assert budgets([instance]) == [int(pinned_mb + evictable_mb / 2)]
    assert Placement.objects.get(pk=pinned.pk).actual_state == Placement.ActualState.LOADED
    assert Placement.objects.get(pk=evictable.pk).actual_state == Placement.ActualState.EVICTED
    client = runtime.client_for(instance)
    names = loaded_names(client)
    assert pinned.version.triton_model_name in names
    assert evictable.version.triton_model_name not in names
    assert Event.objects.filter(kind="placement.evicted", version=evictable.version).exists()


def test_a_local_endpoint_is_the_only_kind_whose_instances_share_the_machine(machine):
    # A SageMaker endpoint's instances are AWS hosts: they take nothing from this machine.
    limit_mb = machine(8)
    sagemaker = Endpoint.objects.create(
        name="sm-intents",
        backend=Endpoint.Backend.SAGEMAKER,
        instance_type=InstanceType.objects.get(name="ml.m5.xlarge"),
    )
    Instance.objects.create(endpoint=sagemaker, ordinal=0, status="healthy", memory_budget_mb=1)
    endpoint = runtime.ensure_default_local_endpoints(actor="test")[0]

    instance = runtime.start_local_instance(endpoint=endpoint, actor="test")

    started = Event.objects.get(kind=BUDGET_EVENT, instance=instance).data["budget_mb"]
    assert budgets([instance]) == [started]
    # The whole 8 GB less the platform, for one instance: nothing went to the SageMaker host.
    assert (limit_mb - RESERVE_MB - 1000) * 0.8 < started <= (limit_mb - RESERVE_MB) * 0.8
