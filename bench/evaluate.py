"""Rule-evaluation benchmark (DESIGN §5): one ``evaluate_rules`` tick with 20 active rules.

    python bench/evaluate.py [--scale 1.0] [--keep-db | --reuse-db]

At scale 1: 1 M people, 100 k of them mid-onboarding (a ``FlowProgress`` row, not completed) in
the 5-step flow ``activation`` (7-day window), with ``last_seen`` spread so that a realistic share
(about 1-2 %) becomes due in a 30-second tick; the others completed the flow (some of them still
active: sharing reports, trials ending) or never entered it; about 5 M events, live traffic in the
minutes of the ticks. 20 active rules of every kind: 12 ``inactive_in_flow`` (2 to 60 minutes,
some at a step, two with a segment), 2 ``step_abandoned``, 2 ``repeated_event``, 2
``inactive_sessions``, 1 ``milestone``, 1 ``event``.

1. creates its own database (``DATABASE_URL``, default
   ``postgres://postgres@127.0.0.1:5432/onramp_bench_eval``; dropped and re-created), migrates it;
2. creates the flow, a segment, templates and rules through the configuration importer;
3. generates people, events and flow progress in Python (seeded) and loads them with ``COPY``,
   then ``VACUUM ANALYZE``;
4. after a ``CHECKPOINT``, times ticks of ``evaluate_rules``, each 30 s after the previous one (so
   each sees fresh due windows): a warm-up, then ``ANALYZE`` of the tables ticks write (as
   autovacuum would soon after; ``--cold-plans`` leaves it out, see :func:`analyze_tick_tables`),
   then the median of 3; the CPU each tick used here and
   in its PostgreSQL backend (when the server is local), the queries, per kind of rule the time
   and occurrences found; EXPLAIN ANALYZE of the main detector query (inactive in flow);
5. adds 1 M more people who are *not* due (completed long ago, or idle for weeks with their
   window closed) with their events and progress, ``ANALYZE``, and times 3 more ticks: the cost must
   follow the people due, not the people stored (ratio printed).

``--keep-db`` keeps the database (with both phases' people, and the ticks' writes).
``--reuse-db`` times again on such a kept database, without generating anything: it migrates it,
undoes what ticks wrote (enrollments, follow-ups, decisions, assignments, the rules' watermarks),
and ticks the moments of both phases, all with the 2 M people stored (so the ratio is not
measured: the kept database has no 1 M state), a stricter case for the per-tick time than phase 1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import (  # noqa: E402 - bench/common.py, next to this file
    bulk_load,
    copy_tables,
    drop_database,
    machine,
    migrate,
    recreate_database,
    reset_sequences,
    ts_text,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/onramp_bench_eval"
SEED = 20261202
END = datetime(2026, 2, 5, 12, 0, tzinfo=UTC)  # the latest event received
TICK = 30
TICKS = 4  # per phase: a warm-up and 3 timed
FIRST_TICK = END - timedelta(seconds=2 * TICKS * TICK)
WINDOW = 7 * 86400
HOUR, DAY = 3600, 86400
STEP_EVENTS = [
    "Signed Up",
    "Email Verified",
    "Profile Completed",
    "Project Created",
    "Teammate Invited",
]
STEP_PROPERTIES = ['{"source":"ads"}', "{}", '{"completionPercentage":100}', "{}", "{}"]
SOURCES = ["ads", "organic", "referral"]
PLANS = ["free", "free", "free", "pro", "team"]
NAMES = ["Alice", "Bruno", "Chloe", "Dmitri", "Emma", "Farah", "Hana", "Ivan", "Lena", "Omar"]

CONFIG = """\
flows:
  - slug: activation
    name: Activation
    window: 7d
    steps:
      - {name: Signed up, event: Signed Up}
      - {name: Email verified, event: Email Verified}
      - {name: Profile completed, event: Profile Completed, where: {completionPercentage: 100}}
      - {name: Project created, event: Project Created}
      - {name: Teammate invited, event: Teammate Invited}
segments:
  - slug: from-ads
    name: From ads
    match: all
    conditions:
      - {trait: source, op: eq, value: ads}
templates:
  - {slug: nudge, channel: in_app, body: "Need a hand, {{ first_name | default: 'there' }}?"}
  - {slug: mail, channel: email, subject: Hello, body: "Hi {{ first_name | default: 'there' }}"}
rules:
"""
RULES = [
    # (slug, trigger, segment)
    *[
        (f"idle-{m}m", {"kind": "inactive_in_flow", "flow": "activation", "minutes": m}, None)
        for m in (2, 3, 5, 10, 15, 30, 45, 60)
    ],
    (
        "idle-s2-5m",
        {"kind": "inactive_in_flow", "flow": "activation", "step": 2, "minutes": 5},
        "from-ads",
    ),
    (
        "idle-s3-10m",
        {"kind": "inactive_in_flow", "flow": "activation", "step": 3, "minutes": 10},
        None,
    ),
    (
        "idle-s3-30m",
        {"kind": "inactive_in_flow", "flow": "activation", "step": 3, "minutes": 30},
        "from-ads",
    ),
    (
        "idle-s4-20m",
        {"kind": "inactive_in_flow", "flow": "activation", "step": 4, "minutes": 20},
        None,
    ),
    (
        "abandon-2-3",
        {"kind": "step_abandoned", "flow": "activation", "did": 2, "missing": 3, "within": "30m"},
        None,
    ),
    (
        "abandon-3-4",
        {"kind": "step_abandoned", "flow": "activation", "did": 3, "missing": 4, "within": "1h"},
        None,
    ),
    (
        "failures",
        {"kind": "repeated_event", "event": "Task Failed", "times": 3, "within": "10m"},
        None,
    ),
    (
        "payment-failures",
        {"kind": "repeated_event", "event": "Payment Failed", "times": 2, "within": "1h"},
        None,
    ),
    ("sessions-3", {"kind": "inactive_sessions", "flow": "activation", "sessions": 3}, None),
    ("sessions-2", {"kind": "inactive_sessions", "flow": "activation", "sessions": 2}, None),
    (
        "reports",
        {"kind": "milestone", "flow": "activation", "event": "Report Shared", "times": 5},
        None,
    ),
    ("trial-ending", {"kind": "event", "event": "Trial Ending", "where": {"plan": "pro"}}, None),
]


def rules_yaml() -> str:
    lines = []
    for slug, trigger, segment in RULES:
        channel, template = ("email", "mail") if "abandon" in slug else ("in_app", "nudge")
        exit_when = "progressed" if "flow" in trigger else "never"
        lines += [
            f"  - slug: {slug}",
            f"    name: {slug}",
            "    status: active",
            f"    trigger: {json.dumps(trigger)}",
            *([f"    segment: {segment}"] if segment else []),
            f"    follow_ups: [{{channel: {channel}, template: {template}, delay: 0s}}]",
            f"    exit_when: {exit_when}",
            "    reentry: {once_per: 1d}",
        ]
    return CONFIG + "\n".join(lines) + "\n"


# --- data ------------------------------------------------------------------------------------


class Writer:
    """COPY text for people, events and flow progress, with running ids."""

    def __init__(self, workdir: Path, source_id: int, flow_id: int, first_person: int = 1) -> None:
        self.people = open(workdir / "people.copy", "w")  # noqa: SIM115
        self.events = open(workdir / "events.copy", "w")  # noqa: SIM115
        self.progress = open(workdir / "progress.copy", "w")  # noqa: SIM115
        self.source_id, self.flow_id = source_id, flow_id
        self.person_id = first_person - 1
        self.event_id = self.progress_id = 0
        self.counts: dict[str, int] = defaultdict(int)

    def close(self) -> None:
        for f in (self.people, self.events, self.progress):
            f.close()

    def person(self, rng: random.Random, events: list[tuple[int, str, str]]) -> list[int]:
        """Write a person and their events (epoch seconds, name, properties); the event ids."""
        self.person_id += 1
        pid = self.person_id
        events.sort()
        user = f"u{pid}"
        traits = (
            f'{{"plan": "{rng.choice(PLANS)}", "source": "{rng.choice(SOURCES)}", '
            f'"first_name": "{rng.choice(NAMES)}"}}'
        )
        self.people.write(
            f"{pid}\t{user}\t{traits}\t{{}}\t{user}@example.com\t\tEurope/Berlin\t"
            f"{ts_text(events[0][0])}\t{ts_text(events[-1][0])}\t{{}}\n"
        )
        ids = []
        for at, name, props in events:
            self.event_id += 1
            text = ts_text(at)
            self.events.write(
                f"{self.event_id}\t{self.source_id}\t{pid}\ttrack\t{name}\t{text}\t{text}\t"
                f"m{self.event_id}\t{user}\t\t{props}\t{{}}\n"
            )
            ids.append(self.event_id)
        self.counts["people"] += 1
        self.counts["events"] += len(events)
        return ids

    def flow_progress(self, entry_id: int, step_times: list[int], completed: bool) -> None:
        self.progress_id += 1
        entered, reached = step_times[0], step_times[-1]
        offsets = [str((t - entered) * 1_000_000) for t in step_times[1:8]]
        columns = "\t".join(offsets + ["\\N"] * (8 - len(offsets)))  # offset_2..8, offsets_after
        self.progress.write(
            f"{self.progress_id}\t{self.flow_id}\t{self.person_id}\t{ts_text(entered)}\t"
            f"{entry_id}\t{ts_text(entered)}\t{len(step_times)}\t{columns}\t"
            f"{ts_text(reached)}\t{ts_text(reached) if completed else chr(92) + 'N'}\t"
            # Progress last changed when the furthest step was reached (not at the end of the
            # data: that would make everyone's progress "changed" in every tick's interval).
            f"{ts_text(entered + WINDOW)}\t{ts_text(reached)}\t\\N\t\\N\t\\N\n"
        )
        self.counts["completed" if completed else "in progress"] += 1


def _steps_before(rng: random.Random, reached: int, furthest: int, mean_gap: int) -> list[int]:
    times = [reached]
    for _ in range(furthest - 1):
        times.append(times[-1] - int(rng.expovariate(1 / mean_gap)) - 1)
    return times[::-1]


def mid_onboarding(rng: random.Random, w: Writer, end: int) -> None:
    """In the flow, not completed; 40 % active in the last 2 hours, the rest over 6 days."""
    last = end - (
        rng.randrange(2 * HOUR) if rng.random() < 0.4 else rng.randrange(2 * HOUR, 6 * DAY)
    )
    events: list[tuple[int, str, str]] = [(last, "Page Viewed", '{"path":"/app"}')]
    t = last
    if rng.random() < 0.15:  # came back for a few sessions without progressing
        for _ in range(rng.randint(2, 4)):
            t -= rng.randint(35 * 60, 3 * HOUR)
            events.append((t, "Logged In", "{}"))
    if rng.random() < 0.08:  # a burst of failures just before going quiet
        for k in range(rng.randint(2, 4)):
            events.append((last - 60 * k - 1, "Task Failed", '{"task":"import_csv"}'))
    for _ in range(rng.randint(0, 2)):
        events.append((t - rng.randrange(1, 600), "Settings Opened", "{}"))
    furthest = rng.choices((1, 2, 3, 4), (30, 30, 25, 15))[0]
    reached = t - int(rng.expovariate(1 / 600)) - 1
    steps = _steps_before(rng, reached, furthest, 900)
    step_ids = []
    base = len(events)
    for k, at in enumerate(steps):
        events.append((at, STEP_EVENTS[k], STEP_PROPERTIES[k]))
    if furthest == 2 and rng.random() < 0.3:
        events.append((reached + 60, "Profile Completed", '{"completionPercentage":40}'))
    order = sorted(range(len(events)), key=lambda i: events[i])
    ids = w.person(rng, events)
    position = {original: ids[rank] for rank, original in enumerate(order)}
    step_ids = [position[base + k] for k in range(furthest)]
    w.flow_progress(step_ids[0], steps, completed=False)


def completed(rng: random.Random, w: Writer, end: int, *, recent_share: float) -> None:
    """Completed the flow; some are active users now (reports, trials, failed payments)."""
    active = rng.random() < recent_share
    last = end - (rng.randrange(2 * HOUR) if active else rng.randrange(2 * HOUR, 30 * DAY))
    events: list[tuple[int, str, str]] = [(last, "Page Viewed", '{"path":"/app"}')]
    if active:
        shares = rng.choice((0, 1, 3, 4, 5, 6))
        for k in range(shares):
            events.append((last - k * rng.randrange(600, DAY), "Report Shared", "{}"))
        if rng.random() < 0.05:
            events.append((last - 1, "Trial Ending", '{"plan":"pro"}'))
        if rng.random() < 0.02:
            events.append((last - 2, "Payment Failed", "{}"))
            events.append((last - rng.randrange(60, 1800), "Payment Failed", "{}"))
        if rng.random() < 0.03:
            for k in range(3):
                events.append((last - 90 * k - 3, "Task Failed", '{"task":"sync_contacts"}'))
    first = min(at for at, _, _ in events)
    done = first - rng.randrange(HOUR, 5 * DAY)
    steps = _steps_before(rng, done, 5, 4 * HOUR)
    for k, at in enumerate(steps):
        events.append((at, STEP_EVENTS[k], STEP_PROPERTIES[k]))
    ids = w.person(rng, events)
    entry = ids[sorted(events).index((steps[0], STEP_EVENTS[0], STEP_PROPERTIES[0]))]
    w.flow_progress(entry, steps, completed=True)


def outside(rng: random.Random, w: Writer, end: int) -> None:
    """Never entered the flow (invited users, old accounts); a few visits."""
    last = end - (
        rng.randrange(2 * HOUR) if rng.random() < 0.04 else rng.randrange(2 * HOUR, 30 * DAY)
    )
    events = [(last, "Page Viewed", '{"path":"/app"}')]
    for _ in range(rng.randint(0, 2)):
        events.append((last - rng.randrange(60, 5 * DAY), "Logged In", "{}"))
    w.person(rng, events)


def stale_onboarding(rng: random.Random, w: Writer, end: int) -> None:
    """Not due: entered weeks ago, never finished, idle since; the window closed long ago."""
    last = end - rng.randrange(8 * DAY, 30 * DAY)
    furthest = rng.randint(1, 4)
    steps = _steps_before(rng, last - 60, furthest, 900)
    events = [(at, STEP_EVENTS[k], STEP_PROPERTIES[k]) for k, at in enumerate(steps)]
    events.append((last, "Page Viewed", '{"path":"/app"}'))
    ids = w.person(rng, events)
    w.flow_progress(ids[0], steps, completed=False)


def generate(people: int, mid: int, workdir: Path, source_id: int, flow_id: int) -> dict:
    rng = random.Random(SEED)
    end = int(END.timestamp())
    w = Writer(workdir, source_id, flow_id)
    for index in range(people):
        if index < mid:
            mid_onboarding(rng, w, end)
        elif rng.random() < 0.35:
            completed(rng, w, end, recent_share=0.08)
        else:
            outside(rng, w, end)
    w.close()
    return dict(w.counts) | {"last_event_id": w.event_id, "last_progress_id": w.progress_id}


def generate_not_due(
    people: int,
    first_person: int,
    first_event: int,
    first_progress: int,
    workdir: Path,
    source_id: int,
    flow_id: int,
) -> dict:
    rng = random.Random(SEED + 1)
    end = int(END.timestamp()) - 2 * DAY  # idle for at least two days, none active now
    w = Writer(workdir, source_id, flow_id, first_person=first_person)
    w.event_id, w.progress_id = first_event, first_progress
    for _ in range(people):
        if rng.random() < 0.5:
            completed(rng, w, end, recent_share=0.0)
        else:
            stale_onboarding(rng, w, end)
    w.close()
    return dict(w.counts)


def copy_more(url: str, workdir: Path) -> None:
    """COPY into the indexed tables (as live growth would), then ANALYZE."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cursor:
        t0 = time.perf_counter()
        copy_tables(cursor, workdir)
        print(f"  COPY (indexed tables): {time.perf_counter() - t0:.1f} s", flush=True)
        reset_sequences(cursor)
        cursor.execute("VACUUM ANALYZE")


# --- the ticks -------------------------------------------------------------------------------


def setup_rules() -> tuple[int, int]:
    """Flow, segment, templates and rules through the importer; a source for the events."""
    from onboarding.configfile.document import import_config
    from onboarding.models import OnboardingFlow
    from onboarding.services.sources import source_create
    from triggers.models import Rule, RuleState

    import_config(rules_yaml())
    source = source_create(name="bench").source
    assert Rule.objects.filter(status="active").count() == len(RULES) == 20
    RuleState.objects.update(checked_until=FIRST_TICK - timedelta(seconds=TICK))
    return source.pk, OnboardingFlow.objects.get(slug="activation").pk


def _server_cpu_reader():
    """The CPU seconds used so far by this connection's PostgreSQL backend, when the server runs
    on this machine and its process is readable (else None): on a shared machine, a tick's wall
    time is mostly waiting for a core, and the CPU it used is the steadier figure."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        stat = Path(f"/proc/{cursor.fetchone()[0]}/stat")
    ticks = os.sysconf("SC_CLK_TCK")

    def read() -> float | None:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    return read


def checkpoint() -> None:
    """Write out the bulk load's dirty pages before the ticks, so that they time the tick and
    not the checkpoint the load started (skipped where CHECKPOINT is not allowed)."""
    from django.db import DatabaseError, connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    except DatabaseError as error:
        print(f"  (no CHECKPOINT: {error})", flush=True)


def analyze_tick_tables() -> None:
    """``ANALYZE`` the tables ticks write, as autovacuum would within a minute of the warm-up's
    thousands of rows. Without it, the tables were last analyzed empty: PostgreSQL then plans the
    foreign-key checks against them (``SELECT 1 … WHERE id = $1 FOR KEY SHARE``, planned once
    per connection and kept until the table is analyzed again) as sequential scans, and each
    tick reads all the enrollments of the ticks before it, once per follow-up and decision."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {', '.join(TICK_TABLES)}")


def run_ticks(first: datetime, count: int, *, analyze: bool = True) -> list[dict]:
    from django.db import connection, reset_queries

    from triggers.engine.evaluate import evaluate_rules

    checkpoint()
    server_cpu = _server_cpu_reader()
    results = []
    for k in range(count):
        now = first + timedelta(seconds=TICK * k)
        reset_queries()
        server0, client0 = server_cpu(), time.process_time()
        t0 = time.perf_counter()
        report = evaluate_rules(now=now)
        seconds = time.perf_counter() - t0
        client = time.process_time() - client0
        server1 = server_cpu()
        server = server1 - server0 if server0 is not None and server1 is not None else None
        by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0])
        kinds = {slug: trigger["kind"] for slug, trigger, _ in RULES}
        for rule in report.rules:
            entry = by_kind[kinds[rule.rule]]
            entry[0] += rule.seconds
            entry[1] += rule.found
            entry[2] += rule.enrolled
        results.append(
            {
                "now": now,
                "seconds": seconds,
                "client_cpu": client,
                "server_cpu": server,
                "load": os.getloadavg()[0],
                "found": sum(r.found for r in report.rules),
                "enrolled": report.enrolled,
                "queries": len(connection.queries),
                "by_kind": dict(by_kind),
            }
        )
        if k == 0 and analyze:
            analyze_tick_tables()
        cpu = f"CPU {client:.3f} s here" + (
            f" + {server:.3f} s server" if server is not None else ""
        )
        print(
            f"  tick {now:%H:%M:%S}: {seconds:.3f} s ({cpu}), {results[-1]['found']} "
            f"occurrences, {report.enrolled} enrolled, {len(connection.queries)} queries, "
            f"load {results[-1]['load']:.1f}",
            flush=True,
        )
    return results


def explain_main_query(now: datetime) -> str:
    from onboarding.models import FlowProgress

    since = now - timedelta(seconds=TICK)
    idle = timedelta(minutes=5)
    query = FlowProgress.objects.filter(
        flow__slug="activation",
        completed_at__isnull=True,
        person__last_event_at__gt=since - idle,
        person__last_event_at__lte=now - idle,
    ).values_list("person_id", "person__last_event_at", "furthest_step", "window_ends_at")
    return query.explain(analyze=True, buffers=True)


# What ticks write, and nothing else does here (the bench's data holds none of it).
TICK_TABLES = (
    "triggers_decisionlog",
    "triggers_message",
    "triggers_enrollment",
    "triggers_assignment",
)


def reuse_database(url: str) -> int:
    """Migrate a kept bench database and undo what ticks wrote; the number of people stored."""
    migrate(url)
    from django.conf import settings
    from django.db import connection

    from onboarding.models import Person
    from triggers.models import Rule, RuleState

    settings.DEBUG = True
    assert Rule.objects.filter(status="active").count() == len(RULES)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(TICK_TABLES)} CASCADE")
        cursor.execute(f"VACUUM ANALYZE {', '.join(TICK_TABLES)}")
    RuleState.objects.update(checked_until=FIRST_TICK - timedelta(seconds=TICK), last_tick_at=None)
    return Person.objects.count()


def phase_summary(ticks: list[dict]) -> dict:
    timed = ticks[1:]
    kinds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for tick in timed:
        for kind, (seconds, found, _) in tick["by_kind"].items():
            kinds[kind][0] += seconds / len(timed)
            kinds[kind][1] += found / len(timed)
    servers = [t["server_cpu"] for t in timed if t["server_cpu"] is not None]
    return {
        "median": statistics.median(t["seconds"] for t in timed),
        "client_cpu": statistics.median(t["client_cpu"] for t in timed),
        "server_cpu": statistics.median(servers) if servers else None,
        "load": statistics.median(t["load"] for t in timed),
        "found": statistics.median(t["found"] for t in timed),
        "enrolled": statistics.median(t["enrolled"] for t in timed),
        "queries": statistics.median(t["queries"] for t in timed),
        "kinds": dict(kinds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 1 M people (+1 M)")
    reuse = parser.add_mutually_exclusive_group()
    reuse.add_argument("--keep-db", action="store_true", help="Do not drop the database.")
    reuse.add_argument(
        "--reuse-db",
        action="store_true",
        help="time again on the database a --keep-db run left (no generation; see above)",
    )
    parser.add_argument(
        "--cold-plans",
        action="store_true",
        help="no ANALYZE of the tables ticks write after the warm-up (as before 2026-12-07 19:00)",
    )
    args = parser.parse_args()
    analyze = not args.cold_plans
    url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    if not url.startswith("postgres"):
        sys.exit("bench/evaluate.py needs PostgreSQL (DATABASE_URL=postgres://…)")
    people = int(1_000_000 * args.scale)
    mid = int(100_000 * args.scale)
    if args.reuse_db:
        reuse_ticks(url, analyze=analyze)
        return

    print(f"Database {url} (re-created), scale {args.scale}", flush=True)
    recreate_database(url)
    described = machine(url, pg_settings=True)
    try:
        migrate(url)
        from django.conf import settings

        settings.DEBUG = True  # count queries per tick (the list is reset every tick)
        source_id, flow_id = setup_rules()
        with tempfile.TemporaryDirectory(prefix="onramp-bench-eval-") as tmp:
            workdir = Path(tmp)
            t0 = time.perf_counter()
            counts = generate(people, mid, workdir, source_id, flow_id)
            print(f"Generated {counts} in {time.perf_counter() - t0:.1f} s", flush=True)
            bulk_load(url, workdir)

            print("Phase 1: ticks", flush=True)
            first = run_ticks(FIRST_TICK, TICKS, analyze=analyze)
            plan = explain_main_query(FIRST_TICK + timedelta(seconds=TICK * (TICKS - 1)))

            t0 = time.perf_counter()
            more = generate_not_due(
                people,
                people + 1,
                counts["last_event_id"],
                counts["last_progress_id"],
                workdir,
                source_id,
                flow_id,
            )
            print(f"Generated {more} not due in {time.perf_counter() - t0:.1f} s", flush=True)
            copy_more(url, workdir)
        print("Phase 2: ticks", flush=True)
        second = run_ticks(FIRST_TICK + timedelta(seconds=TICK * TICKS), TICKS, analyze=analyze)
        plan2 = explain_main_query(FIRST_TICK + timedelta(seconds=TICK * (2 * TICKS - 1)))
    finally:
        if not args.keep_db:
            from django.db import connections

            connections.close_all()
            drop_database(url)

    a, b = phase_summary(first), phase_summary(second)
    print()
    print("| | " + f"{people:,} people | {2 * people:,} people (+{people:,} not due) |")
    print_summary(a, b)
    ratio = b["median"] / a["median"] if a["median"] else float("nan")
    print(f"\nratio (twice the people / baseline): {ratio:.2f} (must stay below 2)")
    met = max(a["median"], b["median"]) < 0.5
    print(f"target < 0.5 s per tick (DESIGN §5): {'met' if met else 'MISSED'}")
    print("\nEXPLAIN ANALYZE, inactive_in_flow (5 min), phase 1:\n" + plan)
    print("\nEXPLAIN ANALYZE, inactive_in_flow (5 min), phase 2:\n" + plan2)
    print("\nMachine:")
    for name, value in described:
        print(f"| {name} | {value} |")


def reuse_ticks(url: str, *, analyze: bool) -> None:
    """``--reuse-db``: both phases' moments on the kept database, as it stands."""
    print(f"Database {url} (reused)", flush=True)
    described = machine(url, pg_settings=True)
    t0 = time.perf_counter()
    stored = reuse_database(url)
    print(f"Reset what ticks wrote in {time.perf_counter() - t0:.1f} s", flush=True)
    print("Phase 1's moments: ticks", flush=True)
    first = run_ticks(FIRST_TICK, TICKS, analyze=analyze)
    print("Phase 2's moments: ticks", flush=True)
    second = run_ticks(FIRST_TICK + timedelta(seconds=TICK * TICKS), TICKS, analyze=analyze)
    a, b = phase_summary(first), phase_summary(second)
    print()
    print(f"| {stored:,} people stored (reused database) | phase 1's moments | phase 2's moments |")
    print_summary(a, b)
    met = max(a["median"], b["median"]) < 0.5
    print(f"\ntarget < 0.5 s per tick (DESIGN §5): {'met' if met else 'MISSED'}")
    print("\nMachine:")
    for name, value in described:
        print(f"| {name} | {value} |")


def print_summary(a: dict, b: dict) -> None:
    print("|---|---:|---:|")
    print(f"| tick, median of 3 (s) | {a['median']:.3f} | {b['median']:.3f} |")
    print(f"| CPU per tick, this process (s) | {a['client_cpu']:.3f} | {b['client_cpu']:.3f} |")
    if a["server_cpu"] is not None and b["server_cpu"] is not None:
        print(f"| CPU per tick, server (s) | {a['server_cpu']:.3f} | {b['server_cpu']:.3f} |")
    print(f"| load average (1 min) during the ticks | {a['load']:.1f} | {b['load']:.1f} |")
    print(f"| occurrences found per tick | {a['found']:.0f} | {b['found']:.0f} |")
    print(f"| enrolled per tick | {a['enrolled']:.0f} | {b['enrolled']:.0f} |")
    print(f"| queries per tick | {a['queries']:.0f} | {b['queries']:.0f} |")
    for kind in sorted(a["kinds"]):
        sa, fa = a["kinds"][kind]
        sb, fb = b["kinds"].get(kind, (0.0, 0))
        print(f"| {kind} (s; found) | {sa:.3f}; {fa:.0f} | {sb:.3f}; {fb:.0f} |")


if __name__ == "__main__":
    main()
