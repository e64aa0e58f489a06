"""The webhooks REST API: register endpoints, rotate secrets, follow and redeliver."""
