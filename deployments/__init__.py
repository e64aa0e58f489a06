"""Deployments: where tenant models run and what they cost — endpoints, instances, placements,
rollouts, the reconciler and warm-ups, the serving backends, the inference proxy and the dashboard
(see docs/architecture.md for the packages and their layers)."""
