"""Logging filters named in ``LOGGING`` (config/settings/base.py)."""

from __future__ import annotations

import logging


class ClientErrorWithoutTraceback(logging.Filter):
    """A 4xx answer is logged as one warning line, without the exception's traceback.

    Django logs a ``PermissionDenied`` (403), an ``Http404`` and a ``BadRequest`` on the
    ``django.request`` logger *with* the exception, so each refused request wrote a whole traceback:
    noise that hides real errors. A 4xx is the client's mistake or a refusal working as designed;
    the line ("Forbidden (Permission denied): /path") with its status code says all there is. 5xx
    records keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
