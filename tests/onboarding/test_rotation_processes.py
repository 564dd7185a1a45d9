"""``sources rotate`` without grace means now, in every web process (docs/support.md, docs/api.md).

A real gunicorn with two sync workers serves the test database. Both workers first accept the old
key (the gunicorn access log names the worker's pid for every request, so "both" is checked, not
hoped for); the key is then rotated, and every one of the next requests with the old key, spread
over both workers, must be a 401. Before the fix each worker cached keys for 5 s, and the old key
kept working there for up to that long.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from onboarding.services.sources import source_create, source_rotate
from tests.smtp import free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(settings.BASE_DIR)
AFTER_ROTATION = 40  # requests with the old key after the rotation (at least this many)
ACCESS = re.compile(r"^pid=<?(\d+)>? status=(\d+) n=(\d+)$", re.MULTILINE)


class Gunicorn:
    """``gunicorn config.wsgi`` with two sync workers, each access log line naming its worker."""

    def __init__(self, tmp_path: Path) -> None:
        env = dict(os.environ)
        name = str(connection.settings_dict["NAME"])
        if connection.vendor == "sqlite":
            env["ONRAMP_SQLITE_PATH"] = name
        else:
            parts = urlsplit(os.environ["DATABASE_URL"])
            env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + name))
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings.test",
            ONRAMP_VAR_DIR=str(tmp_path / "var"),
            ONRAMP_LOG_LEVEL="WARNING",
        )
        self.port = free_port()
        self.access = tmp_path / "access.log"
        self.log = tmp_path / "gunicorn.log"
        self._log_file = self.log.open("w")
        command = [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi:application"]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--timeout", "30"]
        command += ["--no-control-socket", "--access-logfile", str(self.access)]
        command += ["--access-logformat", "pid=%(p)s status=%(s)s n=%({x-n}i)s"]
        self.popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def workers(self) -> set[int]:
        try:
            text = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children").read_text()
        except OSError:
            return set()
        return {int(pid) for pid in text.split()}

    def served(self) -> dict[int, tuple[int, int]]:
        """Request number → (worker pid, status), from the access log."""
        text = self.access.read_text() if self.access.exists() else ""
        return {int(n): (int(pid), int(status)) for pid, status, n in ACCESS.findall(text)}

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=15)
        self._log_file.close()


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Gunicorn]:
    server = Gunicorn(tmp_path)
    try:
        yield server
    finally:
        server.stop()


class Client:
    def __init__(self, server: Gunicorn, first: int = 0) -> None:
        self.server = server
        self.first = self.sent = first  # numbers this client's requests first + 1, first + 2, …

    def track(self, key: str) -> int:
        """One ``/v1/track`` on a new connection (so the two workers share the requests)."""
        self.sent += 1
        body = json.dumps({"userId": "u1", "event": "Ping", "messageId": f"m-{self.sent}"})
        auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=20)
        try:
            headers = {"Authorization": auth, "Content-Type": "application/json"}
            conn.request("POST", "/v1/track", body, headers={**headers, "X-N": str(self.sent)})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def logged(self, deadline: float = 10) -> dict[int, tuple[int, int]]:
        """The access log once it has every request sent so far (a line follows its response)."""
        stop = time.monotonic() + deadline
        wanted = set(range(self.first + 1, self.sent + 1))
        while not wanted <= (served := self.server.served()).keys() and time.monotonic() < stop:
            time.sleep(0.02)
        return {n: entry for n, entry in served.items() if n in wanted}


def wait_ready(server: Gunicorn, key: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.popen.poll() is not None:
            pytest.fail(f"gunicorn exited:\n{server.log.read_text()[-4000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if len(server.workers()) == 2 and Client(server).track(key) in (200, 401):
                return
        time.sleep(0.2)
    pytest.fail(f"gunicorn did not answer within {timeout:.0f}s:\n{server.log.read_text()[-4000:]}")


def test_the_old_key_gets_401_from_every_worker_at_once_after_rotate(gunicorn: Gunicorn) -> None:
    old = source_create(name="web").write_key
    wait_ready(gunicorn, "onr_not-a-key")
    client = Client(gunicorn, first=1000)  # the readiness probes are numbered from 1

    # Both workers accept the old key, each within the last few requests before the rotation.
    for _ in range(200):
        assert client.track(old) == 200
        recent = [pid for n, (pid, _) in client.logged().items() if n > client.sent - 6]
        if len(set(recent)) == 2:
            break
    else:
        pytest.fail(f"one worker served every request: {client.logged()}")
    rotated_at = client.sent

    issued = source_rotate(name="web")  # what ``manage.py sources rotate web`` runs

    statuses = [client.track(old) for _ in range(AFTER_ROTATION)]
    while len({pid for n, (pid, _) in client.logged().items() if n > rotated_at}) < 2:
        assert client.sent < rotated_at + 200, "one worker served every request after the rotation"
        statuses.append(client.track(old))
    after = {n: entry for n, entry in client.logged().items() if n > rotated_at}
    by_worker = {
        pid: sorted({s for p, s in after.values() if p == pid}) for pid, _ in after.values()
    }
    assert set(statuses) == {401}, f"old key after rotate, per worker: {by_worker}"
    assert len(by_worker) == 2 and all(codes == [401] for codes in by_worker.values())
    assert client.track(issued.write_key) == 200  # the new key works at once too
