"""Management commands of the deployments app (``manage.py up``) and the process supervisor."""
