"""The HTTP base of the channels that call a provider (SMS) or a receiver (webhooks).

One POST per attempt; the pipeline owns retries (with backoff, in the database). This module only
says whether a failure is worth retrying:

- 2xx: delivered. 3xx: permanent (redirects are never followed; the error names the Location).
- 408, 425, 429 and 5xx: transient; a ``Retry-After`` header (seconds or an HTTP date) is passed
  on as ``TransportError.retry_after``. Other 4xx: permanent.
- No connection (refused, DNS, connect timeout, TLS handshake): transient — nothing was sent.
- The request was sent but no answer came (read timeout, connection dropped, or a gateway's 504):
  transient for at-least-once channels (the receiver deduplicates), but for at-most-once channels
  the provider may have acted on it, so :class:`OutcomeUnknown` — never retried automatically.

Requests go through urllib3 directly, optionally pinned to addresses already checked by
:mod:`triggers.netguard`: the connection goes to the checked IP while Host and TLS SNI (and the
certificate check) use the original host name, so a second DNS answer is never used.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import urllib3
from django.conf import settings
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)

from triggers.netguard import Target

from .base import Channel, TransportError

logger = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({408, 425, 429})
# Gateway timeout: the gateway forwarded the request and gave up waiting, like a read timeout.
SENT_BUT_UNANSWERED_STATUSES = frozenset({504})
MAX_RETRY_AFTER = 24 * 3600
USER_AGENT = "Onramp/1 (+https://github.com/onramp)"


class OutcomeUnknown(TransportError):
    """The request may have reached the provider, but no answer came back.

    Raised only by at-most-once channels: a :class:`TransportError` with ``unknown`` set (and so
    ``permanent``), which the pipeline marks ``unknown`` with a review item (docs/channels.md).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, unknown=True)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def json(self) -> dict | None:
        try:
            document = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def text(self, limit: int = 300) -> str:
        return self.body[:limit].decode("utf-8", errors="replace").strip()


def parse_retry_after(value: str, *, now: float | None = None) -> int | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date), clamped."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        seconds = int(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = int(when.timestamp() - (time.time() if now is None else now))
    return max(1, min(seconds, MAX_RETRY_AFTER))


def target_for(url: str) -> Target:
    """An unchecked target (connect to the name itself), for tests of this module only: channels
    check their URLs with :func:`triggers.netguard.check_url`, which resolves and pins."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise TransportError(f"invalid provider URL {url!r}", permanent=True)
    port = parts.port or (443 if scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, parts.hostname, port, path, (parts.hostname,))


class HttpChannel(Channel):
    """A channel that POSTs once per attempt and classifies the answer."""

    max_response_bytes = 64 * 1024

    def timeout(self) -> urllib3.Timeout:
        return urllib3.Timeout(
            connect=settings.ONRAMP_HTTP_CONNECT_TIMEOUT_SECONDS,
            read=settings.ONRAMP_HTTP_TIMEOUT_SECONDS,
        )

    def describe_error(self, response: HttpResponse) -> str:
        """A short human description of an error response (subclasses read provider errors)."""
        text = response.text()
        return f"HTTP {response.status}" + (f": {text}" if text else "")

    def permanent_for(self, response: HttpResponse) -> bool:
        """Whether an error response is permanent (subclasses may refine by provider code)."""
        status = response.status
        return not (status in TRANSIENT_STATUSES or 500 <= status < 600)

    def post(self, target: Target, *, body: bytes, headers: dict[str, str]) -> HttpResponse:
        """POST ``body`` once; return a 2xx response or raise :class:`TransportError`."""
        host_header = target.host if ":" not in target.host else f"[{target.host}]"
        if target.port != (443 if target.scheme == "https" else 80):
            host_header += f":{target.port}"
        headers = {"User-Agent": USER_AGENT, **headers, "Host": host_header}
        last_error: Exception | None = None
        for address in target.addresses:
            pool = self._pool(target, address)
            try:
                raw = pool.urlopen(
                    "POST",
                    target.path,
                    body=body,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    preload_content=False,
                    assert_same_host=False,
                )
                response = self._read(raw)
            except (NewConnectionError, ConnectTimeoutError, SSLError) as error:
                last_error = error  # nothing was sent: the next address, or a transient error
                continue
            except (ReadTimeoutError, HTTPError, OSError) as error:
                raise self._sent_but_unanswered(target, error) from None
            finally:
                pool.close()
            return self._classify(target, response)
        raise TransportError(f"cannot connect to {target.host}: {last_error}") from None

    def _pool(self, target: Target, address: str) -> urllib3.HTTPConnectionPool:
        if target.scheme == "https":
            return urllib3.HTTPSConnectionPool(
                address,
                target.port,
                timeout=self.timeout(),
                maxsize=1,
                retries=False,
                server_hostname=target.host,
                assert_hostname=target.host,
            )
        return urllib3.HTTPConnectionPool(
            address, target.port, timeout=self.timeout(), maxsize=1, retries=False
        )

    def _read(self, raw: urllib3.BaseHTTPResponse) -> HttpResponse:
        try:
            body = raw.read(self.max_response_bytes, decode_content=True) or b""
        except (HTTPError, OSError):
            body = b""  # the status line arrived, which is what decides; the body is a courtesy
        finally:
            raw.release_conn()
        headers = {name.lower(): value for name, value in raw.headers.items()}
        return HttpResponse(status=raw.status, headers=headers, body=body)

    def _sent_but_unanswered(self, target: Target, error: Exception) -> TransportError:
        what = "timed out" if isinstance(error, ReadTimeoutError) else f"failed ({error})"
        if self.at_most_once:
            return OutcomeUnknown(
                f"{target.host}: the request was sent but the answer {what}; "
                "the provider may have accepted it, so it is not retried"
            )
        return TransportError(f"{target.host}: the request was sent but the answer {what}")

    def _classify(self, target: Target, response: HttpResponse) -> HttpResponse:
        status = response.status
        if 200 <= status < 300:
            return response
        if 300 <= status < 400:
            location = response.header("location") or "(no Location)"
            raise TransportError(
                f"HTTP {status} redirect to {location} not followed", permanent=True
            )
        if status in SENT_BUT_UNANSWERED_STATUSES and self.at_most_once:
            raise OutcomeUnknown(
                f"{target.host}: HTTP {status} (a gateway timed out after forwarding the request); "
                "the provider may have accepted it, so it is not retried"
            )
        description = self.describe_error(response)
        if self.permanent_for(response):
            raise TransportError(description, permanent=True)
        raise TransportError(
            description, retry_after=parse_retry_after(response.header("retry-after"))
        )
