"""The deployments REST API: deploy, roll back, invoke, drain, and the fleet figures."""
