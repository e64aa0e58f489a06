"""How many encoder instances a shared-base endpoint runs for its measured request rate."""

from __future__ import annotations

import pytest

from deployments.placement.throughput import encoder_instances


def plan(requests_per_s, service_ms, *, current=1, low=1, high=8):
    return encoder_instances(
        requests_per_s=requests_per_s,
        service_ms=service_ms,
        current=current,
        min_instances=low,
        max_instances=high,
    ).instances


def test_no_traffic_runs_the_minimum():
    assert plan(0, 0, current=3, low=1) == 1
    assert plan(0, 0, current=1, low=2) == 2


@pytest.mark.parametrize(
    ("requests_per_s", "service_ms", "instances"),
    [(10, 20, 1), (35, 20, 1), (36, 20, 2), (100, 20, 3), (100, 50, 8)],
)
def test_instances_keep_each_encoder_at_most_seventy_percent_busy(
    requests_per_s, service_ms, instances
):
    # 100 requests/s of 20 ms keep two encoders busy: three keep each 67 % busy.
    assert plan(requests_per_s, service_ms) == instances


def test_never_more_than_the_endpoints_maximum():
    assert plan(1_000, 30, high=2) == 2


def test_scaling_in_waits_until_one_fewer_instance_is_at_most_half_busy():
    # 30 requests/s of 20 ms: 0.6 of an encoder; one instance would be 60 % busy.
    assert plan(30, 20, current=2) == 2
    # 20 requests/s: 40 % on one instance, so the second stops.
    assert plan(20, 20, current=2) == 1


def test_the_basis_names_the_rate_and_the_latency():
    result = encoder_instances(
        requests_per_s=50, service_ms=20, current=1, min_instances=1, max_instances=4
    )
    assert result.instances == 2
    assert "50.00 requests/s" in result.basis() and "20.0 ms" in result.basis()
