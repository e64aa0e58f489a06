"""Celery tasks for deployments: each loads what it needs and calls one service."""

from celery import shared_task

from deployments import services


@shared_task(name="deployments.tasks.sample_fleet_utilization")
def sample_fleet_utilization() -> int:
    return services.sample_fleet_utilization()
