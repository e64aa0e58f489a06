"""The inference proxy: one routing core behind three wire protocols, on the ASGI path.

``app.ProxyApplication`` wraps Django's ASGI application and answers, without entering Django:

- native: ``POST /api/v1/tenants/{slug}/models/{name}/invoke``;
- Open Inference Protocol v2: ``/v2``, ``/v2/health/{live,ready}``, ``/v2/models/{tenant}.{model}``
  (metadata), ``.../ready`` and ``.../infer`` (JSON or the binary tensor extension), so
  ``tritonclient.http`` works unchanged;
- SageMaker runtime: ``POST /endpoints/{endpoint}/invocations`` with
  ``X-Amzn-SageMaker-Target-Model``, signed with SigV4, so boto3's ``sagemaker-runtime`` works;
- ``/metrics`` (Prometheus; a platform token).

Everything else goes to Django. See ``docs/proxy.md``.
"""
