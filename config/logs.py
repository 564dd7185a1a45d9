"""Logging (docs/operations.md): plain lines or one JSON object per line, never personal data.

- ``ONRAMP_LOG_FORMAT=json`` renders each record as a JSON object with its time, level, logger,
  message, the request id (a web request's, or a Celery task's id) and whatever context the call
  passed in ``extra`` (``rule``, ``message_id``, ``person_id``, counts and durations).
- Whatever the format, :class:`RedactPersonalData` removes email addresses and write keys from
  messages and tracebacks, a safety net under the rule that log calls pass ids, never values
  (no emails, no traits, no write keys).
- :class:`RequestIdMiddleware` gives every request an id (the client's ``X-Request-ID`` when it is a
  short token, else a fresh one), returned in the ``X-Request-ID`` response header.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "onramp_request_id", default=None
)

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Write keys (onboarding.services.sources.KEY_PREFIX) and the settings URL that carries one.
WRITE_KEY = re.compile(r"onr_[A-Za-z0-9_-]+")
SETTINGS_PATH = re.compile(r"(/v1/projects/)[^/\s]+")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Attributes every LogRecord has: anything else on a record came from ``extra``.
# ``request`` (Django's request logger) is an object, not a value worth a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "request",
}


def redact(text: str) -> str:
    text = EMAIL.sub("[email]", text)
    text = SETTINGS_PATH.sub(r"\1[key]", text)
    return WRITE_KEY.sub("[key]", text)


class RedactPersonalData(logging.Filter):
    """Render the message (and traceback) once, redacted; adds ``request_id`` to the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_onramp_redacted", False):
            record.msg = redact(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
            record._onramp_redacted = True
        if getattr(record, "request_id", None) is None:
            # Django logs a 4xx/5xx response after the middleware returned; the request has its id.
            request = getattr(record, "request", None)
            record.request_id = request_id_var.get() or getattr(request, "request_id", None)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            document[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            document["exception"] = record.exc_text
        # Redacted as a whole: extra values may be nested (Celery passes a task's arguments).
        return redact(json.dumps(document, default=str, ensure_ascii=False))


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """Django's LOGGING for ``log_format`` ("plain" or "json")."""
    if log_format not in ("plain", "json"):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"ONRAMP_LOG_FORMAT must be plain or json, not {log_format!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact": {"()": "config.logs.RedactPersonalData"},
            # A refused request (403, 404, 400) is one warning line, not a traceback.
            "client_error_line": {"()": "config.log_filters.ClientErrorWithoutTraceback"},
        },
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
            "json": {"()": "config.logs.JsonFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["redact"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            "django.request": {"filters": ["client_error_line"]},
        },
    }


class RequestIdMiddleware:
    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request):
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


# --- Celery: its worker and beat configure logging themselves; these hooks bring them in line ---


def adopt_celery_handlers(logger: logging.Logger, **kwargs: object) -> None:
    """``after_setup_logger`` / ``after_setup_task_logger``: redact on Celery's handlers and, in
    JSON mode, format with :class:`JsonFormatter` (Celery keeps its levels and destinations)."""
    from django.conf import settings

    for handler in logger.handlers:
        if not any(isinstance(f, RedactPersonalData) for f in handler.filters):
            handler.addFilter(RedactPersonalData())
        if settings.ONRAMP_LOG_FORMAT == "json":
            handler.setFormatter(JsonFormatter())


def task_started(task_id: str | None = None, **kwargs: object) -> None:
    request_id_var.set(task_id)


def task_finished(**kwargs: object) -> None:
    request_id_var.set(None)
