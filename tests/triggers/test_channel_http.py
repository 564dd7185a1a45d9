"""The HTTP base of the channels, against a local HTTP server on 127.0.0.1 (no other traffic).

``FakeServer`` is shared by the SMS and webhook tests: it records every request and answers from
a script of responses (status, headers, body, optional delay).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.smtp import free_port
from triggers.channels import TransportError
from triggers.channels.http import HttpChannel, OutcomeUnknown, parse_retry_after, target_for
from triggers.netguard import Target


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 that replays ``replies`` (then repeats ``default``)."""

    def __init__(self, default: Reply | None = None) -> None:
        self.requests: list[Received] = []
        self.replies: list[Reply] = []
        self.default = default or Reply()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                server.requests.append(
                    Received(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                reply = server.replies.pop(0) if server.replies else server.default
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class AtLeastOnce(HttpChannel):
    name = "test-at-least-once"
    at_most_once = False


class AtMostOnce(HttpChannel):
    name = "test-at-most-once"
    at_most_once = True


@pytest.fixture
def server():
    with FakeServer() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _short_timeouts(settings):
    settings.ONRAMP_HTTP_CONNECT_TIMEOUT_SECONDS = 2
    settings.ONRAMP_HTTP_TIMEOUT_SECONDS = 0.5


def post(channel: HttpChannel, server: FakeServer, path: str = "/hook"):
    return channel.post(target_for(server.url + path), body=b"x=1", headers={"X-Test": "1"})


def test_2xx_is_returned_with_body_and_headers(server):
    server.replies.append(Reply(201, b'{"sid": "SM1"}', {"X-Id": "7"}))
    response = post(AtMostOnce(), server)
    assert (response.status, response.json(), response.header("x-id")) == (201, {"sid": "SM1"}, "7")
    [request] = server.requests
    assert (request.path, request.body, request.headers["x-test"]) == ("/hook", b"x=1", "1")
    assert request.headers["user-agent"].startswith("Onramp/")


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_permanent_errors_naming_the_location_and_not_followed(server, status):
    server.replies.append(Reply(status, b"", {"Location": "http://127.0.0.1:9/elsewhere"}))
    with pytest.raises(TransportError) as caught:
        post(AtLeastOnce(), server)
    assert caught.value.permanent
    assert "http://127.0.0.1:9/elsewhere" in str(caught.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (401, True), (404, True), (410, True), (422, True), (408, False), (425, False),
     (429, False), (500, False), (502, False), (503, False)],
)  # fmt: skip
def test_status_classification(server, status, permanent):
    server.replies.append(Reply(status, b"nope"))
    with pytest.raises(TransportError) as caught:
        post(AtMostOnce(), server)
    assert caught.value.permanent is permanent
    assert not isinstance(caught.value, OutcomeUnknown)
    assert f"HTTP {status}" in str(caught.value)


def test_retry_after_seconds_and_http_date(server):
    server.replies.append(Reply(429, b"", {"Retry-After": "120"}))
    with pytest.raises(TransportError) as caught:
        post(AtMostOnce(), server)
    assert caught.value.retry_after == 120 and not caught.value.permanent
    when = datetime.now(UTC) + timedelta(minutes=10)
    server.replies.append(Reply(503, b"", {"Retry-After": format_datetime(when, usegmt=True)}))
    with pytest.raises(TransportError) as caught:
        post(AtMostOnce(), server)
    assert 590 <= caught.value.retry_after <= 600


def test_parse_retry_after():
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("0") == 1
    assert parse_retry_after("999999999") == 24 * 3600
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60


def test_gateway_timeout_is_unknown_for_at_most_once_and_transient_otherwise(server):
    server.replies.append(Reply(504))
    with pytest.raises(OutcomeUnknown) as caught:
        post(AtMostOnce(), server)
    assert caught.value.permanent
    server.replies.append(Reply(504))
    with pytest.raises(TransportError) as caught:
        post(AtLeastOnce(), server)
    assert not caught.value.permanent and not isinstance(caught.value, OutcomeUnknown)


def test_read_timeout_after_sending_is_unknown_for_at_most_once(server):
    server.replies.append(Reply(200, delay=1.5))
    with pytest.raises(OutcomeUnknown) as caught:
        post(AtMostOnce(), server)
    assert caught.value.permanent and "not retried" in str(caught.value)
    assert len(server.requests) == 1  # it did arrive: retrying could send twice


def test_read_timeout_is_transient_for_at_least_once(server):
    server.replies.append(Reply(200, delay=1.5))
    with pytest.raises(TransportError) as caught:
        post(AtLeastOnce(), server)
    assert not caught.value.permanent and not isinstance(caught.value, OutcomeUnknown)


def test_connection_refused_is_transient_even_for_at_most_once():
    port = free_port()
    with pytest.raises(TransportError) as caught:
        AtMostOnce().post(target_for(f"http://127.0.0.1:{port}/x"), body=b"", headers={})
    assert not caught.value.permanent and not isinstance(caught.value, OutcomeUnknown)
    assert "cannot connect" in str(caught.value)


def test_pinned_target_connects_to_the_checked_address_with_the_original_host(server):
    target = Target("http", "hooks.example.test", server.port, "/in?x=1", ("127.0.0.1",))
    AtLeastOnce().post(target, body=b"{}", headers={})
    [request] = server.requests
    assert request.headers["host"] == f"hooks.example.test:{server.port}"
    assert request.path == "/in?x=1"


def test_response_body_is_capped(server):
    server.replies.append(Reply(400, b"x" * 200_000))
    with pytest.raises(TransportError) as caught:
        post(AtLeastOnce(), server)
    assert len(str(caught.value)) < 400


def test_invalid_provider_url_is_permanent():
    with pytest.raises(TransportError) as caught:
        target_for("ftp://example.com/x")
    assert caught.value.permanent


def test_https_to_a_pinned_address_sends_the_host_name_as_sni():
    """TLS to the checked IP still names the host (SNI, and so the certificate check)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received: list[bytes] = []

    def accept() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(2)
            received.append(connection.recv(4096))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    target = Target("https", "hooks.example.test", listener.getsockname()[1], "/", ("127.0.0.1",))
    with pytest.raises(TransportError) as caught:
        AtLeastOnce().post(target, body=b"{}", headers={})
    thread.join(3)
    listener.close()
    assert not caught.value.permanent  # the handshake failed: nothing was sent
    assert received and received[0][:1] == b"\x16"  # a TLS ClientHello…
    assert b"hooks.example.test" in received[0]  # …naming the host, not the IP
