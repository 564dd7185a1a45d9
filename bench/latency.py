"""Detection and delivery latency with the real worker and beat (DESIGN §5).

    python bench/latency.py [--people 120] [--minutes 2] [--spread 90]

"Real time" for an idle rule is the time from a person's deadline (last activity + N minutes) to
their enrollment, plus the time from a follow-up's due time to its send. Both depend on the beat
schedule (evaluation every 30 s, delivery every 15 s: ``triggers/schedules.py``) and on how long
a tick takes, so this benchmark runs the production processes and measures them end to end:

1. creates its own database (``DATABASE_URL``, default
   ``postgres://postgres@127.0.0.1:5432/onramp_bench_latency``; dropped and re-created), migrates;
2. imports a 3-step flow, an email template and an active rule ``inactive_in_flow`` (``--minutes``)
   with two follow-ups, at 0 s and at 1 minute after the deadline;
3. starts an SMTP server on loopback (aiosmtpd, in this process), gunicorn, a Celery worker and
   Celery beat with the DatabaseScheduler (production settings; ``CELERY_BROKER_URL``, default
   ``redis://127.0.0.1:6379/0``);
4. over ``--spread`` seconds, ``--people`` people each send ``identify`` and the flow's entry
   event through ``/v1/batch``, then go idle; their deadlines fall at every phase of the ticks;
5. waits until every person's two emails were sent (or a time-out), then reads the ledger:
   - detection: enrollment (the tick writing the person's follow-ups) minus the deadline;
   - delivery: the send minus the due time, for the follow-ups due after their enrollment (the
     1-minute ones), so that detection is not counted twice;
   - end to end: the first email's send minus the deadline.
Prints p50, p95 and max of each, against what the schedule allows (the tick interval).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import (  # noqa: E402 - bench/common.py, next to this file
    database_url,
    free_port,
    machine,
    migrate,
    percentile,
    print_machine,
    print_table,
    recreate_database,
    server_env,
    start_gunicorn,
    stop_gunicorn,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/onramp_bench_latency"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
FLOW_EVENTS = ("Signed Up", "Email Verified", "Project Created")

CONFIG = """\
flows:
  - slug: activation
    name: Activation
    window: 7d
    steps:
      - {{name: Signed up, event: Signed Up}}
      - {{name: Email verified, event: Email Verified}}
      - {{name: First project, event: Project Created}}
templates:
  - slug: idle-nudge
    channel: email
    subject: "Still there, {{{{ first_name | default: 'there' }}}}?"
    body: "Hi {{{{ first_name | default: 'there' }}}}, pick up where you left off."
rules:
  - slug: idle-nudge
    name: Idle nudge
    status: active
    trigger: {{kind: inactive_in_flow, flow: activation, minutes: {minutes}}}
    follow_ups:
      - {{channel: email, template: idle-nudge, delay: 0s}}
      - {{channel: email, template: idle-nudge, delay: 1m}}
    exit_when: progressed
    reentry: once
"""


class Recorder:
    """aiosmtpd handler counting what it receives."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server, session, envelope):
        self.received += 1
        return "250 OK"


def celery(role: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    command = [str(Path(sys.executable).with_name("celery")), "-A", "config", role, *args]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def post_batch(port: int, write_key: str, batch: list[dict]) -> None:
    auth = base64.b64encode(f"{write_key}:".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/v1/batch",
        json.dumps({"batch": batch}),
        {"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
    )
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200:
        raise SystemExit(f"/v1/batch answered {response.status}: {body[:300]!r}")


def send_people(port: int, write_key: str, people: int, spread: float) -> None:
    """Each person enters the flow at an even pace over ``spread`` seconds, then goes idle."""
    start = time.monotonic()
    for i in range(people):
        pause = start + i * spread / people - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        now = datetime.now(UTC).isoformat()
        user = f"lat-{i}"
        post_batch(
            port,
            write_key,
            [
                {
                    "type": "identify",
                    "userId": user,
                    "traits": {"email": f"{user}@example.com", "first_name": f"P{i}"},
                    "timestamp": now,
                    "messageId": f"{user}-identify",
                },
                {
                    "type": "track",
                    "userId": user,
                    "event": FLOW_EVENTS[0],
                    "timestamp": now,
                    "messageId": f"{user}-signup",
                },
            ],
        )


def ledger(minutes: int):
    """(detection, delivery, end-to-end) seconds, and how many messages were sent."""
    from django.db.models import Max

    from onboarding.models import Event
    from triggers.models import Message

    idle = timedelta(minutes=minutes)
    last = dict(
        Event.objects.filter(user_id__startswith="lat-")
        .values_list("person_id")
        .annotate(last=Max("timestamp"))
    )
    detection, delivery, end_to_end = [], [], []
    sent = 0
    for message in Message.objects.filter(person_id__in=last).order_by("pk"):
        if message.sent_at is None:
            continue
        sent += 1
        deadline = last[message.person_id] + idle
        if message.step == 0:
            detection.append((message.created_at - deadline).total_seconds())
            end_to_end.append((message.sent_at - deadline).total_seconds())
        if message.due_at > message.created_at:
            delivery.append((message.sent_at - message.due_at).total_seconds())
    return detection, delivery, end_to_end, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=120)
    parser.add_argument("--minutes", type=int, default=2, help="the rule's idle minutes (2)")
    parser.add_argument("--spread", type=float, default=90.0, help="seconds of arrivals (90)")
    args = parser.parse_args()
    url = database_url(DEFAULT_URL, "bench/latency.py")
    broker = os.environ.get("CELERY_BROKER_URL") or DEFAULT_BROKER
    info = machine(url.rsplit("/", 1)[0] + "/postgres")
    recreate_database(url)
    migrate(url)  # sets Django up in this process, on the bench database

    from aiosmtpd.controller import Controller
    from django.core.management import call_command

    from onboarding.services.sources import source_create

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(CONFIG.format(minutes=args.minutes))
    call_command("onramp", "import", config.name, verbosity=0)
    write_key = source_create(name="latency").write_key

    recorder = Recorder()
    smtp = Controller(recorder, hostname="127.0.0.1", port=free_port())
    smtp.start()
    env = server_env(url) | {
        "CELERY_BROKER_URL": broker,
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp.port),
        "ONRAMP_LOG_LEVEL": "INFO",
    }
    logs = Path(tempfile.mkdtemp(prefix="onramp-latency-"))
    port = free_port()
    web = start_gunicorn(env, port, workers=2, threads=1)
    worker = celery("worker", ["-l", "info", "--concurrency", "2"], env, logs / "worker.log")
    beat_args = ["-l", "info", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
    beat_args += ["--schedule", str(logs / "celerybeat-schedule")]
    beat = celery("beat", beat_args, env, logs / "beat.log")
    wanted = 2 * args.people
    try:
        print(f"{args.people} people arriving over {args.spread:.0f} s; rule idle {args.minutes} m")
        send_people(port, write_key, args.people, args.spread)
        deadline = time.monotonic() + args.minutes * 60 + 60 + 240
        sent = 0
        while time.monotonic() < deadline:
            *_, sent = ledger(args.minutes)
            if sent >= wanted:
                break
            for process, name in ((worker, "worker"), (beat, "beat"), (web, "gunicorn")):
                if process.poll() is not None:
                    raise SystemExit(f"{name} exited; logs in {logs}")
            time.sleep(2)
        detection, delivery, end_to_end, sent = ledger(args.minutes)
    finally:
        stop(beat)
        stop(worker)
        stop_gunicorn(web)
        smtp.stop()
    print_machine(info)
    print(f"sent {sent} of {wanted} follow-ups; the SMTP server received {recorder.received}")
    if not detection or not delivery:
        raise SystemExit(f"too few sends to measure; logs in {logs}")

    def row(name: str, values: list[float], allowed: str) -> list[str]:
        return [
            name,
            str(len(values)),
            f"{percentile(values, 0.5):.1f}",
            f"{percentile(values, 0.95):.1f}",
            f"{max(values):.1f}",
            allowed,
        ]

    print()
    print_table(
        ["latency (s)", "n", "p50", "p95", "max", "schedule allows"],
        [34, 5, 6, 6, 6, 28],
        [
            row("deadline → enrolled (detection)", detection, "≤ 30 s + tick (evaluate)"),
            row("due → sent (delivery)", delivery, "≤ 15 s + pass (deliver)"),
            row("deadline → first email sent", end_to_end, "≤ 45 s + tick + pass"),
        ],
    )


if __name__ == "__main__":
    main()
