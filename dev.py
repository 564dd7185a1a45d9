#!/usr/bin/env python3
"""Run Onramp on a fresh machine with nothing but Python 3.11+.

    python3 dev.py run              web + Celery worker + beat, demo data and a demo login
    python3 dev.py test [ARGS...]   ruff, migration check and pytest (ARGS go to pytest)
    python3 dev.py lock             regenerate constraints.txt from pyproject.toml

Standard library only: this script creates ``.venv`` and installs everything else into it. Every
command runs with the virtualenv's Python, so nothing needs to be activated. Settings come from the
environment (see docs/configuration.md); with nothing set, Onramp uses SQLite and a filesystem
Celery broker under ``var/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".onramp-install-stamp"
CONSTRAINTS = ROOT / "constraints.txt"
PYPROJECT = ROOT / "pyproject.toml"

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "onramp-demo"  # noqa: S105 - the documented demo login, local only
BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
STOP_GRACE_SECONDS = 15
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class DevError(Exception):
    """A failure with a message for the developer; printed without a traceback."""


def say(message: str) -> None:
    print(f"dev.py: {message}", flush=True)


def env_flag(name: str) -> bool | None:
    """Strict boolean from the environment; None when unset (same spelling as config/env.py)."""
    value = os.environ.get(name)
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise DevError(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), not {value!r}")


# --- Virtualenv and dependencies ---------------------------------------------------------------


def ensure_venv() -> None:
    if PYTHON.exists():
        probe = subprocess.run(
            [str(PYTHON), "-c", "import sys; print(sys.version_info >= (3, 11))"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return
        raise DevError(
            f"{VENV} exists but its Python is broken or older than 3.11; delete it and rerun"
        )
    say(f"creating virtualenv {VENV.relative_to(ROOT)} with Python {sys.version.split()[0]}")
    try:
        venv.create(VENV, with_pip=True)
    except (subprocess.CalledProcessError, OSError) as error:
        raise DevError(
            f"could not create {VENV} ({error}). On Debian/Ubuntu: apt-get install python3-venv"
        ) from error


def install_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in (PYPROJECT, CONSTRAINTS):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def ensure_installed() -> None:
    """Install the project and its pinned dependencies, unless nothing changed since last time."""
    ensure_venv()
    fingerprint = install_fingerprint()
    if STAMP.exists() and STAMP.read_text().strip() == fingerprint:
        return
    say("installing dependencies (pinned by constraints.txt)")
    command = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    command += ["-c", str(CONSTRAINTS), "-e", ".[dev]"]
    if run(command) != 0:
        raise DevError("pip install failed (see above)")
    STAMP.write_text(fingerprint + "\n")


def project_requirements() -> list[str]:
    """pyproject.toml's dependencies plus the dev extra: what ``.[dev]`` installs."""
    import tomllib  # Python 3.11+; imported late so older Pythons reach the version message

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["dev"]]


def unpinned_requirements() -> list[str]:
    """pyproject requirements (with the dev extra) that constraints.txt does not pin."""
    wanted = project_requirements()
    pinned = {
        _normalise(line.split("==")[0])
        for line in CONSTRAINTS.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    names = [re.match(r"[A-Za-z0-9._-]+", requirement).group() for requirement in wanted]
    return sorted(name for name in names if _normalise(name) not in pinned)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def child_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("VIRTUAL_ENV", None)
    env.update(overrides)
    return env


def run(command: list[str], env: dict[str, str] | None = None) -> int:
    return subprocess.run(command, cwd=ROOT, env=env or child_env()).returncode


def manage(*args: str, env: dict[str, str] | None = None) -> int:
    return run([str(PYTHON), "manage.py", *args], env=env)


# --- dev.py test ---------------------------------------------------------------------------------


def cmd_test(pytest_args: list[str]) -> int:
    ensure_installed()
    unpinned = unpinned_requirements()
    if unpinned:
        say(f"constraints.txt does not pin {', '.join(unpinned)}: run `python3 dev.py lock`")
    env = child_env(DJANGO_SETTINGS_MODULE="config.settings.test")
    py = str(PYTHON)
    steps = [
        ("ruff check", [py, "-m", "ruff", "check", "."]),
        ("ruff format", [py, "-m", "ruff", "format", "--check", "."]),
        ("migrations", [py, "manage.py", "makemigrations", "--check", "--dry-run"]),
        ("pytest", [py, "-m", "pytest", *pytest_args]),
    ]
    results: list[tuple[str, int, float]] = []
    for name, command in steps:
        say(f"--- {name}: {' '.join(command[1:])}")
        started = time.monotonic()
        code = run(command, env=env)
        results.append((name, code, time.monotonic() - started))
    if unpinned:
        results.insert(0, ("lock", 1, 0.0))
    print(flush=True)
    for name, code, seconds in results:
        print(f"  {'ok  ' if code == 0 else 'FAIL'}  {name:<12} {seconds:6.1f}s", flush=True)
    failed = [name for name, code, _ in results if code != 0]
    if failed:
        say(f"FAILED: {', '.join(failed)}")
        return 1
    say("all checks passed")
    return 0


# --- dev.py run ----------------------------------------------------------------------------------

_BOOTSTRAP = """
import json
from django.contrib.auth import get_user_model
from django.core.management import get_commands
from onboarding.models import Event

User = get_user_model()
created = False
if {create_demo!r} and not User.objects.filter(is_superuser=True).exists():
    User.objects.create_superuser({username!r}, "admin@localhost", {password!r})
    created = True
demo = User.objects.filter(username={username!r}, is_superuser=True).first()
print("ONRAMP-BOOTSTRAP " + json.dumps({{
    "created": created,
    "demo_login": bool(demo and demo.check_password({password!r})),
    "superusers": list(User.objects.filter(is_superuser=True).values_list("username", flat=True)),
    "has_events": Event.objects.exists(),
    "has_seed_demo": "seed_demo" in get_commands(),
}}))
"""


def bootstrap_database(env: dict[str, str]) -> dict:
    """Migrate, create the demo superuser if wanted, and report what the database holds."""
    if manage("migrate", "--noinput", env=env) != 0:
        raise DevError("manage.py migrate failed")
    demo_login = env_flag("ONRAMP_DEMO_LOGIN")
    create_demo = demo_login if demo_login is not None else not os.environ.get("DATABASE_URL")
    code = _BOOTSTRAP.format(
        create_demo=create_demo, username=DEMO_USERNAME, password=DEMO_PASSWORD
    )
    result = subprocess.run(
        [str(PYTHON), "manage.py", "shell", "--no-imports", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    for line in result.stdout.splitlines():
        if line.startswith("ONRAMP-BOOTSTRAP "):
            return json.loads(line.removeprefix("ONRAMP-BOOTSTRAP "))
    sys.stderr.write(result.stdout + result.stderr)
    raise DevError("could not inspect the database (see above)")


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class Process:
    """A child process whose output is copied to ours, each line prefixed with its name."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        extra = {"start_new_session": True} if os.name != "nt" else {}
        self.popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            **extra,
        )
        self._pump = threading.Thread(target=self._copy_output, daemon=True)
        self._pump.start()

    def _copy_output(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            sys.stdout.write(f"{self.name:>6} | {line}")
            sys.stdout.flush()

    def poll(self) -> int | None:
        return self.popen.poll()

    def terminate(self) -> None:
        """Ask the process to stop: the worker then finishes its tasks and stops its own pool."""
        if self.popen.poll() is None:
            self.popen.terminate()

    def kill(self) -> None:
        """Kill the process and anything it started (its process group, on POSIX)."""
        if self.popen.poll() is not None:
            return
        try:
            if os.name == "nt":
                self.popen.kill()
            else:
                os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish_output(self) -> None:
        self._pump.join(timeout=2)


def stop_all(processes: list[Process]) -> None:
    """SIGTERM (the worker finishes its current tasks), then SIGKILL after a grace period or at
    a second Ctrl-C."""
    hurry = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: hurry.set())
    for process in processes:
        process.terminate()
    if any(p.poll() is None for p in processes):
        say("waiting for web, worker and beat to stop (Ctrl-C again to kill them)")
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while any(p.poll() is None for p in processes):
        if hurry.is_set() or time.monotonic() > deadline:
            for process in processes:
                if process.poll() is None:
                    say(f"killing {process.name}")
                    process.kill()
                    process.popen.wait()
            break
        time.sleep(0.1)
    for process in processes:
        process.finish_output()


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


def reset_metrics(env: dict[str, str]) -> None:
    """Prometheus multiprocess files (docs/operations.md) belong to one run of the whole service:
    start each ``dev.py run`` with an empty folder, as a production start script should."""
    var_dir = Path(env.get("ONRAMP_VAR_DIR") or ROOT / "var")
    folder = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or var_dir / "metrics")
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)


def cmd_run() -> int:
    ensure_installed()
    port = int(os.environ.get("ONRAMP_PORT", "8000"))
    if port_in_use(port):
        raise DevError(f"port {port} is already in use; stop the other server or set ONRAMP_PORT")
    env = child_env()
    reset_metrics(env)
    state = bootstrap_database(env)
    if not state["has_events"]:
        if state["has_seed_demo"]:
            say("the database has no events: loading demo data (manage.py seed_demo)")
            if manage("seed_demo", env=env) != 0:
                raise DevError("manage.py seed_demo failed")
        else:
            say("the database has no events; seed_demo does not exist yet, so no demo data")

    py = str(PYTHON)
    filesystem_broker = os.environ.get("CELERY_BROKER_URL", "filesystem://") == "filesystem://"
    # prefork works on the filesystem broker too; Windows has no fork, so threads there.
    pool = ["--pool", "threads"] if os.name == "nt" else []
    celery = [py, "-m", "celery", "-A", "config"]
    commands = {
        "web": [py, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        "worker": [*celery, "worker", "-l", "info", "--concurrency", "2", *pool],
        "beat": [*celery, "beat", "-l", "info", "--scheduler", BEAT_SCHEDULER],
    }
    if filesystem_broker:
        # The filesystem transport has no broadcast worth waiting for at start-up.
        commands["worker"] += ["--without-gossip", "--without-mingle"]

    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    processes: list[Process] = []
    exit_code = 0
    try:
        for name, command in commands.items():
            processes.append(Process(name, command, env))
        announce_when_ready(port, state, processes)
        while True:
            for process in processes:
                code = process.poll()
                if code is not None:
                    say(f"{process.name} exited with code {code}; stopping the others")
                    exit_code = code if code > 0 else 1  # 0 is unexpected; <0 was a signal
                    raise _Stop
            time.sleep(0.3)
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        stop_all(processes)
    say("stopped")
    return exit_code


def announce_when_ready(port: int, state: dict, processes: list[Process]) -> None:
    deadline = time.monotonic() + 60
    while not port_in_use(port):
        if time.monotonic() > deadline or processes[0].poll() is not None:
            return  # the main loop reports the dead process
        time.sleep(0.2)
    url = f"http://127.0.0.1:{port}"
    if state["demo_login"]:
        login = f"log in as {DEMO_USERNAME} / {DEMO_PASSWORD}"
    elif state["superusers"]:
        login = f"log in as your superuser ({', '.join(state['superusers'])})"
    else:
        login = "no superuser yet: create one with .venv/bin/python manage.py createsuperuser"
    banner = [f"Onramp is running at {url}/", login, f"health: {url}/healthz", "Ctrl-C stops"]
    width = max(len(line) for line in banner)
    print("\n" + "=" * (width + 4), flush=True)
    for line in banner:
        print(f"  {line}", flush=True)
    print("=" * (width + 4) + "\n", flush=True)


# --- dev.py lock ---------------------------------------------------------------------------------


def cmd_lock() -> int:
    """Resolve pyproject's dependencies (with the dev extra) in a throwaway venv; pin them all."""
    requirements = project_requirements()
    with tempfile.TemporaryDirectory(prefix="onramp-lock-") as tmp:
        say(f"resolving {len(requirements)} requirements in a fresh virtualenv")
        venv.create(tmp, with_pip=True)
        python = str(Path(tmp) / BIN.name / PYTHON.name)
        pip = [python, "-m", "pip", "--disable-pip-version-check"]
        if subprocess.run([*pip, "install", "-q", *requirements], cwd=ROOT).returncode != 0:
            raise DevError("pip install failed (see above)")
        frozen = subprocess.run(
            [*pip, "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
        ).stdout
    pins = sorted(
        (line for line in frozen.splitlines() if line and not line.lower().startswith("onramp")),
        key=str.lower,
    )
    header = [
        "# The pinned versions of every dependency, direct and indirect (pip constraints).",
        "# Generated by `python3 dev.py lock` from pyproject.toml's dependencies and the dev extra;",
        "# do not edit by hand. Installed by `python3 dev.py run|test` with `pip install -c`.",
    ]
    CONSTRAINTS.write_text("\n".join([*header, *pins]) + "\n")
    say(f"wrote {len(pins)} pins to {CONSTRAINTS.name}")
    return 0


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be started by any python3
        print(f"dev.py needs Python 3.11+, this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if command == "run" and not args:
            return cmd_run()
        if command == "test":
            return cmd_test(args)
        if command == "lock" and not args:
            return cmd_lock()
    except DevError as error:
        say(f"error: {error}")
        return 2
    print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
