"""The SageMaker stand-in: SageMaker hosting, run on one machine, for boto3 to talk to.

moto (in server mode) answers the control plane (SageMaker, S3, Application Auto Scaling,
CloudWatch) on one port; this package adds what moto lacks (inference components, UpdateEndpoint,
endpoint lifecycles that take time and can fail) and a ``sagemaker-runtime`` data plane that runs
real Triton servers the way SageMaker's Triton container does, on a Python with only numpy.
``python manage.py sagemaker_standin`` starts it; docs/deployments.md ("The SageMaker
stand-in") says how far its fidelity goes.
"""
