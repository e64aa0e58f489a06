"""``manage.py up``: the platform, its worker, beat and local Triton servers on one machine."""
