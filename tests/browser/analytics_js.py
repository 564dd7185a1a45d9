"""What the analytics.js browser test needs around Onramp: Segment's real library from npm, a web
app on another origin that loads it, and a recording proxy in front of Onramp that can refuse a
request once (Onramp briefly answering 503), so the library's own retry is exercised.

Everything listens on 127.0.0.1 and is stopped by the test that started it.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from tests.requirements import missing

# The published package, pinned so CI is reproducible; ONRAMP_ANALYTICS_NEXT_VERSION=latest tries
# the newest release.
ANALYTICS_NEXT_VERSION = os.environ.get("ONRAMP_ANALYTICS_NEXT_VERSION", "1.84.3")
NPM_CACHE = Path(os.environ.get("ONRAMP_NPM_CACHE", Path.home() / ".cache" / "onramp-npm"))
# The UMD build that defines window.AnalyticsNext (AnalyticsBrowser.load); standalone.js is the
# snippet flavour.
UMD_BUNDLE = Path("node_modules/@segment/analytics-next/dist/umd/index.js")
NPM_TIMEOUT_SECONDS = 120


def analytics_next_bundle() -> Path:
    """The package's ``dist/umd/index.js``, installed with npm into a cache outside the repo
    (``~/.cache/onramp-npm/analytics-next-<version>``) the first time, reused after."""
    prefix = NPM_CACHE / f"analytics-next-{ANALYTICS_NEXT_VERSION}"
    bundle = prefix / UMD_BUNDLE
    if ANALYTICS_NEXT_VERSION != "latest" and bundle.exists():
        return bundle
    npm = shutil.which("npm")
    if npm is None:
        missing("npm", "it installs @segment/analytics-next", "install nodejs and npm in .ci/run")
    prefix.mkdir(parents=True, exist_ok=True)
    completed = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--ignore-scripts",
            f"@segment/analytics-next@{ANALYTICS_NEXT_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0 or not bundle.exists():
        raise AssertionError(
            f"npm could not install @segment/analytics-next@{ANALYTICS_NEXT_VERSION}:\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    return bundle


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """A static web server for ``directory`` on a loopback port: the web app's own origin."""
    handler = partial(_QuietStaticHandler, directory=str(directory))
    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        yield url


class _QuietStaticHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@dataclass
class Exchange:
    """One request the browser made through the proxy, and the status it got back."""

    method: str
    path: str
    content_type: str
    headers: dict[str, str]
    body: bytes
    status: int
    forwarded: bool  # False when the proxy answered itself (a refusal)


@dataclass
class Fault:
    """Answer 503 to the next ``method path``: without forwarding it (``forward=False``: Onramp
    refused it) or after forwarding it (``forward=True``: stored, but the answer was lost)."""

    method: str
    path: str
    forward: bool
    used: bool = False


@dataclass
class Proxy:
    upstream: str
    url: str = ""
    exchanges: list[Exchange] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_once(self, method: str, path: str, *, forward: bool) -> None:
        with self.lock:
            self.faults.append(Fault(method, path, forward))

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if not fault.used and (fault.method, fault.path) == (method, path):
                    fault.used = True
                    return fault
        return None

    def record(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)

    def requests(self) -> list[Exchange]:
        with self.lock:
            return list(self.exchanges)


@contextmanager
def recording_proxy(upstream: str) -> Iterator[Proxy]:
    """A reverse proxy on a loopback port in front of ``upstream`` (the live server), as a
    load balancer would be: it forwards every request, records it and the answer, and can turn
    one answer into a 503 (see :class:`Fault`)."""
    proxy = Proxy(upstream=upstream)
    handler = partial(_ProxyHandler, proxy)
    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        proxy.url = url
        yield proxy


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, proxy: Proxy, *args: object, **kwargs: object) -> None:
        self.proxy = proxy
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        fault = self.proxy.take_fault(self.command, path)
        status, headers, payload, forwarded = 503, [], b"", False
        if fault is None or fault.forward:
            status, headers, payload = self._forward(body)
            forwarded = True
        if fault is not None:
            # The refusal Onramp itself gives when its database is unavailable.
            status = 503
            payload = (
                b'{"success": false, "error": {"code": "database_unavailable", "path": "",'
                b' "message": "the event store is unavailable; retry the same request later"}}'
            )
            headers = [
                ("Content-Type", "application/json"),
                ("Retry-After", "1"),
                ("Access-Control-Allow-Origin", "*"),
            ]
        self.proxy.record(
            Exchange(
                method=self.command,
                path=self.path,
                content_type=self.headers.get("Content-Type", ""),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                status=status,
                forwarded=forwarded,
            )
        )
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        target = urlsplit(self.proxy.upstream)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        skip = {"host", "connection", "content-length", "accept-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        try:
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    do_GET = do_POST = do_OPTIONS = _relay


@contextmanager
def _serving(server: ThreadingHTTPServer) -> Iterator[str]:
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
