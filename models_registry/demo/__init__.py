"""Demo data: synthetic support tickets for three tenants (``tickets``) and the service that seeds
them with datasets and models (``seeding``, behind ``manage.py seed_demo``)."""
