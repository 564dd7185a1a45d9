"""A private, throwaway PostgreSQL server for the fault tests that restart the database.

The machine's PostgreSQL server is shared (other engineers' tests and benchmarks use it), so a test
that restarts PostgreSQL starts its own: ``initdb`` into a fresh temporary directory, listening on
127.0.0.1 on a free port, with its unix socket in that directory; ``pg_ctl`` starts, restarts and
stops it, and the directory is removed afterwards. Nothing here reads or touches
``/etc/postgresql``, the system cluster or port 5432.

``initdb`` and ``postgres`` refuse to run as root, so as root (CI) every server command runs as the
``postgres`` OS user through ``runuser``, and the directory belongs to that user; elsewhere they run
as the current user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.smtp import free_port

SERVER_USER = "postgres"  # the OS user that runs the server when the tests run as root
PG_CTL_WAIT_SECONDS = 60


class PostgresUnavailable(Exception):
    """The server binaries (or, as root, the user to run them as) are not on this machine."""


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (Debian, Ubuntu), or ``pg_ctl``'s on PATH."""
    debian = sorted(
        (path for path in Path("/usr/lib/postgresql").glob("*/bin") if path.name == "bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else -1,
    )
    for bindir in reversed(debian):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl and Path(pg_ctl).with_name("initdb").exists():
        return Path(pg_ctl).parent
    return None


class ThrowawayPostgres:
    """One PostgreSQL server in a temporary directory; ``destroy()`` always cleans up."""

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise PostgresUnavailable(
                "no initdb/pg_ctl under /usr/lib/postgresql/*/bin or on PATH "
                "(install the PostgreSQL server package)"
            )
        self.bindir = bindir
        self.runner: list[str] = []
        self.owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                self.owner = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root and there is no {SERVER_USER!r} OS user to run the server"
                ) from None
            if runuser is None:
                raise PostgresUnavailable("running as root and runuser is not installed")
            self.runner = [runuser, "-u", SERVER_USER, "--"]
        self.password = secrets.token_hex(16)
        self.directory: Path | None = None
        self.port = 0

    @property
    def data(self) -> Path:
        assert self.directory is not None, "start() first"
        return self.directory / "data"

    @property
    def log(self) -> Path:
        assert self.directory is not None, "start() first"
        return self.directory / "server.log"

    def url(self, database: str) -> str:
        return f"postgres://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """initdb into a new temporary directory and start the server (fsync on, the default)."""
        self.directory = Path(tempfile.mkdtemp(prefix="onramp-pg-"))
        self._hand_over(self.directory)
        if (
            self.runner
            and subprocess.run([*self.runner, "test", "-w", str(self.directory)]).returncode
        ):
            raise RuntimeError(
                f"the {SERVER_USER!r} user cannot reach {self.directory}: point TMPDIR at a "
                "directory every user can enter, such as /tmp"
            )
        password_file = self.directory / "password"
        password_file.write_text(self.password + "\n")
        password_file.chmod(0o600)
        self._hand_over(password_file)
        # TCP connections (gunicorn, the test) need the password. The unix socket lives in a
        # directory only the server's user can enter, and trusts that user. initdb's own files
        # need not survive a machine crash (--no-sync): the server is thrown away.
        self._run(
            "initdb",
            ["-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"],
            ["--auth-host=scram-sha-256", "--auth-local=trust", f"--pwfile={password_file}"],
        )
        password_file.unlink()
        for attempt in range(3):  # a free port can be taken between choosing it and binding it
            self.port = free_port()
            self._configure()
            try:
                self.pg_ctl("start")
                return
            except RuntimeError:
                if attempt == 2 or "already in use" not in self.log_text():
                    raise

    def _hand_over(self, path: Path) -> None:
        """Make ``path`` the server user's, when the tests run as root."""
        if self.owner is not None:
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)

    def _configure(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.directory}'",
            "fsync": "on",  # the defaults, stated: a COMMIT returns once its WAL is on disk
            "synchronous_commit": "on",
            "max_connections": "50",
        }
        lines = "".join(f"{name} = {value}\n" for name, value in settings.items())
        # Later lines win, so a retry on another port only appends.
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# onramp fault test\n" + lines)

    def pg_ctl(self, action: str, *extra: str) -> None:
        """``pg_ctl ACTION`` on this server, waiting until it is done (``-w``)."""
        self._run(
            "pg_ctl",
            [action, "-D", str(self.data), "-l", str(self.log), "-w"],
            ["-t", str(PG_CTL_WAIT_SECONDS), *extra],
        )

    def restart_immediate(self) -> float:
        """``pg_ctl restart -m immediate``: every backend is killed without a checkpoint, like a
        crash, and the server comes back through crash recovery. Returns the seconds until it
        accepts connections again."""
        started = time.monotonic()
        self.pg_ctl("restart", "-m", "immediate")
        return time.monotonic() - started

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def destroy(self, keep_log: Path | None = None) -> None:
        """Stop the server (immediately) and remove its directory; safe at any stage, and after a
        failure. ``keep_log`` receives a copy of the server's log."""
        if self.directory is None:
            return
        try:
            if keep_log is not None and self.log.exists():
                shutil.copyfile(self.log, keep_log)
            if (self.data / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.pg_ctl("stop", "-m", "immediate")
                self._kill_leftover_postmaster()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _kill_leftover_postmaster(self) -> None:
        """SIGKILL the postmaster if ``pg_ctl stop`` could not stop it (only ours: its command
        line names our data directory)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return
        if str(self.data).encode() in command_line:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _run(self, program: str, *arguments: list[str]) -> None:
        command = [*self.runner, str(self.bindir / program)]
        for part in arguments:
            command += part
        # The server's user may not be able to enter the test's working directory.
        result = subprocess.run(
            command,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PG_CTL_WAIT_SECONDS + 30,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n"
                f"{result.stderr}\n--- server log ---\n{self.log_text()[-3000:]}"
            )
