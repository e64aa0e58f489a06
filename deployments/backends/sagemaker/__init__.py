"""The SageMaker backend: multi-model endpoints, inference components and dedicated endpoints.

``client`` is every boto3 call the deployments make (idempotent, throttling retried);
``deploy`` rolls versions out to endpoints, probes and invokes them.
"""
