"""``manage.py tokens``: issue, list and revoke API tokens from a shell."""
