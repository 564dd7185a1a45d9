"""A client that sends batches to ``/v1/batch`` the way a Segment library does, for fault tests.

Batches with unique messageIds; timeouts, connection errors, 5xx and 429 are retried with the SAME
body (the same messageIds) after a backoff with jitter, honouring ``Retry-After`` (capped at 1 s to
keep runs short). Every ``REPLAY_EVERY``-th batch is sent again after its 2xx, as a client whose
response got lost would. The client records what it saw, with the time it saw it; the test judges.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

REPLAY_EVERY = 10
REQUEST_TIMEOUT = 20.0
# What a client sees when the worker serving its request is killed: the connection is reset or
# closed before (or while) the response arrives. ``RemoteDisconnected`` is a ConnectionResetError.
# A timeout or a refused connection is not one of these.
WORKER_KILLED_ERRORS = (ConnectionResetError, BrokenPipeError, http.client.IncompleteRead)

Batch = tuple[list[str], bytes]  # the messageIds, the encoded body
Response = tuple[int, int | None, bytes]  # status, Retry-After in seconds, body


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: set[str] = field(default_factory=set)
    acked_batches: int = 0
    requests: int = 0
    events_sent: int = 0  # events in every request, retries and replays included
    statuses: Counter = field(default_factory=Counter)  # 0: no response (a connection error)
    responses: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, status)
    # (monotonic time the request was sent, time the error was seen, exception type)
    connection_errors: list[tuple[float, float, str]] = field(default_factory=list)
    retries: int = 0
    replays: int = 0
    bad_503: list[str] = field(default_factory=list)  # not "database_unavailable" + Retry-After
    bad_429: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # 500s, other 4xx, bad 200s, odd errors

    def record_response(self, ids: list[str], replay: bool, response: Response) -> None:
        status, wait, payload = response
        with self.lock:
            self.requests += 1
            self.events_sent += len(ids)
            self.statuses[status] += 1
            self.responses.append((time.monotonic(), status))
            if status == 200:
                if json.loads(payload) != {"success": True}:
                    self.unexpected.append(f"200 with {payload[:200]!r}")
                self.acked.update(ids)
                self.acked_batches += not replay
                self.replays += replay
                return
            self.retries += 1
            if status == 503:
                code = json.loads(payload).get("error", {}).get("code")
                if code != "database_unavailable" or wait is None or wait < 1:
                    self.bad_503.append(f"Retry-After {wait}: {payload[:200]!r}")
            elif status == 429:
                if wait is None or wait < 1:
                    self.bad_429.append(f"Retry-After {wait}: {payload[:200]!r}")
            else:  # a 500, or a 4xx other than 429: never retried away
                self.unexpected.append(f"{status}: {payload[:300]!r}")

    def record_error(self, ids: list[str], sent: float, error: Exception) -> None:
        with self.lock:
            self.requests += 1
            self.events_sent += len(ids)
            self.statuses[0] += 1
            self.retries += 1
            self.connection_errors.append((sent, time.monotonic(), type(error).__name__))
            if not isinstance(error, WORKER_KILLED_ERRORS):
                self.unexpected.append(f"connection error {error!r}")


def make_batches(events: int, size: int, seed: int) -> list[Batch]:
    """Identify and track events for ``events // 10`` people, so that concurrent batches contend on
    the same people; messageIds ``fault-000000`` onwards."""
    rng = random.Random(seed)
    batches = []
    for start in range(0, events, size):
        items = []
        for n in range(start, min(start + size, events)):
            user = f"u{rng.randrange(events // 10 + 1):05d}"
            if n % 10 == 0:
                item = {"type": "identify", "userId": user, "traits": {"plan": "pro", "n": n}}
            else:
                event = rng.choice(["Signed Up", "Project Created", "Invite Sent"])
                item = {"type": "track", "userId": user, "event": event, "properties": {"n": n}}
            items.append({**item, "messageId": f"fault-{n:06d}"})
        body = json.dumps({"batch": items}).encode()
        batches.append(([item["messageId"] for item in items], body))
    return batches


def _post(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> Response:
    conn.request("POST", "/v1/batch", body, headers)
    response = conn.getresponse()
    payload = response.read()
    value = (response.getheader("Retry-After") or "").strip()
    return response.status, int(value) if value.isdigit() else None, payload


def send_all(
    port: int,
    key: str,
    batches: list[Batch],
    tally: Tally,
    *,
    stop_at: float,
    cancelled: threading.Event,
    rng: random.Random,
) -> None:
    """Send every batch until it is acknowledged (a 200). Stop as soon as ``cancelled`` is set;
    at ``stop_at``, record that the batch was given up and set ``cancelled`` for every client."""
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
        "Content-Type": "application/json",
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    for index, (ids, body) in enumerate(batches):
        for replay in [False, True] if index % REPLAY_EVERY == 0 else [False]:
            attempt = 0
            while True:
                if time.monotonic() > stop_at:
                    with tally.lock:
                        tally.unexpected.append(f"gave up on batch {ids[0]} at the deadline")
                    cancelled.set()
                if cancelled.is_set():
                    conn.close()
                    return
                sent = time.monotonic()
                try:
                    status, wait, payload = _post(conn, body, headers)
                except (OSError, http.client.HTTPException) as error:
                    conn.close()  # the next request opens a new connection
                    tally.record_error(ids, sent, error)
                    status, wait = 0, None
                else:
                    tally.record_response(ids, replay, (status, wait, payload))
                if status == 200:
                    break
                attempt += 1
                backoff = min(1.0, 0.05 * 2**attempt) * rng.uniform(0.5, 1.5)
                time.sleep(min(1.0, wait) if wait else backoff)
    conn.close()
