"""Production smoke job: deploy Onramp the way the README's Production section says, and send one
follow-up through it.

CI's test suite runs in the development environment (``.[dev]``), which hides what a production
install lacks. This job installs only the runtime dependencies, in a fresh virtualenv, and runs:

1. ``pip install -c constraints.txt .`` into ``var/ci/production-venv`` (created anew);
2. an import of every module of ``config``, ``onboarding``, ``dashboard`` and ``triggers`` from
   that install (from a folder outside the checkout, so the installed package is what imports);
3. ``manage.py migrate`` and ``collectstatic`` with ``config.settings.production`` on a fresh
   PostgreSQL database;
4. ``manage.py sources create`` (a write key) and ``manage.py onramp import`` (a template and an
   active rule: email on the event ``Smoke Test Requested``);
5. gunicorn (2 workers), a Celery worker and Celery beat with the DatabaseScheduler, on Redis,
   all from the production virtualenv, with SMTP pointed at a loopback server run here (aiosmtpd);
6. ``identify`` and ``track`` sent by Segment's official Python library (analytics-python, from
   the development environment that runs this script) to gunicorn;
7. then waits for the follow-up email, personalised with the identified trait, at the SMTP server,
   and for ``/healthz`` to report the worker ``ok``.

Every failure prints what failed and the tail of each process's log, and exits 1.

Run it with the development virtualenv from the checkout's root, with PostgreSQL and Redis up:
``.venv/bin/python .ci/production_smoke.py``. ``SMOKE_DATABASE_ADMIN_URL`` (default
``postgres://postgres@127.0.0.1:5432/postgres``) and ``SMOKE_REDIS_URL`` (default
``redis://127.0.0.1:6379``) say where the servers are; the job uses the database ``onramp_smoke``
and Redis databases 0 and 1.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import segment.analytics as analytics
from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "ci"
VENV = WORK / "production-venv"
BIN = VENV / "bin"
DATABASE = "onramp_smoke"
ADMIN_URL = os.environ.get(
    "SMOKE_DATABASE_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("SMOKE_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
APPS = ("config", "onboarding", "dashboard", "triggers")
EVENT = "Smoke Test Requested"
RECIPIENT = "ada.smoke@example.com"
MAIL_DEADLINE_SECONDS = 180  # beat evaluates every 30 s and delivers every 15 s
HEALTH_DEADLINE_SECONDS = 120  # the heartbeat runs every 30 s

CONFIG = f"""\
templates:
  - slug: smoke-welcome
    channel: email
    subject: "Welcome back, {{{{ first_name | default: 'there' }}}}"
    body: |
      Hi {{{{ first_name | default: 'there' }}}}, this is Onramp's production smoke test.
rules:
  - slug: smoke-follow-up
    name: Smoke test follow-up
    status: active
    trigger: {{kind: event, event: {EVENT}}}
    follow_ups: [{{channel: email, template: smoke-welcome, delay: 0s}}]
    reentry: once
"""

IMPORT_EVERY_MODULE = textwrap.dedent(
    """
    import importlib, pkgutil, sys, traceback
    import django
    django.setup()
    failed = []
    count = 0
    for app in sys.argv[1:]:
        package = importlib.import_module(app)
        names = [app] + [
            info.name for info in pkgutil.walk_packages(package.__path__, app + ".")
        ]
        for name in names:
            count += 1
            try:
                importlib.import_module(name)
            except Exception:
                failed.append(name)
                print(f"cannot import {name}:", file=sys.stderr)
                traceback.print_exc()
    where = importlib.import_module(sys.argv[1]).__file__
    print(f"imported {count - len(failed)} of {count} modules from {where}")
    sys.exit(1 if failed else 0)
    """
)


class SmokeFailure(Exception):
    pass


def step(message: str) -> None:
    print(f"smoke: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: list[str], *, env: dict[str, str], cwd: Path = ROOT) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if done.returncode != 0:
        shown = " ".join(command)
        shown = shown if len(shown) < 200 else shown[:200] + "…"
        raise SmokeFailure(
            f"{shown} exited {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done.stdout


def production_env(*, smtp_port: int) -> dict[str, str]:
    """The operator's environment: production settings, every secret from the environment."""
    database_url = urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{DATABASE}"))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE"}
        and not key.startswith(("DJANGO_", "ONRAMP_", "EMAIL_", "CELERY_"))
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        # The TLS-terminating proxy in front of gunicorn redirects to HTTPS; there is none here.
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_STATIC_ROOT=str(WORK / "staticfiles"),
        DATABASE_URL=database_url,
        CELERY_BROKER_URL=f"{REDIS_URL}/0",
        REDIS_URL=f"{REDIS_URL}/1",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(smtp_port),
        DEFAULT_FROM_EMAIL="Onramp smoke <onramp@example.com>",
    )
    return env


def install() -> None:
    step(f"fresh virtualenv {VENV.relative_to(ROOT)}: pip install -c constraints.txt .")
    for stale in (VENV, ROOT / "build"):  # setuptools' build/ could carry deleted modules along
        if stale.exists():
            shutil.rmtree(stale)
    WORK.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    run([base, "-m", "venv", str(VENV)], env=dict(os.environ))
    clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    run(
        [str(BIN / "python"), "-m", "pip", "install", "-q", "-c", "constraints.txt", "."],
        env=clean,
    )
    extras = run([str(BIN / "python"), "-m", "pip", "list", "--format=freeze"], env=clean)
    step(f"installed {len(extras.splitlines())} distributions (runtime dependencies only)")


def import_everything(env: dict[str, str]) -> None:
    step("import every module of the installed package, with production settings")
    with tempfile.TemporaryDirectory() as outside:  # not the checkout: the install must suffice
        out = run(
            [str(BIN / "python"), "-c", IMPORT_EVERY_MODULE, *APPS], env=env, cwd=Path(outside)
        )
    step(out.strip())
    if str(VENV) not in out:
        raise SmokeFailure("the modules were not imported from the production virtualenv")


def fresh_database() -> None:
    step(f"fresh PostgreSQL database {DATABASE}")
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")


def manage(env: dict[str, str], *args: str) -> str:
    return run([str(BIN / "python"), "manage.py", *args], env=env)


class Recorder:
    """aiosmtpd handler that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"


class Process:
    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log = WORK / f"{name}.log"
        self._file = self.log.open("w")
        self.popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise SmokeFailure(f"{self.name} exited {self.popen.returncode}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._file.close()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(f"  {self.name} | {line}" for line in text[-lines:])


def http_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback http
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_for(what: str, deadline: float, probe, processes: list[Process]):
    last = None
    while time.monotonic() < deadline:
        for process in processes:
            process.check_alive()
        try:
            result = probe()
        except OSError as error:  # not listening yet
            result, last = None, error
        if result:
            return result
        time.sleep(1)
    raise SmokeFailure(f"timed out waiting for {what} (last error: {last})")


def send_events(host: str, write_key: str) -> None:
    step(f"Segment's analytics-python sends identify and track to {host}")
    errors: list[str] = []
    analytics.write_key = write_key
    analytics.host = host
    analytics.sync_mode = True
    analytics.max_retries = 3
    analytics.on_error = lambda error, items: errors.append(repr(error))
    analytics.identify("smoke-user-1", {"email": RECIPIENT, "first_name": "Ada"})
    analytics.track("smoke-user-1", EVENT, {"source": "ci"})
    analytics.flush()
    if errors:
        raise SmokeFailure(f"the Segment library reported errors: {errors}")


def main() -> int:
    started = time.monotonic()
    recorder = Recorder()
    smtp = Controller(recorder, hostname="127.0.0.1", port=free_port())
    smtp.start()
    env = production_env(smtp_port=smtp.port)
    processes: list[Process] = []
    try:
        install()
        import_everything(env)
        fresh_database()
        step("manage.py migrate, collectstatic (production settings)")
        manage(env, "migrate", "--noinput")
        manage(env, "collectstatic", "--noinput")
        created = manage(env, "sources", "create", "smoke-web")
        write_key = next(
            line.split(":", 1)[1].strip() for line in created.splitlines() if "Write key:" in line
        )
        config = WORK / "smoke-config.yaml"
        config.write_text(CONFIG)
        step("manage.py onramp import: template smoke-welcome, active rule smoke-follow-up")
        manage(env, "onramp", "import", str(config))

        port = free_port()
        host = f"http://127.0.0.1:{port}"
        step(f"gunicorn (2 workers) on {host}, Celery worker and beat on Redis")
        processes = [
            Process(
                "web",
                [
                    str(BIN / "gunicorn"),
                    "config.wsgi",
                    "-w",
                    "2",
                    "-b",
                    f"127.0.0.1:{port}",
                    "--no-control-socket",
                ],
                env,
            ),
            Process("worker", [str(BIN / "celery"), "-A", "config", "worker", "-l", "info"], env),
            Process(
                "beat",
                [
                    str(BIN / "celery"),
                    "-A",
                    "config",
                    "beat",
                    "-l",
                    "info",
                    "--scheduler",
                    "django_celery_beat.schedulers:DatabaseScheduler",
                    "--schedule",
                    str(WORK / "celerybeat-schedule"),
                ],
                env,
            ),
        ]
        wait_for(
            "/healthz to answer 200",
            time.monotonic() + 60,
            lambda: http_json(f"{host}/healthz")[0] == 200,
            processes,
        )
        send_events(host, write_key)

        def mail_arrived():
            for recipients, raw in recorder.messages:
                if RECIPIENT in recipients:
                    return message_from_bytes(raw, policy=policy.default)
            return None

        mail = wait_for(
            f"the follow-up email to {RECIPIENT}",
            time.monotonic() + MAIL_DEADLINE_SECONDS,
            mail_arrived,
            processes,
        )
        if mail["Subject"] != "Welcome back, Ada":
            raise SmokeFailure(f"unexpected subject {mail['Subject']!r}")
        step(f"SMTP received the follow-up: {mail['Subject']!r} to {RECIPIENT}")
        health = wait_for(
            'the worker "ok" in /healthz',
            time.monotonic() + HEALTH_DEADLINE_SECONDS,
            lambda: (h := http_json(f"{host}/healthz")[1]).get("worker") == "ok" and h,
            processes,
        )
        step(f"/healthz: {json.dumps(health)}")
        if len(recorder.messages) != 1:
            raise SmokeFailure(f"expected exactly one email, got {len(recorder.messages)}")
    except SmokeFailure as failure:
        print(f"smoke: FAILED: {failure}", file=sys.stderr, flush=True)
        for process in processes:
            process.stop()
            print(process.tail(), file=sys.stderr)
        return 1
    finally:
        for process in processes:
            process.stop()
        smtp.stop()
    step(f"passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
