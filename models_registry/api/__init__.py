"""The registry API (datasets, models, versions, training jobs)."""
