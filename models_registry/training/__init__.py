"""Training: one entry point for every kind, run locally or inside a SageMaker training container.

``entrypoint`` is the process that trains (``python -m models_registry.training.entrypoint``, or
``train.py`` from the sourcedir in a SageMaker PyTorch container); it follows the SageMaker
training conventions (``SM_*`` directories, ``hyperparameters.json``, ``failure`` file) and
imports only the kinds, the base model and the Triton runtime modules, never Django.
``backends`` is where a job runs, behind one interface: ``backends.local`` uses ``runner``, which
lays out a job directory the same way and runs the entry point as a local process;
``backends.sagemaker`` uses ``sagemaker_client`` (CreateTrainingJob and friends, plain boto3)
and ``sourcedir``, which packs the same code for SageMaker. Several queued jobs may train as one
batch: ``batching`` plans it (pure), ``batch_entrypoint`` is each host's process, and
``backends.batches`` runs it (``backends.sagemaker_batch``: one multi-instance training job;
``backends.local_batch``: one local process per host, through ``runner``).
"""
