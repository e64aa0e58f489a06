"""``manage.py train`` and ``manage.py seed_demo``."""
