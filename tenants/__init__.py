"""Tenants: the customers of the SaaS, their API tokens (hashed at rest), SigV4 signing and who
may see what."""
