"""Deployments' writes: rollouts and rollbacks, draining, the reconciler, warm-ups, usage and the
fleet's periodic bookkeeping. Each service owns its transaction and records an Event."""
