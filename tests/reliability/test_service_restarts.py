"""Redis and PostgreSQL restarted during a run, with real processes: queued work whose message
Redis lost is sent again and done exactly once; routing invalidation reconnects; proxied
traffic keeps being answered while PostgreSQL restarts, and the counters of that time reach
the database afterwards, none lost or counted twice.

These restart the machine's own servers, as CI runs them (`.ci/run`); on the embedded default
they are skipped with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.db.models import Sum
from django.utils import timezone

from config.celery import app
from deployments import usage
from deployments.models import VersionUsageMinute
from deployments.proxy import core
from deployments.proxy.invalidation import SUBSCRIBER
from deployments.proxy.routing import ROUTES
from deployments.services import rollouts
from models_registry.models import ModelVersion, TrainingJob
from models_registry.services.training import STALE_QUEUED, reconcile_training_jobs
from tenants.services import issue_token
from tests.factories import TenantFactory, TenantModelFactory
from tests.redis_support import (
    assert_a_published_change_drops_only_its_route,
    redis_address,
    redis_client,
    wait_for_routing_listener,
)
from tests.reliability.support import (
    Traffic,
    finished_job_under_a_new_worker,
    invoke,
    queued_training_job,
)
from tests.serving_fixtures import packaged_version
from tests.waiting import wait_until


def _redis_run_id(client) -> str | None:
    import redis

    try:
        return client.info("server")["run_id"]
    except redis.RedisError:
        return None


def restart_redis() -> None:
    """Stop the configured Redis without saving (it keeps nothing on disk) and start it again as
    CI does, on the host and port ``CELERY_BROKER_URL`` names; return once that server answers
    as a new process."""
    if not shutil.which("redis-server"):
        pytest.skip("needs redis-server on this machine to restart it; CI has it")
    host, port = redis_address()
    client = redis_client()
    before = _redis_run_id(client)
    assert before, f"no Redis answers at {host}:{port} (CELERY_BROKER_URL) to restart"
    subprocess.run(["redis-cli", "-h", host, "-p", str(port), "shutdown", "nosave"])
    Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
    # As .ci/run starts it, on the configured address.
    options = f"--daemonize yes --bind {host} -::1 --port {port} --appendonly no"
    files = ["--save", "", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"]
    subprocess.run(
        ["redis-server", *options.split(), *files],
        check=True,
    )
    wait_until(
        lambda: _redis_run_id(client) not in (None, before),
        15,
        f"Redis at {host}:{port} (CELERY_BROKER_URL) did not come back as a new server",
    )


def _postgres_cluster(port: int) -> tuple[str, str] | None:
    """(version, name) of this machine's PostgreSQL cluster listening on ``port``."""
    if not shutil.which("pg_lsclusters") or not shutil.which("pg_ctlcluster"):
        return None
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    )
    for line in listing.stdout.splitlines():
        version, name, cluster_port, *_ = line.split()
        if int(cluster_port) == port:
            return version, name
    return None


def _postmaster_started_at():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_postmaster_start_time()")
            return cursor.fetchone()[0]
    except (OperationalError, InterfaceError):
        connection.close()  # this thread's connection died with the server
        return None


def restart_postgres() -> None:
    """Restart the PostgreSQL cluster that ``DATABASE_URL`` names (its port picks it among this
    machine's clusters); return once it answers as a new server on this thread's connection."""
    database = settings.DATABASES["default"]
    host, port = database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)
    cluster = _postgres_cluster(port)
    if cluster is None:
        pytest.skip(
            f"needs this machine's PostgreSQL cluster on port {port} and pg_ctlcluster to "
            "restart it; CI has them"
        )
    before = _postmaster_started_at()
    assert before, f"no PostgreSQL answers at {host}:{port} (DATABASE_URL) to restart"
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart"], check=True)
    wait_until(
        lambda: _postmaster_started_at() not in (None, before),
        30,
        f"PostgreSQL at {host}:{port} (DATABASE_URL) did not come back as a new server",
        interval_s=0.2,
    )


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
    listener = SUBSCRIBER._thread
    wait_for_routing_listener()

    restart_redis()  # the listener's connection and subscription are gone with it

    # The same listener subscribes again on the new server; a change published after that
    # reaches it.
    wait_for_routing_listener()
    assert SUBSCRIBER._thread is listener and listener.is_alive()
    try:
        assert_a_published_change_drops_only_its_route(model_id=77, other_model_id=78)
    finally:
        ROUTES.invalidate(None)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("local_rollouts")
def test_proxied_traffic_is_answered_through_a_postgres_restart_and_nothing_is_lost(
    proxy_url, intent_artifact, settings
):
    # Routes and tokens expire long before the restart is over, so the requests during it are
    # answered from what the proxy last knew, not from caches that happened to be fresh.
    settings.TENANTML_PROXY_AUTH_TTL_S = 0.2
    settings.TENANTML_PROXY_ROUTE_TTL_S = 0.2
    ROUTES.invalidate(None)
    core._TOKENS.clear()
    core.reset_rate_limits()
    usage.COUNTERS.drain()
    model = TenantModelFactory(tenant=TenantFactory(slug="acme"), name="intents")
    version = packaged_version(model, intent_artifact, 1, promote=True)
    deployment, _ = rollouts.request_deployment(model=model, actor="test")
    rollouts.run_rollout(deployment_id=deployment.pk)
    token = issue_token(tenant=model.tenant, name="t", actor="test").secret
    traffic = Traffic(lambda: invoke(proxy_url, "acme", token), pause_s=0.01).start()
    try:
        flowing = time.monotonic()
        wait_until(lambda: len(traffic.sent_since(flowing)) >= 3, 60, "no traffic was answered")
        restart_postgres()
        restarted = time.monotonic()
        wait_until(
            lambda: len(traffic.sent_since(restarted)) >= 3,
            60,
            "no request sent after the restart was answered",
        )
    finally:
        traffic.stop()

    traffic.assert_every_request_answered()
    statuses = [outcome.status for outcome in traffic.outcomes]
    # Routes and tokens known before the restart were used: the database going away did not
    # reach the requests.
    assert set(statuses) == {200}, sorted(set(statuses))

    # Every one of them reaches the time series once the database is back.
    def flushed() -> bool:
        try:
            usage.flush_usage()
        except OperationalError:
            connection.close()
            return False
        return True

    wait_until(flushed, 30, "usage could not be flushed after the restart", interval_s=0.5)
    counted = VersionUsageMinute.objects.filter(version=version).aggregate(n=Sum("invocations"))
    assert counted["n"] == len(statuses)
