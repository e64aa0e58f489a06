"""Management commands of the tenants app (``manage.py tokens``)."""
