"""The local backend: endpoint instances that are real Triton processes on this machine.

``backend`` implements the serving interface over the rest: ``process`` starts and stops Triton
in SageMaker multi-model mode, ``client`` speaks its protocol, ``packages`` unpacks verified
packages, ``memory`` measures what a loaded model holds; ``runtime`` gives local endpoints
SageMaker's multi-model semantics (load on first request, single-flight, eviction within a
measured memory budget, pinned models), ``rollout`` decides which instance takes a version and
drains one, ``reconcile`` repairs drift, ``forward`` and ``upstream`` are the proxy's path to an
instance, and ``gates`` lets an unload drain a model's requests across processes.
"""
