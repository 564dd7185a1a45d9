"""The settings document Segment's browser library (analytics.js, ``@segment/analytics-next``)
loads from ``{cdnURL}/v1/projects/<writeKey>/settings`` before it sends anything (DESIGN §3.1).

The library builds its tracking URLs as ``{protocol}://{apiHost}/{t,i,p,a,g,s,b}`` from the
``Segment.io`` integration of this document, so ``apiHost`` is a host (and optional path) with
``/v1`` and no scheme, and ``protocol`` is ``http`` or ``https``. Remote metrics go to
``{metrics.host}/m``; the document turns them off (``sampleRate: 0``) and points them here anyway,
so the library never calls Segment's own servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest

API_PATH = "/v1"


@dataclass(frozen=True)
class TrackingHost:
    protocol: str  # "http" or "https"
    api_host: str  # "onramp.example.com/v1", as the library expects: no scheme


def tracking_host(request: HttpRequest) -> TrackingHost:
    """Where browsers reach the tracking API: ``ONRAMP_TRACKING_URL`` when set (behind a proxy
    that rewrites the host or adds a path prefix), else the scheme and host of ``request``
    (``SECURE_PROXY_SSL_HEADER`` applies to the scheme)."""
    if settings.ONRAMP_TRACKING_URL:  # checked to be an http(s) URL when settings load
        url = urlsplit(settings.ONRAMP_TRACKING_URL)
        return TrackingHost(url.scheme, url.netloc + url.path.rstrip("/") + API_PATH)
    return TrackingHost(request.scheme or "http", request.get_host() + API_PATH)


def settings_document(*, write_key: str, host: TrackingHost) -> dict:
    """The part of Segment's CDN settings that analytics.js reads, pointing at this Onramp and
    nowhere else: no device-mode destinations, remote plugins or middleware to download."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": host.api_host,
                "protocol": host.protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {"track": {"__default": {"enabled": True, "integrations": {}}}},
        "enabledMiddleware": {},
        "middlewareSettings": {},
        "metrics": {"sampleRate": 0, "host": host.api_host},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }
