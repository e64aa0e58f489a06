"""Redis and PostgreSQL restarted during a run, with real processes: queued work whose message
Redis lost is sent again and done exactly once; routing invalidation reconnects; proxied
traffic keeps being answered while PostgreSQL restarts, and the counters of that time reach
the database afterwards, none lost or counted twice.

These restart the machine's own servers, as CI runs them (`.ci/run`); on the embedded default
they are skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from django.db.models import Sum
from django.utils import timezone

from config.celery import app
from deployments import usage
from deployments.models import VersionUsageMinute
from deployments.proxy import core
from deployments.proxy.invalidation import SUBSCRIBER, publish
from deployments.proxy.routing import ROUTES, Route
from deployments.services import rollouts
from models_registry.models import ModelVersion, TrainingJob
from models_registry.services.training import STALE_QUEUED, reconcile_training_jobs
from tenants.services import issue_token
from tests.factories import TenantFactory, TenantModelFactory
from tests.reliability.support import finished_job_under_a_new_worker, queued_training_job
from tests.serving_fixtures import packaged_version

REDIS_ARGS = [
    "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
    "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


def restart_redis() -> None:
    """Stop Redis without saving (it keeps nothing on disk) and start it as CI does."""
    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server on this machine to restart it; CI has it")
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"])
    Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
    subprocess.run(["redis-server", *REDIS_ARGS], check=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ping = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"], text=True,
                              capture_output=True)  # fmt: skip
        if ping.stdout.strip() == "PONG":
            return
        time.sleep(0.1)
    raise AssertionError("Redis did not come back")


def restart_postgres() -> None:
    clusters = (
        sorted(Path("/etc/postgresql").glob("*/main")) if shutil.which("pg_ctlcluster") else []
    )
    if not clusters:
        pytest.skip("needs pg_ctlcluster to restart PostgreSQL; CI has it")
    version = clusters[-1].parent.name
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"]).returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError("PostgreSQL did not come back")


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_training_message_redis_lost_is_sent_again_and_done_once(tmp_path):
    app.control.purge()
    model, job = queued_training_job(seed=2)

    restart_redis()  # the queued message is gone with it

    later = timezone.now() + STALE_QUEUED + timedelta(seconds=5)
    assert [j.pk for j in reconcile_training_jobs(now=later)] == [job.pk]
    done = finished_job_under_a_new_worker(job, tmp_path / "worker.log")
    assert done.status == TrainingJob.Status.SUCCEEDED, done.failure_reason
    assert ModelVersion.objects.filter(model=model).count() == 1


@pytest.mark.redis
@pytest.mark.django_db
def test_routing_invalidation_reconnects_after_a_redis_restart():
    SUBSCRIBER.start()
    time.sleep(0.5)
    restart_redis()
    time.sleep(2.5)  # the listener notices, waits a second and subscribes again
    route = Route(
        tenant_id=1, tenant_slug="acme", tenant_active=True, model_id=77, model_name="m", kind="k"
    )
    ROUTES.put(("acme", "m"), route, ttl_s=60)

    # Published as another process would: straight to Redis, not through this process's cache.
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).publish("tenantml:routing", "77")

    deadline = time.monotonic() + 5
    while ROUTES.get(("acme", "m")) is route and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ROUTES.get(("acme", "m")) is not route
    publish(None)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("local_rollouts")
def test_proxied_traffic_is_answered_through_a_postgres_restart_and_nothing_is_lost(
    proxy_url, intent_artifact
):
    ROUTES.invalidate(None)
    core._TOKENS.clear()
    core.reset_rate_limits()
    usage.COUNTERS.drain()
    model = TenantModelFactory(tenant=TenantFactory(slug="acme"), name="intents")
    version = packaged_version(model, intent_artifact, 1, promote=True)
    deployment, _ = rollouts.request_deployment(model=model, actor="test")
    rollouts.run_rollout(deployment_id=deployment.pk)
    token = issue_token(tenant=model.tenant, name="t", actor="test").secret
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            request = urllib.request.Request(
                f"{proxy_url}/api/v1/tenants/acme/models/intents/invoke",
                data=json.dumps({"inputs": ["Where is my refund?"]}).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
            time.sleep(0.01)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(0.5)
        restart_postgres()
        connection.close()  # this thread's connection died with the server
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(timeout=30)

    # Routes and tokens were cached: the database going away did not reach the requests.
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    # Every one of them reaches the time series once the database is back.
    for _ in range(3):
        try:
            usage.flush_usage()
            break
        except OperationalError:
            connection.close()
            time.sleep(1)
    counted = VersionUsageMinute.objects.filter(version=version).aggregate(n=Sum("invocations"))
    assert counted["n"] == len(statuses)
