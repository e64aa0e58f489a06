"""Signed webhooks: product teams' endpoints, told of the platform's events as they happen.

Every app records events through ``config.events.record_event``; this app's receiver turns the
events a webhook subscribes to into delivery rows in the same transaction, and Celery tasks post
them, signed, until the receiver answers 2xx (or the retry window closes).
"""
