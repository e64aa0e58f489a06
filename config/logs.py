"""Log formats: one JSON object per line for the production profile, plain text for development.

``LOG_FORMAT`` picks one (``json`` by default in production, ``plain`` otherwise); every process
(the web server, Celery's worker and beat) logs through ``settings.LOGGING``. A JSON line has
``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``request_id`` (the HTTP request's,
or the request that queued the task; null outside one) and, when there is one, ``exception``
(its type, its text and its traceback). Python's warnings are logged too (``py.warnings``), so
nothing else is written to the stream between the lines.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime

from config.request_id import current_request_id

LOG_FORMATS = ("json", "plain")


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            kind, error, _ = record.exc_info
            entry["exception"] = {
                "type": kind.__name__,
                "message": str(error),
                "traceback": self.formatException(record.exc_info),
            }
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a message argument that is not JSON (a path, a model) still logs.
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(config: dict) -> None:
    """``settings.LOGGING_CONFIG``: apply ``settings.LOGGING``, warnings included."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)


def logging_config(*, log_format: str, level: str) -> dict:
    """``settings.LOGGING`` for a format and a root level."""
    formatter = (
        {"()": "config.logs.JsonFormatter"}
        if log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    )
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {log_format: formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.db.backends": {"level": "WARNING"}},
    }
    if log_format == "json":
        # uvicorn gives its own loggers their own text handlers; in JSON they go through ours.
        config["loggers"] |= {
            "uvicorn": {"handlers": ["console"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": ["console"], "propagate": False},
        }
    return config
