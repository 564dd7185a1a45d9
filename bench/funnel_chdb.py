"""The chDB baseline of ``bench/funnel.py``: ClickHouse's ``windowFunnel`` over a MergeTree table.

The events table is ordered by (person, time), as DESIGN §5 asks. The query is the natural
ClickHouse funnel: one ``windowFunnel`` per person over the step events from the start of the
range to its end plus the window, the first condition being a step-1 event inside the range.

How ``windowFunnel`` differs from DESIGN §4.2 (ClickHouse's ``AggregateFunctionWindowFunnel``, default
mode): it returns the furthest level reached by *any* chain that starts at a first-condition event,
each later level within that chain's start + window (inclusive, like §4.2; events with equal
timestamps are taken in condition order, so equal timestamps count as in order, like §4.2). §4.2
judges conversion from the *earliest* in-range entry only. Taking the earliest matching event for
each next step is never worse than any other choice, so for a person with exactly one step-1 event
in the range both give the same furthest step; a person with two or more can reach further from a
later entry under ``windowFunnel``. It also yields no step times, so no medians. The bench
therefore compares counts and still-converting exactly over the people with one in-range entry
(against DuckDB's §4.2 query restricted the same way), and checks that the entrants agree exactly.
"""

# SQL here is built from the bench's constants and table names only.
# ruff: noqa: S608

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

EVENT_COLUMNS = (
    "id Int64, person_id Int64, name String, ts DateTime(\\'UTC\\'), source String,"
    " completion Int32"
)
PEOPLE_COLUMNS = "id Int64, plan String"
READ_SETTINGS = (
    "SETTINGS date_time_input_format = 'best_effort', input_format_tsv_empty_as_default = 1"
)


def chdb_version() -> str:
    import chdb

    return chdb.__version__


def chdb_setup(workdir: Path) -> Any:
    """A chDB session with ``bench.events`` (MergeTree ordered by person, time) and ``bench.people``,
    loaded from the TSV files that DuckDB reads too."""
    from chdb import session

    chdb = session.Session(str(workdir / "chdb"))
    chdb.query("CREATE DATABASE IF NOT EXISTS bench")
    chdb.query(
        "CREATE TABLE bench.events (id Int64, person_id Int64, name LowCardinality(String),"
        " ts DateTime('UTC'), source LowCardinality(String), completion Int32)"
        " ENGINE = MergeTree ORDER BY (person_id, ts)"
    )
    chdb.query(
        "CREATE TABLE bench.people (id Int64, plan LowCardinality(String))"
        " ENGINE = MergeTree ORDER BY id"
    )
    chdb.query(
        f"INSERT INTO bench.events SELECT * FROM file('{workdir / 'events.tsv'}', 'TSV',"
        f" '{EVENT_COLUMNS}') {READ_SETTINGS}"
    )
    chdb.query(
        f"INSERT INTO bench.people SELECT * FROM file('{workdir / 'people.tsv'}', 'TSV',"
        f" '{PEOPLE_COLUMNS}') {READ_SETTINGS}"
    )
    chdb.query("OPTIMIZE TABLE bench.events FINAL")
    return chdb


def chdb_funnel_sql(
    steps: list[tuple[str, str, dict]],
    *,
    since: date,
    until: date,
    window: int,
    now: datetime,
    segment: bool,
    breakdown: bool,
    single_entry: bool = False,
) -> str:
    """Counts per step and still converting (per entry ``source`` with ``breakdown``).

    Output rows: breakdown value (or NULL), count per step, still converting; largest group first.
    ``single_entry`` keeps only people with exactly one step-1 event in the range (where
    ``windowFunnel`` and §4.2 agree, see the module docstring).
    """
    start = f"toDateTime('{since.isoformat()} 00:00:00', 'UTC')"
    end = f"toDateTime('{(until + timedelta(days=1)).isoformat()} 00:00:00', 'UTC')"
    is_entry = f"(name = '{steps[0][1]}' AND ts >= {start} AND ts < {end})"
    conditions = [is_entry]
    for _, event, where in steps[1:]:
        condition = f"name = '{event}'"
        if where:
            condition += " AND completion = 100"
        conditions.append(condition)
    people = " AND person_id IN (SELECT id FROM bench.people WHERE plan = 'pro')" if segment else ""
    group = "bd" if breakdown else "NULL"
    n = len(steps)
    counts = ", ".join(f"countIf(level >= {k})" for k in range(1, n + 1))
    now_sql = f"toDateTime('{now.strftime('%Y-%m-%d %H:%M:%S')}', 'UTC')"
    having = "level >= 1" + (" AND entries = 1" if single_entry else "")
    return (
        f"SELECT {group} AS bd, {counts},"
        f" countIf(level < {n} AND entry + {window} > {now_sql}) FROM ("
        f"SELECT person_id, windowFunnel({window})(ts, {', '.join(conditions)}) AS level,"
        f" minIf(ts, {is_entry}) AS entry, countIf({is_entry}) AS entries"
        + (f", argMinIf(source, (ts, id), {is_entry}) AS bd" if breakdown else "")
        + f" FROM bench.events WHERE ts >= {start} AND ts < {end} + {window}"
        f" AND name IN ({', '.join(repr(event) for _, event, _ in steps)}){people}"
        f" GROUP BY person_id HAVING {having})"
        f" GROUP BY {'bd' if breakdown else '1'} ORDER BY 2 DESC, 1"
    )


def chdb_rows(chdb: Any, sql: str) -> list[list]:
    result = chdb.query(sql + " FORMAT JSONCompact")
    # The first column is the breakdown value; the others are counts (64-bit, so JSON strings).
    return [[row[0], *(int(v) for v in row[1:])] for row in json.loads(result.bytes())["data"]]
