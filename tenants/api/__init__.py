"""The tenants REST API: tenants and their tokens."""
