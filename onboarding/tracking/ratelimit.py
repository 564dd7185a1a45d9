"""Per-write-key request rate limit: a fixed-window counter in the cache (Redis in production).

Redis is a doorbell, not a store: if the cache is unreachable the limiter lets requests through
rather than refusing events.
"""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)


def retry_after_if_limited(source_id: int, *, now: float | None = None) -> int | None:
    """Count one request for the source; return the seconds to wait if it is over the limit."""
    limit = settings.ONRAMP_RATE_LIMIT_REQUESTS
    window = settings.ONRAMP_RATE_LIMIT_WINDOW
    if limit <= 0:
        return None
    now = time.time() if now is None else now
    bucket = int(now // window)
    key = f"onramp:rate:{source_id}:{bucket}"
    try:
        cache.add(key, 0, timeout=window + 1)
        count = cache.incr(key)
    except ValueError:  # the key expired between add and incr
        count = 1
    except Exception:  # the cache being down must not refuse events
        logger.warning("rate limiter unavailable; letting the request through", exc_info=True)
        return None
    if count <= limit:
        return None
    return max(1, math.ceil((bucket + 1) * window - now))
