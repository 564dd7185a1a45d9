"""Funnel benchmark (DESIGN §5): ``run_funnel`` on PostgreSQL against DuckDB and chDB, same rows.

    python bench/funnel.py [--scale 1.0] [--keep-db | --reuse-db]

At scale 1: 1 M people, about 10 M events (a 5-step onboarding flow with a 7-day window, realistic
drop-off, 3 % of people signing up a second time, plus noise events), fixed seed.

1. creates its own database (``DATABASE_URL``, default
   ``postgres://postgres@127.0.0.1:5432/onramp_bench_funnel``; dropped and re-created) and
   migrates it with ``manage.py migrate``;
2. generates the people and events in Python, and each person's ``FlowProgress`` row with
   :func:`onboarding.flows.chain.walk` over their step events (the function ingestion uses);
3. loads all three tables with ``COPY`` (the event table's indexes and constraints are dropped
   for the load and re-created after it, like a restore), then ``VACUUM ANALYZE``;
4. writes the same step events and people to Parquet with DuckDB and loads them into in-memory
   DuckDB tables, and into chDB MergeTree tables (``bench/funnel_chdb.py``);
5. times the funnel (entries on 30 of the 35 days, so re-entrants are evaluated from raw events)
   with ``run_funnel``: no filter, a trait segment (plan = pro) and a breakdown by the entry's
   ``source``; the same funnel as one DuckDB SQL query of DESIGN §4.2, and as chDB's
   ``windowFunnel``; median of 3 runs after a warm-up; fails unless DuckDB gives Onramp's counts,
   medians and still converting, and chDB agrees where ``windowFunnel``'s semantics do (see
   ``bench/funnel_chdb.py``); prints a table with the ratios.

``--keep-db`` keeps the database; ``--reuse-db`` skips steps 1–3 on such a kept database (it
migrates it, so new indexes are built) and exports the baselines' rows from it.
"""

# SQL here is built from this file's constants and table names only.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402 - bench/common.py, next to this file
    bulk_load,
    database_url,
    drop_database,
    machine,
    maintenance_url,
    migrate,
    print_machine,
    print_table,
    progress_copy_line,
    recreate_database,
    reentry_copy_line,
    timed,
    ts_text,
)
from funnel_chdb import (  # noqa: E402 - bench/funnel_chdb.py
    chdb_funnel_sql,
    chdb_rows,
    chdb_setup,
    chdb_version,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/onramp_bench_funnel"
SEED = 20261128
START = datetime(2026, 1, 1, tzinfo=UTC)
SIGNUP_DAYS = 35
SINCE = date(2026, 1, 6)
UNTIL = date(2026, 2, 4)
NOW = datetime(2026, 2, 5, 12, 0, tzinfo=UTC)
WINDOW = 7 * 86400
STEPS = [
    ("Signed up", "Signed Up", {}),
    ("Email verified", "Email Verified", {}),
    ("Profile completed", "Profile Completed", {"completionPercentage": 100}),
    ("First project", "Project Created", {}),
    ("Teammate invited", "Teammate Invited", {}),
]
# (probability of doing the next step, mean delay in seconds) after each step.
NEXT = [(0.72, 1800), (0.65, 4 * 3600), (0.55, 2 * 86400), (0.45, 3 * 86400)]
NOISE = ["Page Viewed", "Button Clicked", "Search Performed", "Settings Opened"]
SOURCES = ["ads", "organic", "referral", "newsletter"]
PLANS = ["free", "free", "free", "pro", "team"]
EVENTS_PER_PERSON = 10


# --- data ------------------------------------------------------------------------------------


def journey(rng: random.Random, signup: int) -> list[tuple[int, str, str]]:
    """One person's events: (epoch seconds, name, properties JSON)."""
    source = rng.choice(SOURCES)
    events = [(signup, "Signed Up", f'{{"source":"{source}"}}')]
    at = signup
    for step, (p_next, mean_delay) in enumerate(NEXT, start=2):
        if rng.random() >= p_next:
            break
        at += int(rng.expovariate(1 / mean_delay)) + 1
        name = STEPS[step - 1][1]
        if name == "Profile Completed":
            # Some save a half-finished profile first; only 100 % matches the step.
            if rng.random() < 0.3:
                events.append((at, name, '{"completionPercentage":50}'))
                at += int(rng.expovariate(1 / 3600)) + 1
            events.append((at, name, '{"completionPercentage":100}'))
        else:
            events.append((at, name, "{}"))
    if rng.random() < 0.03:  # signs up again later (a second device, a new workspace)
        again = signup + rng.randint(86400, 20 * 86400)
        events.append((again, "Signed Up", f'{{"source":"{rng.choice(SOURCES)}"}}'))
    noise = max(0, EVENTS_PER_PERSON - len(events) + rng.randint(-3, 3))
    span = max(3600, at - signup + 2 * 86400)
    for _ in range(noise):
        events.append((signup + rng.randint(-3600, span), rng.choice(NOISE), '{"path":"/app"}'))
    events.sort()
    return events


def generate(people: int, workdir: Path, source_id: int, flow_id: int) -> dict[str, int]:
    """Write COPY text for people, events, progress and re-entries, and a narrow TSV of events
    for DuckDB. Progress and re-entry rows come from ``progress_rows``, the function ingestion
    uses."""
    from onboarding.flows.chain import StepEvent, StepSpec
    from onboarding.flows.progress import FlowSpec, progress_rows

    rng = random.Random(SEED)
    spec = FlowSpec(
        flow_id,
        timedelta(seconds=WINDOW),
        tuple(StepSpec(event, where) for _, event, where in STEPS),
    )
    step_names = {event for _, event, _ in STEPS}
    start = int(START.timestamp())
    updated = ts_text(int(NOW.timestamp()))
    event_id = 0
    progress_id = 0
    reentry_id = 0
    with (
        open(workdir / "events.copy", "w") as events_out,
        open(workdir / "people.copy", "w") as people_out,
        open(workdir / "progress.copy", "w") as progress_out,
        open(workdir / "reentry.copy", "w") as reentry_out,
        open(workdir / "events.tsv", "w") as duck_out,
        open(workdir / "people.tsv", "w") as duck_people,
    ):
        for person_id in range(1, people + 1):
            signup = start + rng.randrange(SIGNUP_DAYS * 86400)
            events = journey(rng, signup)
            plan = rng.choice(PLANS)
            user = f"u{person_id}"
            first = ts_text(events[0][0])
            last = ts_text(events[-1][0] + 5)
            people_out.write(
                f'{person_id}\t{user}\t{{"plan": "{plan}"}}\t{{}}\t{user}@example.com\t\t\t'
                f"{first}\t{last}\t{{}}\n"
            )
            duck_people.write(f"{person_id}\t{plan}\n")
            lines = []
            duck = []
            step_events = []
            for at, name, props in events:
                event_id += 1
                text = ts_text(at)
                lines.append(
                    f"{event_id}\t{source_id}\t{person_id}\ttrack\t{name}\t{text}\t{text}\t"
                    f"m{event_id}\t{user}\t\t{props}\t{{}}\n"
                )
                if name in step_names:
                    properties = json.loads(props)
                    step_events.append(
                        StepEvent(event_id, name, datetime.fromtimestamp(at, UTC), properties)
                    )
                    duck.append(
                        f"{event_id}\t{person_id}\t{name}\t{text}\t"
                        f"{properties.get('source', '')}\t{properties.get('completionPercentage', '')}\n"
                    )
            events_out.writelines(lines)
            duck_out.writelines(duck)
            row, reentries = progress_rows(spec, person_id, step_events)
            if row is not None:
                progress_id += 1
                progress_out.write(progress_copy_line(row, progress_id, updated))
            for again in reentries:
                reentry_id += 1
                reentry_out.write(reentry_copy_line(again, reentry_id))
    return {
        "people": people,
        "events": event_id,
        "progress": progress_id,
        "re-entries": reentry_id,
    }


# --- DuckDB ----------------------------------------------------------------------------------


def duckdb_setup(workdir: Path):
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET threads = 2")
    events_parquet = str(workdir / "events.parquet")
    people_parquet = str(workdir / "people.parquet")
    con.execute(
        f"COPY (SELECT * FROM read_csv('{workdir / 'events.tsv'}', delim='\t', header=false,"
        " columns={'id': 'BIGINT', 'person_id': 'BIGINT', 'name': 'VARCHAR',"
        " 'ts': 'TIMESTAMPTZ', 'source': 'VARCHAR', 'completion': 'INTEGER'}))"
        f" TO '{events_parquet}' (FORMAT PARQUET)"
    )
    con.execute(
        f"COPY (SELECT * FROM read_csv('{workdir / 'people.tsv'}', delim='\t', header=false,"
        " columns={'id': 'BIGINT', 'plan': 'VARCHAR'}))"
        f" TO '{people_parquet}' (FORMAT PARQUET)"
    )
    con.execute(f"CREATE TABLE events AS SELECT * FROM '{events_parquet}'")
    con.execute(f"CREATE TABLE people AS SELECT * FROM '{people_parquet}'")
    return con


def duckdb_funnel_sql(*, segment: bool, breakdown: bool, single_entry: bool = False) -> str:
    """DESIGN §4.2 for this flow (step names are distinct, so no event can serve two steps).

    Entry: the earliest step-1 event in the range (its ``source`` for the breakdown); each next
    step the earliest matching event at or after the previous chosen one and within entry + 7 d.
    ``single_entry`` keeps only people with exactly one step-1 event in the range (the people on
    whom chDB's ``windowFunnel`` and §4.2 agree; see ``funnel_chdb``).
    """
    since = f"TIMESTAMPTZ '{SINCE.isoformat()} 00:00:00+00'"
    until = f"TIMESTAMPTZ '{(UNTIL + timedelta(days=1)).isoformat()} 00:00:00+00'"
    window = f"INTERVAL {WINDOW} SECOND"
    people = "JOIN people p ON p.id = e.person_id AND p.plan = 'pro'" if segment else ""
    chain = []
    previous = "s1"
    for k in range(2, 6):
        name = STEPS[k - 1][1]
        condition = f"e.name = '{name}'"
        if STEPS[k - 1][2]:
            condition += " AND e.completion = 100"
        chain.append(
            f"s{k} AS (SELECT c.*, min(e.ts) AS t{k} FROM {previous} c LEFT JOIN events e"
            f" ON e.person_id = c.person_id AND {condition} AND e.ts >= c.t{k - 1}"
            f" AND e.ts <= c.t1 + {window} GROUP BY ALL)"
        )
        previous = f"s{k}"
    group = "bd" if breakdown else "NULL"
    medians = ", ".join(f"median(epoch(t{k}) - epoch(t{k - 1})) AS m{k}" for k in range(2, 6))
    counts = ", ".join(f"count(t{k}) AS c{k}" for k in range(2, 6))
    return (
        "WITH s1 AS (SELECT e.person_id, min(e.ts) AS t1,"
        f" {'arg_min(e.source, (e.ts, e.id))' if breakdown else 'NULL'} AS bd"
        f" FROM events e {people} WHERE e.name = 'Signed Up' AND e.ts >= {since}"
        f" AND e.ts < {until} GROUP BY e.person_id"
        f"{' HAVING count(*) = 1' if single_entry else ''}), "
        + ", ".join(chain)
        + f" SELECT {group} AS bd, count(*) AS c1, {counts}, {medians},"
        f" count(*) FILTER (WHERE t5 IS NULL AND t1 + {window} > TIMESTAMPTZ '{NOW.isoformat()}')"
        f" FROM s5 GROUP BY {'ALL' if breakdown else '1'} ORDER BY c1 DESC"
    )


# --- report --------------------------------------------------------------------------------


def machine_with_baselines(url: str) -> list[tuple[str, str]]:
    import duckdb

    duck = ("duckdb", f"{duckdb.__version__} (2 threads, in-memory tables)")
    chdb = ("chdb", f"{chdb_version()} (MergeTree ORDER BY (person_id, ts), windowFunnel)")
    return machine(url, pg_settings=True, extra=[duck, chdb])


def create_flow() -> tuple:
    """The bench source and the 5-step ``activation`` flow of :data:`STEPS`."""
    from onboarding.models import OnboardingFlow, Source, Step

    source = Source.objects.create(name="bench", write_key_hash="0" * 64, write_key_prefix="bench")
    flow = OnboardingFlow.objects.create(
        slug="activation", name="Activation", window_seconds=WINDOW
    )
    for position, (name, event, where) in enumerate(STEPS, start=1):
        Step.objects.create(flow=flow, position=position, name=name, event_name=event, where=where)
    return source, flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = 1 M people, ~10 M events")
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse-db",
        action="store_true",
        help="time again on the database a --keep-db run left (migrated first; no generation)",
    )
    args = parser.parse_args()
    url = database_url(DEFAULT_URL, "bench/funnel.py")
    info = machine_with_baselines(maintenance_url(url)[0])
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="onramp-bench-funnel-") as tmp:
        workdir = Path(tmp)
        if args.reuse_db:
            flow, segment, sizes = reuse_database(url, workdir)
        else:
            flow, segment, sizes = build_database(url, workdir, int(1_000_000 * args.scale))
        t0 = time.perf_counter()
        duck = duckdb_setup(workdir)
        print(f"Parquet + DuckDB tables in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        chdb = chdb_setup(workdir)
        print(f"chDB MergeTree tables in {time.perf_counter() - t0:.1f} s", flush=True)
        rows = run_timings(flow, segment, duck, chdb)
    print()
    print_machine(info)
    print(f"{'load average after':<20} {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{'data':<20} {sizes['people']} people, {sizes['events']} events,"
        f" {sizes['progress']} progress rows; entries {SINCE}..{UNTIL}, 7-day window"
    )
    print()
    print_table(
        [
            "funnel (5 steps, 7-day window)",
            "entrants",
            "Onramp",
            "DuckDB",
            "chDB",
            "DuckDB/Onramp",
            "chDB/Onramp",
        ],
        [32, 9, 8, 8, 8, 13, 11],
        [
            [
                label,
                str(entrants),
                f"{ours:.3f}s",
                f"{duck_s:.3f}s",
                f"{chdb_s:.3f}s",
                f"{duck_s / ours:.1f}x",
                f"{chdb_s / ours:.1f}x",
            ]
            for label, entrants, ours, duck_s, chdb_s in rows
        ],
    )
    print(f"\ntotal wall time: {time.perf_counter() - started:.0f} s")
    from django.db import connections

    connections.close_all()
    if not args.keep_db and not args.reuse_db:
        drop_database(url)


def build_database(url: str, workdir: Path, people: int) -> tuple:
    """Create, migrate and load the bench database; leave the baselines' TSV files in ``workdir``."""
    t0 = time.perf_counter()
    recreate_database(url)
    migrate(url)
    from django.db import connections

    from onboarding.models import Segment

    source, flow = create_flow()
    segment = Segment.objects.create(
        slug="pro",
        name="Pro plan",
        definition={"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    )
    connections.close_all()
    print(f"setup (create database, migrate): {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    sizes = generate(people, workdir, source.pk, flow.pk)
    print(
        f"generated {sizes['people']} people, {sizes['events']} events, {sizes['progress']}"
        f" progress rows in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    t0 = time.perf_counter()
    bulk_load(url, workdir)
    print(f"loaded into PostgreSQL in {time.perf_counter() - t0:.1f} s", flush=True)
    return flow, segment, sizes


def reuse_database(url: str, workdir: Path) -> tuple:
    """Migrate a kept bench database and write the baselines' TSV files from its rows."""
    import psycopg

    t0 = time.perf_counter()
    migrate(url)
    from onboarding.models import OnboardingFlow, Segment

    flow = OnboardingFlow.objects.get(slug="activation")
    segment = Segment.objects.get(slug="pro")
    names = ", ".join(f"'{event}'" for _, event, _ in STEPS)
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SET TimeZone = 'UTC'")
        exports = [
            (
                "events.tsv",
                "SELECT id, person_id, name, timestamp, COALESCE(properties ->> 'source', ''),"
                " COALESCE(properties ->> 'completionPercentage', '')"
                f" FROM onboarding_event WHERE name IN ({names})",
            ),
            ("people.tsv", "SELECT id, traits ->> 'plan' FROM onboarding_person"),
        ]
        for filename, select in exports:
            with (
                open(workdir / filename, "wb") as out,
                cursor.copy(f"COPY ({select}) TO STDOUT") as copy,
            ):
                for chunk in copy:
                    out.write(chunk)
        sizes = {
            name: cursor.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for name, table in (
                ("people", "onboarding_person"),
                ("events", "onboarding_event"),
                ("progress", "onboarding_flowprogress"),
            )
        }
    print(f"reused the database, exported the baselines' rows in {time.perf_counter() - t0:.1f} s")
    return flow, segment, sizes


def run_timings(flow, segment, duck, chdb) -> list[tuple[str, int, float, float, float]]:
    from dashboard.funnels import FunnelQuery, run_funnel

    cases = [
        ("no filter", {}, {"segment": False, "breakdown": False}),
        (
            "segment plan = pro (compiler)",
            {"segment": segment},
            {"segment": True, "breakdown": False},
        ),
        (
            "breakdown by entry source",
            {"breakdown": "source"},
            {"segment": False, "breakdown": True},
        ),
    ]
    window = {"since": SINCE, "until": UNTIL, "window": WINDOW, "now": NOW}
    rows = []
    for label, options, baseline in cases:
        query = FunnelQuery(flow=flow, since=SINCE, until=UNTIL, now=NOW, **options)
        ours, result = timed(lambda q=query: run_funnel(q))
        sql = duckdb_funnel_sql(**baseline)
        duck_s, duck_rows = timed(lambda s=sql: duck.execute(s).fetchall())
        sql = chdb_funnel_sql(STEPS, **window, **baseline)
        chdb_s, chdb_result = timed(lambda s=sql: chdb_rows(chdb, s))
        check(label, result, duck_rows)
        check_chdb(label, result, chdb_result, duck, chdb, baseline)
        rows.append((label, result.steps[0].count, ours, duck_s, chdb_s))
        print(
            f"  {label}: Onramp {ours:.3f} s, DuckDB {duck_s:.3f} s, chDB {chdb_s:.3f} s",
            flush=True,
        )
    return rows


def check(label: str, result, duck_rows: list[tuple]) -> None:
    """Both engines must report the same funnel: counts, medians, still converting."""

    def summary(row: tuple) -> tuple:
        counts = list(row[1:6])
        medians = [None if m is None else round(float(m), 3) for m in row[6:10]]
        return counts, medians, row[10]

    def ours(steps, still) -> tuple:
        counts = [s.count for s in steps]
        medians = [
            None
            if s.median_seconds_from_previous is None
            else round(float(s.median_seconds_from_previous), 3)
            for s in steps[1:]
        ]
        return counts, medians, still

    if result.breakdown is None:
        expected = summary(duck_rows[0])
        got = ours(result.steps, result.still_converting)
        if got != expected:
            raise SystemExit(f"{label}: Onramp {got} != DuckDB {expected}")
        return
    duck_groups = {row[0] or "(none)": summary(row)[:2] for row in duck_rows}
    our_groups = {value: ours(steps, None)[:2] for value, steps in result.breakdown.items()}
    if duck_groups != our_groups:
        raise SystemExit(f"{label}: Onramp {our_groups} != DuckDB {duck_groups}")


def check_chdb(label: str, result, chdb_result: list[list], duck, chdb, baseline: dict) -> None:
    """chDB's ``windowFunnel`` against §4.2 where their semantics agree (see ``funnel_chdb``).

    Entrants (everyone with a step-1 event in the range) must equal Onramp's, per group too; over
    the people with exactly one in-range entry, counts per step and still converting must equal
    DuckDB's §4.2 query restricted to the same people (DuckDB itself equals Onramp, checked above).
    """
    n = len(STEPS)
    if result.breakdown is None:
        entrants = {None: chdb_result[0][1]}
        expected = {None: result.steps[0].count}
    else:
        entrants = {row[0] or "(none)": row[1] for row in chdb_result}
        expected = {value: steps[0].count for value, steps in result.breakdown.items()}
    if entrants != expected:
        raise SystemExit(f"{label}: chDB entrants {entrants} != Onramp {expected}")
    if result.breakdown is None:
        ours = [step.count for step in result.steps]
        print(f"  {label}: windowFunnel counts {chdb_result[0][1 : n + 1]}, §4.2 {ours}")
    window = {"since": SINCE, "until": UNTIL, "window": WINDOW, "now": NOW}
    single = {**baseline, "single_entry": True}
    ch = {
        row[0] or "(none)": row[1:]
        for row in chdb_rows(chdb, chdb_funnel_sql(STEPS, **window, **single))
    }
    duck_rows = duck.execute(duckdb_funnel_sql(**single)).fetchall()
    if baseline["breakdown"]:
        dk = {row[0] or "(none)": list(row[1 : n + 1]) for row in duck_rows}
        ch = {value: counts[:n] for value, counts in ch.items()}
    else:
        dk = {"(none)": [*duck_rows[0][1 : n + 1], duck_rows[0][-1]]}
    if ch != dk:
        raise SystemExit(f"{label}: one-entry people, chDB {ch} != DuckDB {dk}")


if __name__ == "__main__":
    main()
