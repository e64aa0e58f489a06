"""The local backend: endpoint instances that are real Triton processes on this machine.

``triton`` starts and stops Triton in SageMaker multi-model mode, talks to it and measures what a
loaded model holds; ``gates`` lets an unload drain a model's requests across processes;
``runtime`` gives local endpoints SageMaker's multi-model semantics (load on first request,
single-flight, eviction within a measured memory budget, pinned models).
"""
