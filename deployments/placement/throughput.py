"""How many encoder instances a shared-base endpoint needs for its request rate (pure).

On a shared-base endpoint memory is not what runs out: one encoder holds thousands of tenants'
heads of a few KB each. What runs out is the encoder's time, which every tenant's requests share.
So the endpoint's instance count follows the measured request rate: an instance is counted as
able to spend ``target_busy_fraction`` of each second answering, each request taking the
measured mean service time, and the endpoint runs as many instances as that rate needs, within
its minimum and maximum. Scaling in waits until one instance fewer would still be below
``scale_in_busy_fraction``, so a rate near a boundary does not start and stop instances in turn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The share of each second an encoder instance is planned to be busy: room for bursts.
TARGET_BUSY_FRACTION = 0.7
# One instance fewer is run only when the rest would be busy at most this share of the time.
SCALE_IN_BUSY_FRACTION = 0.5


@dataclass(frozen=True)
class ThroughputPlan:
    """The instance count a request rate needs, and the figures it was decided from."""

    instances: int
    requests_per_s: float
    service_ms: float
    busy_fraction_now: float

    def basis(self) -> str:
        """The decision in words, for events and the admin."""
        return (
            f"{self.requests_per_s:,.2f} requests/s at {self.service_ms:,.1f} ms each keep "
            f"{self.busy_fraction_now:.0%} of one encoder busy; "
            f"{self.instances} instance(s) at most {TARGET_BUSY_FRACTION:.0%} busy"
        )


def encoder_instances(
    *,
    requests_per_s: float,
    service_ms: float,
    current: int,
    min_instances: int,
    max_instances: int,
    target_busy_fraction: float = TARGET_BUSY_FRACTION,
    scale_in_busy_fraction: float = SCALE_IN_BUSY_FRACTION,
) -> ThroughputPlan:
    """The instances a shared-base endpoint should run for ``requests_per_s`` requests a second
    that each take ``service_ms`` of an encoder, given ``current`` running now."""
    if not 0 < scale_in_busy_fraction <= target_busy_fraction <= 1:
        raise ValueError("busy fractions must satisfy 0 < scale-in <= target <= 1")
    low, high = max(1, min_instances), max(1, min_instances, max_instances)
    busy = max(0.0, requests_per_s) * max(0.0, service_ms) / 1000.0
    needed = max(1, math.ceil(busy / target_busy_fraction - 1e-9))
    wanted = max(needed, current)
    # Fewer instances only while the smaller count stays clearly under the target.
    while wanted > needed and busy / (wanted - 1) <= scale_in_busy_fraction:
        wanted -= 1
    return ThroughputPlan(
        instances=min(high, max(low, wanted)),
        requests_per_s=requests_per_s,
        service_ms=service_ms,
        busy_fraction_now=busy,
    )
