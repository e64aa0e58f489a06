"""Management commands of the registry (``manage.py train``, ``manage.py seed_demo``)."""
