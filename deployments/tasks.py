"""Celery tasks for deployments: each loads what it needs and calls one service."""

from celery import shared_task

from deployments.exceptions import CapacityExceeded, InstanceUnavailable
from deployments.services import (
    candidates,
    capture,
    cloud_metrics,
    rebalance,
    reconciler,
    retirement,
    rollouts,
    warmups,
)
from deployments.services import fleet as services


@shared_task(name="deployments.tasks.sample_fleet_utilization")
def sample_fleet_utilization() -> int:
    return services.sample_fleet_utilization()


@shared_task(
    name="deployments.tasks.run_rollout",
    autoretry_for=(InstanceUnavailable, CapacityExceeded),
    max_retries=rollouts.MAX_ROLLOUT_ATTEMPTS - 1,
    retry_backoff=5,
)
def run_rollout(deployment_id: int) -> bool:
    return rollouts.run_rollout(deployment_id=deployment_id).switched


@shared_task(name="deployments.tasks.reconcile_fleet")
def reconcile_fleet() -> bool:
    return reconciler.reconcile_fleet().changed


@shared_task(name="deployments.tasks.warm_up_fleet")
def warm_up_fleet() -> dict:
    return warmups.warm_up_fleet().as_dict()


@shared_task(name="deployments.tasks.rebalance_fleet")
def rebalance_fleet(actor: str = rebalance.ACTOR, endpoint_id: int | None = None) -> dict:
    return rebalance.rebalance_fleet(actor=actor, endpoint_id=endpoint_id).as_dict()


@shared_task(name="deployments.tasks.rebalance_if_worth_it")
def rebalance_if_worth_it() -> dict:
    return rebalance.rebalance_fleet(only_if_worth_it=True).as_dict()


@shared_task(name="deployments.tasks.read_cloud_metrics")
def read_cloud_metrics() -> dict:
    return cloud_metrics.read_cloud_metrics().as_dict()


@shared_task(name="deployments.tasks.retire_placements")
def retire_placements(model_id: int) -> int:
    return retirement.retire_placements(model_id=model_id)


@shared_task(name="deployments.tasks.delete_expired_capture")
def delete_expired_capture() -> int:
    return capture.delete_expired_capture()


@shared_task(name="deployments.tasks.evaluate_candidates")
def evaluate_candidates() -> list[dict]:
    return candidates.evaluate_candidates()
