"""The PostgreSQL fast path: set-based SQL over the narrow, typed entry rows.

``outcomes_cte`` is one relation with a row per entrant: progress rows whose first entry is in
range, plus (``UNION ALL``) for people whose first entry is before the range, their earliest
re-entry row inside it. Both tables are maintained at ingestion with the same walk, so every report
(steps, trends, histograms, people) is a query over stored rows; raw events are read only for a
breakdown by a property that is not carried on the rows (``BREAKDOWN_PROPERTIES``). Step times are
integer offsets from entry in microseconds, a typed column per step (``offset(k)``).
"""

# SQL text here interpolates only table and column names and integers; every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet

from onboarding.models import (
    BREAKDOWN_PROPERTIES,
    OFFSET_FIELDS,
    TYPED_STEPS,
    Event,
    FlowProgress,
    FlowReentry,
    Person,
)

from .query import NONE_VALUE, FunnelQuery

PROGRESS = FlowProgress._meta.db_table
REENTRY = FlowReentry._meta.db_table
EVENTS = Event._meta.db_table
PEOPLE = Person._meta.db_table
_CHUNK = 2000


@dataclass(frozen=True)
class Relation:
    """``WITH outcomes AS (…)`` and its parameters; ``bd`` is the breakdown column when asked."""

    sql: str
    params: list[Any]


def offset(k: int, alias: str = "") -> str:
    """Step k's offset from entry in microseconds (null when step k was not reached)."""
    if k == 1:
        return "0"
    if k <= TYPED_STEPS:
        return f"{alias}offset_{k}"
    return f"{alias}offsets_after[{k - TYPED_STEPS}]"


def gap(k: int, alias: str = "") -> str:
    """The step-(k-1)→k gap in microseconds (null when step k was not reached)."""
    if k == 2:
        return f"{alias}offset_2"
    return f"({offset(k, alias)} - {offset(k - 1, alias)})"


def reentrant_members(query: FunnelQuery, allowed: QuerySet[Person]) -> list[int]:
    """Among people whose first entry is before the range and who entered again inside it, the
    allowed ones. The segment is evaluated on these few people only, by primary key: as one query
    (``person_id IN (segment)``) the planner cannot tell how few they are and evaluates the
    segment over every person to hash-join them."""
    ids = list(
        FlowReentry.objects.filter(
            flow=query.flow,
            entered_at__gte=query.entry_from,
            entered_at__lt=query.entry_until,
            first_entered_at__lt=query.entry_from,
        )
        .values_list("person_id", flat=True)
        .distinct()
    )
    members: list[int] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        members += allowed.filter(pk__in=chunk).values_list("pk", flat=True)
    return members


def outcomes_cte(
    query: FunnelQuery,
    allowed: QuerySet[Person] | None,
    entry_event_name: str,
    *,
    breakdown: bool = True,
    sample_percent: float | None = None,
    reentrants: list[int] | None = None,
) -> Relation:
    """The outcomes relation; with ``breakdown`` False it has no ``bd`` column even when the query
    asks for a breakdown (reports that do not group by it skip it). With ``sample_percent`` the
    progress rows are a ``TABLESAMPLE SYSTEM`` of that percentage of the table's pages (the
    medians' pivots, :func:`step_aggregates`). ``reentrants`` is :func:`reentrant_members` of the
    query, when the caller builds several relations for it and looked them up once."""
    stored = query.breakdown in BREAKDOWN_PROPERTIES and breakdown
    carried = f", {{t}}.entry_{query.breakdown} AS bp" if stored else ""
    columns = (
        "{t}.person_id, {t}.entered_at, {t}.furthest_step::int AS furthest_step,"
        + "".join(f" {{t}}.{name}," for name in OFFSET_FIELDS)
        + " {t}.reached_at, {t}.entry_event_id"
        + carried
    )
    bounds = [query.flow.pk, query.entry_from, query.entry_until]
    params: list[Any] = list(bounds)
    member_filter = ""
    reentry_filter = ""
    reentry_params: list[Any] = [*bounds, query.entry_from]
    if allowed is not None:
        sub_sql, sub_params = allowed.values("pk").query.sql_with_params()
        member_filter = f" AND fp.person_id IN ({sub_sql})"
        params += list(sub_params)
        reentry_filter = " AND r.person_id = ANY(%s::bigint[])"
        if reentrants is None:
            reentrants = reentrant_members(query, allowed)
        reentry_params.append(reentrants)
    sampled = f" TABLESAMPLE SYSTEM ({float(sample_percent)})" if sample_percent else ""
    body = (
        f"SELECT {columns.format(t='fp')} FROM {PROGRESS} fp{sampled}"
        f" WHERE fp.flow_id = %s AND fp.entered_at >= %s AND fp.entered_at < %s{member_filter}"
        f" UNION ALL (SELECT DISTINCT ON (r.person_id) {columns.format(t='r')} FROM {REENTRY} r"
        " WHERE r.flow_id = %s AND r.entered_at >= %s AND r.entered_at < %s"
        f" AND r.first_entered_at < %s{reentry_filter} ORDER BY r.person_id, r.entered_at)"
    )
    params += reentry_params
    if stored:
        # The entry's property is on the row; the person's trait is read only where it is absent.
        body = (
            "SELECT o.*, COALESCE(o.bp,"
            f" (SELECT p.traits ->> %s FROM {PEOPLE} p WHERE p.id = o.person_id), %s) AS bd"
            f" FROM ({body}) o"
        )
        params = [query.breakdown, NONE_VALUE, *params]
    elif query.breakdown and breakdown:
        # Not carried on the rows: the entry events' properties. The entry event is by definition
        # a step-1 event in the range: saying so lets the join read only that slice of the event
        # table (event_name_ts) instead of all of it.
        body = (
            "SELECT o.*, COALESCE(e.properties ->> %s, p.traits ->> %s, %s) AS bd"
            f" FROM ({body}) o"
            f" LEFT JOIN {EVENTS} e ON e.id = o.entry_event_id AND e.name = %s"
            " AND e.timestamp >= %s AND e.timestamp < %s"
            f" LEFT JOIN {PEOPLE} p ON p.id = o.person_id"
        )
        params = [
            query.breakdown,
            query.breakdown,
            NONE_VALUE,
            *params,
            entry_event_name,
            query.entry_from,
            query.entry_until,
        ]
    return Relation(f"WITH outcomes AS ({body}) ", params)


# Sorts for the medians and the hash joins of a breakdown fit in memory instead of spilling to
# disk; JIT compilation costs more (up to ~1 s) than it saves on these short scans. Cheaper
# parallel workers than the defaults (1000 and 0.1): the narrow rows scan and join in parallel
# under the serial median aggregate (the segment's join with the people: 0.86–1.2 s serial,
# 0.38–0.68 s with two workers, at 300 k entrants on the shared machine).
SESSION = (
    "SET LOCAL work_mem = '64MB'",
    "SET LOCAL jit = off",
    "SET LOCAL parallel_setup_cost = 100",
    "SET LOCAL parallel_tuple_cost = 0.01",
)


def fetch(sql: str, params: Sequence[Any], *, session: Sequence[str] = ()) -> list[tuple]:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("; ".join([*SESSION, *session]))  # one round trip
        cursor.execute(sql, params)
        return cursor.fetchall()


@dataclass(frozen=True)
class StepAggregate:
    counts: list[int]
    medians: list[float | None]
    still_converting: int
    settled: list[int]  # per step, entrants whose window has closed (entry + window ≤ now)
    # Per step k ≥ 2 (index k - 2), the largest step-(k-1)→k gap in µs (0 when nobody reached
    # step k): the range of the time-to-convert histograms, which the page draws next.
    maxima: list[int]


# percentile_disc at these fractions, from one sort: row ceil(n / 2) and, for an even n, row
# n / 2 + 1 (ceil(n / 2 + 1e-10 n) for n up to 10^10): the two middle values, exact integers.
_MIDDLE = "percentile_disc(ARRAY[0.5, 0.5000000001]) WITHIN GROUP (ORDER BY {gap})"


def median_of_middle(n: int, middle: Sequence[int] | None) -> float | None:
    """The median in seconds from the middle values in microseconds; the mean of the two middle
    values for an even count, computed as :func:`~.aggregate.median` does over seconds."""
    if not n or middle is None:
        return None
    low, high = middle
    if n % 2:
        return low / 1e6
    return (low / 1e6 + high / 1e6) / 2


def step_aggregates(
    relation: Relation,
    n_steps: int,
    open_after: datetime,
    *,
    by_breakdown: bool,
    sample: Relation | None = None,
) -> dict[str | None, StepAggregate]:
    """Counts per step, median gaps per step, still converting, the counts per step among settled
    entrants (the friction step's basis) and the largest gap per step; per breakdown value too.

    The key None is the whole funnel; with ``by_breakdown`` every breakdown value has its own key.

    Without a breakdown and with a ``sample`` of the same relation (:func:`outcomes_cte` with
    ``sample_percent``), the medians come from one *parallel* pass (:func:`_banded`); otherwise,
    or for a median the band missed, from the single-process sort (:func:`_sorted`). Both give
    the same exact values. (With a breakdown, a band per value made the pass slower than the
    sort at scale 1: 3.6–6.3 s against 2.9–3.0 s at load 8, 2026-12-07.)
    """
    if sample is None or by_breakdown:
        return _sorted(relation, n_steps, open_after, by_breakdown=by_breakdown)
    bands = _pivots(sample, n_steps)
    if not any(bands):  # a small table: the sample has too few gaps for any band
        return _sorted(relation, n_steps, open_after, by_breakdown=False)
    total, missed = _banded(relation, n_steps, open_after, bands)
    if missed:
        exact = _sorted(relation, n_steps, open_after, by_breakdown=False)[None]
        for k in missed:
            total.medians[k - 1] = exact.medians[k - 1]
    return {None: total}


def _columns(n_steps: int) -> list[str]:
    """Counts per step, still converting, settled counts per step, the largest gap per step."""
    columns = ["count(*)"]
    columns += [f"count(*) FILTER (WHERE furthest_step >= {k})" for k in range(2, n_steps + 1)]
    columns.append(f"count(*) FILTER (WHERE furthest_step < {n_steps} AND entered_at > %s)")
    columns += [
        f"count(*) FILTER (WHERE entered_at <= %s AND furthest_step >= {k})"
        for k in range(1, n_steps + 1)
    ]
    columns += [f"COALESCE(max({gap(k)}), 0)" for k in range(2, n_steps + 1)]
    return columns


def _sorted(
    relation: Relation, n_steps: int, open_after: datetime, *, by_breakdown: bool
) -> dict[str | None, StepAggregate]:
    """One pass with the medians as ordered-set aggregates (``percentile_disc`` over bigint, the
    two middle rows from one sort): exact, but PostgreSQL cannot split such an aggregate between
    parallel workers, so the leader aggregates every row alone."""
    columns = _columns(n_steps) + [_MIDDLE.format(gap=gap(k)) for k in range(2, n_steps + 1)]
    if by_breakdown:
        select = f"SELECT GROUPING(bd) = 1, bd, {', '.join(columns)} FROM outcomes"
        sql = relation.sql + select + " GROUP BY GROUPING SETS ((), (bd))"
    else:
        sql = relation.sql + f"SELECT true, NULL, {', '.join(columns)} FROM outcomes"
    result: dict[str | None, StepAggregate] = {}
    for row in fetch(sql, [*relation.params, *[open_after] * (n_steps + 1)]):
        is_total, value, *numbers = row
        aggregate = _aggregate(numbers, n_steps)
        middles = numbers[3 * n_steps :]
        aggregate.medians[1:] = [
            median_of_middle(aggregate.counts[k - 1], middles[k - 2]) for k in range(2, n_steps + 1)
        ]
        result[None if is_total else value] = aggregate
    return result


def _aggregate(numbers: Sequence[Any], n_steps: int) -> StepAggregate:
    """A :class:`StepAggregate` from :func:`_columns`' values, medians not yet known."""
    counts = [int(c) for c in numbers[:n_steps]]
    still = int(numbers[n_steps])
    settled = [int(c) for c in numbers[n_steps + 1 : 2 * n_steps + 1]]
    maxima = [int(m) for m in numbers[2 * n_steps + 1 : 3 * n_steps]]
    return StepAggregate(counts, [None] * n_steps, still, settled, maxima)


# The medians without a sort of every gap (issue 16). A sample of about 1 % of the progress rows'
# pages gives, per step, two pivots around the median; the one parallel pass then counts the gaps
# below the lower pivot and collects the few between them (``onramp_collect``, an array aggregate
# PostgreSQL can combine across workers: dashboard migration 0009), from which the middle ranks
# are read exactly. A band that misses the middle (unlikely: it spans about 4 standard errors of
# the sampled quantile on either side) is settled by the exact sort.
SAMPLE_PERCENT = 1.0
_SAMPLE_SESSION = ("SET LOCAL enable_hashjoin = off", "SET LOCAL enable_mergejoin = off")
_MIN_SAMPLED = 30  # fewer sampled gaps for a step: no band, the exact sort decides
_LEVELS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.45, 0.48, 0.52, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


def _band(m: int) -> float:
    """Half the band's width in quantiles around the median, for ``m`` sampled gaps."""
    return min(0.5, max(0.02, 2.0 / m**0.5))


def _pivots(sample: Relation, n_steps: int) -> list[tuple[int, int] | None]:
    """Per step k ≥ 2 (index k - 2), the band's bounds in µs (None: no band)."""
    levels = ", ".join(str(q) for q in _LEVELS)
    columns = []
    for k in range(2, n_steps + 1):
        columns += [
            f"count({gap(k)})",
            f"percentile_disc(ARRAY[{levels}]) WITHIN GROUP (ORDER BY {gap(k)})",
        ]
    sql = sample.sql + f"SELECT {', '.join(columns)} FROM outcomes"
    # The sample is a few thousand rows: each is looked up in a segment by primary key, instead
    # of hashing every member of the segment (0.4 s for 200 k members at scale 1).
    ((*numbers,),) = fetch(sql, sample.params, session=_SAMPLE_SESSION)
    bands: list[tuple[int, int] | None] = []
    for i in range(n_steps - 1):
        m, quantiles = int(numbers[2 * i]), numbers[2 * i + 1]
        if m < _MIN_SAMPLED or quantiles is None:
            bands.append(None)
            continue
        half = _band(m)
        low = max((q for q in _LEVELS if q <= 0.5 - half), default=None)
        high = min((q for q in _LEVELS if q >= 0.5 + half), default=None)
        bands.append(
            (
                quantiles[_LEVELS.index(low)] if low is not None else -(2**62),
                quantiles[_LEVELS.index(high)] if high is not None else 2**62,
            )
        )
    return bands


def _banded(
    relation: Relation,
    n_steps: int,
    open_after: datetime,
    bands: list[tuple[int, int] | None],
) -> tuple[StepAggregate, list[int]]:
    """One parallel pass: :func:`_columns`, and per step the gaps below the band and the gaps in
    it. Returns the aggregate and the steps whose median the band missed."""
    columns = _columns(n_steps)
    params: list[Any] = [*relation.params, *[open_after] * (n_steps + 1)]
    for k in range(2, n_steps + 1):
        low, high = bands[k - 2] or (None, None)
        columns += [
            f"count(*) FILTER (WHERE {gap(k)} < %s::bigint)",
            f"onramp_collect({gap(k)}) FILTER (WHERE {gap(k)} BETWEEN %s::bigint AND %s::bigint)",
        ]
        params += [low, low, high]
    ((*numbers,),) = fetch(relation.sql + f"SELECT {', '.join(columns)} FROM outcomes", params)
    width = 3 * n_steps
    aggregate = _aggregate(numbers[:width], n_steps)
    missed: list[int] = []
    for k in range(2, n_steps + 1):
        below, band = numbers[width + 2 * (k - 2)], numbers[width + 2 * (k - 2) + 1]
        median = _from_band(aggregate.counts[k - 1], int(below or 0), band)
        if median is _MISS:
            missed.append(k)
        else:
            aggregate.medians[k - 1] = median
    return aggregate, missed


_MISS = object()


def _from_band(n: int, below: int, band: Sequence[int] | None) -> Any:
    """The median (seconds) of ``n`` gaps from how many lie below the band and the band's values;
    ``_MISS`` when a middle rank is outside the band."""
    if not n:
        return None
    ranks = (n // 2, n // 2 + 1) if n % 2 == 0 else ((n + 1) // 2, (n + 1) // 2)
    values = sorted(band or ())
    middle = []
    for rank in ranks:
        index = rank - below - 1
        if not 0 <= index < len(values):
            return _MISS
        middle.append(values[index])
    return median_of_middle(n, middle)


def step_median(relation: Relation, step: int) -> float | None:
    """The median step-(k-1)→k gap in seconds among the entrants who reached step k = ``step``."""
    ((n, middle),) = fetch(
        relation.sql + f"SELECT count(*) FILTER (WHERE furthest_step >= {step}),"
        f" {_MIDDLE.format(gap=gap(step))} FROM outcomes",
        relation.params,
    )
    return median_of_middle(n, middle)


@dataclass(frozen=True)
class DaysAndBins:
    """Entrants and completions (reached the last step) per UTC entry day, and per step k ≥ 2
    (index k - 2) how many gaps fall in each time-to-convert bin."""

    entrants: Counter[date]
    completions: Counter[date]
    bins: list[Counter[int]]


def days_and_bins(
    relation: Relation, n_steps: int, widths: Sequence[int], n_bins: Sequence[int]
) -> DaysAndBins:
    """The trend's per-day counts and the time-to-convert histograms, in one pass.

    Bin i of step k holds the whole-second gaps in [i × width, (i + 1) × width), the last bin
    everything above. Each is a grouping set of one hashed aggregate (the entry day; each step's
    bin), instead of a pass for the days and a row per entrant and step for the bins."""
    keys = ["(entered_at AT TIME ZONE 'UTC')::date AS day"]
    keys += [
        f"CASE WHEN furthest_step >= {k} THEN LEAST(floor({gap(k)}::float8 / 1e6 / %s)::int, %s)"
        f" END AS b{k}"
        for k in range(2, n_steps + 1)
    ]
    names = ["day", *(f"b{k}" for k in range(2, n_steps + 1))]
    # Which grouping set a row belongs to: 0 the day, k the bins of step k.
    which = " ".join(
        f"WHEN GROUPING({name}) = 0 THEN {k}"
        for k, name in zip([0, *range(2, n_steps + 1)], names, strict=True)
    )
    sql = relation.sql + (
        f"SELECT CASE {which} END, day, COALESCE({', '.join(['NULL::int', *names[1:]])}),"
        f" count(*), count(*) FILTER (WHERE furthest_step >= {n_steps})"
        f" FROM (SELECT furthest_step, {', '.join(keys)} FROM outcomes) o"
        f" GROUP BY GROUPING SETS ({', '.join(f'({name})' for name in names)})"
    )
    params = [*relation.params]
    for width, bins in zip(widths, n_bins, strict=True):
        params += [width, bins - 1]
    result = DaysAndBins(Counter(), Counter(), [Counter() for _ in range(n_steps - 1)])
    for k, day, bucket, count, completed in fetch(sql, params):
        if k == 0:
            result.entrants[day] = count
            result.completions[day] = completed
        elif bucket is not None:  # None: the entrants who did not reach step k
            result.bins[k - 2][bucket] = count
    return result
