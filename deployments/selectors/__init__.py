"""Deployments' reads for the dashboard, the fleet API and the admin: instances and their
memory, endpoints and their cost, fleet figures, savings and trends."""
