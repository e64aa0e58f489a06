"""The model registry: datasets, tenant models and their versions, training jobs, the model-kind
plugins, Triton packaging and the artifact store."""
