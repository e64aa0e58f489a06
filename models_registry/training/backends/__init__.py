"""Training backends: where a training job runs, behind one interface.

``base`` holds the interface (``TrainingBackend``), the values crossing it and the registry
(``training_backend_for(job)``); ``local`` trains in the worker with the process runner
(``models_registry.training.runner``); ``sagemaker`` trains on SageMaker through the training
client (``models_registry.training.sagemaker_client``). ``batches`` is the same for a batch of
jobs trained together (``local_batch``, ``sagemaker_batch``).
"""
