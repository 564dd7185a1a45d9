"""The PostgreSQL fast path: set-based SQL over the narrow, typed entry rows.

``outcomes_cte`` is one relation with a row per entrant: progress rows whose first entry is in
range, plus (``UNION ALL``) for people whose first entry is before the range, their earliest
re-entry row inside it. Both tables are maintained at ingestion with the same walk, so every report
(steps, trends, histograms, people) is a query over stored rows; raw events are read only for a
breakdown by a property that is not carried on the rows (``BREAKDOWN_PROPERTIES``). Step times are
integer offsets from entry in microseconds, a typed column per step (``offset(k)``). The funnel's
grouped pass aggregates the two tables' rows by two arms of one statement and merges their groups
(:class:`Apart`).
"""

# SQL text here interpolates only table and column names and integers; every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models.expressions import RawSQL

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


@dataclass(frozen=True)
class Relation:
    """``WITH outcomes AS (…)`` and its parameters; ``bd`` is the breakdown column when asked.
    ``body`` is the relation's query; ``apart``: the same rows as :class:`Apart` relations, for
    the grouped pass."""

    body: str
    params: list[Any]
    apart: Apart | None = None

    @property
    def sql(self) -> str:
        return f"WITH outcomes AS ({self.body}) "


@dataclass(frozen=True)
class Apart:
    """The outcomes relation's rows in two parts that the grouped pass (:func:`_grouped`)
    aggregates apart, by the two arms of one ``UNION ALL`` of grouped queries, and merges (its
    aggregates are sums, maxima and collections): the progress
    rows (``flat``, or ``held``) and the re-entrants (``reentries``, a few thousand), with only
    the columns the pass reads. Over the union of both, every one of the million progress rows
    goes through the layers the ``UNION ALL`` puts over them (subquery scan, append, projection).

    ``flat`` is the progress table's scan itself; ``held`` the same rows behind a ``UNION ALL``
    whose other arm is never read (``WHERE false``): over a set operation's output the planner
    estimates the groups of computed keys (an entry day, a breakdown value) at its default and
    hashes them in each worker, but over the table's columns it multiplies their distinct counts
    (the entry time's are about one per row, the person's too) and sorts every row instead."""

    flat: Relation
    held: Relation
    reentries: Relation


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


def reentrant_members(query: FunnelQuery, allowed: RawSQL) -> list[int]:
    """Among people whose first entry is before the range and who entered again inside it, the
    allowed ones (``allowed``: :func:`~.outcomes.allowed_people`). The segment is evaluated on
    these few people only, by key (the trait index's or the people's): as one query
    (``person_id IN (segment)``) the planner cannot tell how few they are and evaluates the
    segment over every person to hash-join them."""
    ids = sorted(
        FlowReentry.objects.filter(
            flow=query.flow,
            entered_at__gte=query.entry_from,
            entered_at__lt=query.entry_until,
            first_entered_at__lt=query.entry_from,
        )
        .values_list("person_id", flat=True)
        .distinct()
    )
    if not ids:
        return []
    # One query, the ids as one array parameter (in key order, for the index's pages), instead
    # of IN lists of 2,000 literals each: 13-14 ms against 25-55 ms for 3,870 re-entrants at
    # scale 1 (the planning of the literals was half of it). The allowed ids are people's ids
    # already: no visit of the people's table.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.id FROM unnest(%s::bigint[]) AS r(id) WHERE r.id IN ({allowed.sql})",
            [ids, *allowed.params],
        )
        return [pk for (pk,) in cursor.fetchall()]


def outcomes_cte(
    query: FunnelQuery,
    allowed: RawSQL | None,
    entry_event_name: str,
    *,
    breakdown: bool = True,
    sample_percent: float | None = None,
    reentrants: list[int] | None = None,
) -> Relation:
    """The outcomes relation; with ``breakdown`` False it has no ``bd`` column even when the query
    asks for a breakdown (reports that do not group by it skip it). With ``sample_percent`` it is
    a ``TABLESAMPLE SYSTEM`` of that percentage of the progress table's pages, without the
    re-entrants (the medians' pivots, :func:`step_aggregates`). ``reentrants`` is
    :func:`reentrant_members` of the query, when the caller builds several relations for it and
    looked them up once. Without ``sample_percent`` the relation has its rows :class:`Apart`
    too."""
    stored = query.breakdown in BREAKDOWN_PROPERTIES and breakdown
    raw = bool(query.breakdown) and breakdown and not stored

    def columns(t: str, *, narrow: bool) -> str:
        # Narrow: what the grouped pass reads (:class:`Apart`).
        names = [
            f"{t}.person_id",
            f"{t}.entered_at",
            f"{t}.furthest_step::int AS furthest_step",
            *(f"{t}.{name}" for name in OFFSET_FIELDS),
        ]
        if not narrow:
            names.append(f"{t}.reached_at")
        if not narrow or raw:
            names.append(f"{t}.entry_event_id")
        if stored and narrow:
            # The value itself, once per row under the set operation (:class:`Apart`), instead
            # of the carried property to resolve above it (where the join with the bands and
            # the grouping would each compute it again).
            names.append(
                f"COALESCE({t}.entry_{query.breakdown}, onramp_person_trait({t}.person_id, %s),"
                " %s) AS bd"
            )
        elif stored:
            names.append(f"{t}.entry_{query.breakdown} AS bp")
        return ", ".join(names)

    # The parameters of the narrow columns' breakdown value (above).
    value_params = [query.breakdown, NONE_VALUE] if stored else []

    bounds = [query.flow.pk, query.entry_from, query.entry_until]
    member_filter = ""
    member_params: list[Any] = []
    reentry_filter = ""
    reentry_params: list[Any] = [*bounds, query.entry_from]
    if allowed is not None:
        # The members' ids alone (for a segment of trait equalities, from the trait index
        # without the people's rows): the progress rows are semi-joined with them.
        member_filter = f" AND fp.person_id IN ({allowed.sql})"
        member_params = list(allowed.params)
        reentry_filter = " AND r.person_id = ANY(%s::bigint[])"
        if reentrants is None:
            reentrants = reentrant_members(query, allowed)
        reentry_params.append(reentrants)
    sampled = f" TABLESAMPLE SYSTEM ({float(sample_percent)})" if sample_percent else ""

    def progress(*, narrow: bool, where: str = "") -> tuple[str, list[Any]]:
        return (
            f"SELECT {columns('fp', narrow=narrow)} FROM {PROGRESS} fp{sampled}"
            f" WHERE {where}fp.flow_id = %s AND fp.entered_at >= %s AND fp.entered_at < %s"
            f"{member_filter}",
            [*(value_params if narrow else []), *bounds, *member_params],
        )

    def reentry(*, narrow: bool) -> tuple[str, list[Any]]:
        return (
            f"SELECT DISTINCT ON (r.person_id) {columns('r', narrow=narrow)} FROM {REENTRY} r"
            " WHERE r.flow_id = %s AND r.entered_at >= %s AND r.entered_at < %s"
            f" AND r.first_entered_at < %s{reentry_filter} ORDER BY r.person_id, r.entered_at",
            [*(value_params if narrow else []), *reentry_params],
        )

    def relation(body: str, params: list[Any], *, narrow: bool = False) -> Relation:
        if stored and not narrow:
            # The entry's property is on the row; the person's trait is read only where it is
            # absent, by a parallel-safe function (dashboard migration 0010): as a correlated
            # subquery here the lookup would keep the value, and everything grouped by it, in the
            # leader alone.
            body = (
                "SELECT o.*, COALESCE(o.bp, onramp_person_trait(o.person_id, %s), %s) AS bd"
                f" FROM ({body}) o"
            )
            params = [query.breakdown, NONE_VALUE, *params]
        elif raw:
            # Not carried on the rows: the entry events' properties. The entry event is by
            # definition a step-1 event in the range: saying so lets the join read only that
            # slice of the event table (event_name_ts) instead of all of it.
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
        return Relation(body, params)

    progress_sql, progress_params = progress(narrow=False)
    if sample_percent:
        # The sample is of the progress rows alone: with the re-entrants (all of them, 0.45 % of
        # the entrants at scale 1) it weighed them 100 times over, and their sort for DISTINCT
        # ON was three quarters of the pivots' query (33 against 9 ms).
        return relation(progress_sql, progress_params)
    reentry_sql, reentry_params_all = reentry(narrow=False)
    whole = relation(
        f"{progress_sql} UNION ALL ({reentry_sql})", [*progress_params, *reentry_params_all]
    )
    flat_sql, flat_params = progress(narrow=True)
    never_sql, never_params = progress(narrow=True, where="false AND ")
    apart = Apart(
        relation(flat_sql, flat_params, narrow=True),
        relation(f"{flat_sql} UNION ALL {never_sql}", [*flat_params, *never_params], narrow=True),
        relation(*reentry(narrow=True), narrow=True),
    )
    return Relation(whole.body, whole.params, apart)


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
    # step k): the range of the time-to-convert histograms, which the page draws next. None from
    # the pass of the funnel alone (``funnel_pass`` without ``by_day``), which leaves it out.
    maxima: list[int] | None


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


@dataclass(frozen=True)
class FunnelPass:
    """What the funnel's pass returns: the aggregates (key None: the whole funnel; with a
    breakdown, one key per value) and, when the pass was the grouped one, the entrants and
    completions (reached the last step) per UTC entry day, which the trend reads instead of a
    pass of its own (None after the sort's pass)."""

    aggregates: dict[str | None, StepAggregate]
    entrants: Counter[date] | None = None
    completions: Counter[date] | None = None


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
    :func:`funnel_pass` says how."""
    return funnel_pass(
        relation, n_steps, open_after, by_breakdown=by_breakdown, sample=sample
    ).aggregates


def funnel_pass(
    relation: Relation,
    n_steps: int,
    open_after: datetime,
    *,
    by_breakdown: bool,
    sample: Relation | None = None,
    by_day: bool = True,
) -> FunnelPass:
    """:func:`step_aggregates`, and (``by_day``, the grouped pass only) the entrants and
    completions per entry day. Without ``by_day`` (the funnel report alone), the grouped pass
    leaves out the largest gaps too (``StepAggregate.maxima`` is None).

    With a ``sample`` of the same relation (:func:`outcomes_cte` with ``sample_percent``; with the
    breakdown column when ``by_breakdown``), one *parallel* grouped pass (:func:`_grouped`) gives
    everything, the medians read from bands around the sample's pivots; otherwise, or for a
    median a band missed, the single-process sort (:func:`_sorted`) gives the aggregates. Both
    give the same exact values."""
    if sample is None:
        return FunnelPass(_sorted(relation, n_steps, open_after, by_breakdown=by_breakdown))
    bands = _pivots(sample, n_steps, by_breakdown=by_breakdown)
    result, missed = _grouped(
        relation, n_steps, open_after, bands, by_breakdown=by_breakdown, by_day=by_day
    )
    if missed:
        exact = _sorted(relation, n_steps, open_after, by_breakdown=by_breakdown)
        for key, k in missed:
            result.aggregates[key].medians[k - 1] = exact[key].medians[k - 1]
    return result


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
# pages gives, per step (and per breakdown value), two pivots around the median; the one parallel
# pass then counts the gaps below the lower pivot and collects the few between them
# (``onramp_collect``, an array aggregate PostgreSQL can combine across workers: dashboard
# migration 0009), from which the middle ranks are read exactly. A band that misses the middle
# (unlikely: it spans about 4 standard errors of the sampled quantile on either side) is settled
# by the exact sort. A step (or a breakdown value's step) with too few sampled gaps has every gap
# collected: a small table, or few people reached that step.
SAMPLE_PERCENT = 1.0
_SAMPLE_SESSION = ("SET LOCAL enable_hashjoin = off", "SET LOCAL enable_mergejoin = off")
_MIN_SAMPLED = 30  # fewer sampled gaps for a step: no band, every gap is collected
# The sample's quantiles the bands are cut at: every 0.5 % around the median (a band no wider
# than it must be: every gap in it is collected, shipped and sorted), coarser in the tails.
_LEVELS = (
    0.02,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    *(round(0.3 + 0.005 * i, 3) for i in range(81)),  # 0.300, 0.305, …, 0.700
    0.75,
    0.8,
    0.85,
    0.9,
    0.95,
    0.98,
)
_EVERYTHING = (-(2**62), 2**62)  # a band holding every gap

Band = tuple[int, int] | None
_KEY_DAY = 1 << 17  # the grouped pass's key: day × _KEY_DAY + furthest step × 2 + settled
_EPOCH = date(1970, 1, 1)


def _band(m: int) -> float:
    """Half the band's width in quantiles around the median, for ``m`` sampled gaps."""
    return min(0.5, max(0.02, 2.0 / m**0.5))


def _pivots(sample: Relation, n_steps: int, *, by_breakdown: bool = False) -> dict[Any, list[Band]]:
    """Per step k ≥ 2 (index k - 2), the band's bounds in µs (None: no band); the key None for
    the whole funnel and, with ``by_breakdown``, one key per breakdown value in the sample."""
    levels = ", ".join(str(q) for q in _LEVELS)
    columns = []
    for k in range(2, n_steps + 1):
        columns += [
            f"count({gap(k)})",
            f"percentile_disc(ARRAY[{levels}]) WITHIN GROUP (ORDER BY {gap(k)})",
        ]
    if by_breakdown:
        sql = sample.sql + (
            f"SELECT GROUPING(bd) = 1, bd, {', '.join(columns)} FROM outcomes"
            " GROUP BY GROUPING SETS ((), (bd))"
        )
    else:
        sql = sample.sql + f"SELECT true, NULL, {', '.join(columns)} FROM outcomes"
    # The sample is a few thousand rows: each is looked up in a segment by primary key, instead
    # of hashing every member of the segment (0.4 s for 200 k members at scale 1).
    result: dict[Any, list[Band]] = {}
    for is_total, value, *numbers in fetch(sql, sample.params, session=_SAMPLE_SESSION):
        bands: list[Band] = []
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
                    quantiles[_LEVELS.index(low)] if low is not None else _EVERYTHING[0],
                    quantiles[_LEVELS.index(high)] if high is not None else _EVERYTHING[1],
                )
            )
        result[None if is_total else value] = bands
    return result


def _grouped(
    relation: Relation,
    n_steps: int,
    open_after: datetime,
    bands: dict[Any, list[Band]],
    *,
    by_breakdown: bool,
    by_day: bool = True,
) -> tuple[FunnelPass, list[tuple[str | None, int]]]:
    """One parallel pass grouped by (breakdown value and) entry day, furthest step and settled —
    a few hundred groups: the counts per step, still converting and the settled counts are sums
    of group sizes, the per-day counts the trend draws too; per group the largest gap per step
    and, per step, how many gaps lie below the band and the gaps in it. Without ``by_day``, no
    day and no largest gaps. The progress rows and the re-entrants are aggregated apart when
    the relation has them apart (:class:`Apart`). Returns the pass and the (key, step) medians
    the bands missed.

    With a breakdown, a row's band per step is the union of the whole funnel's band and its
    value's own (a small ``VALUES`` list hash-joined on the value); the gaps collected are then
    split between the two in Python, so each median still costs one count and one collection
    per row. A value the sample missed, or with too few sampled gaps, has every gap collected."""
    steps = range(2, n_steps + 1)
    whole = [band or _EVERYTHING for band in bands.get(None, [None] * (n_steps - 1))]
    own = {
        value: [band or _EVERYTHING for band in value_bands]
        for value, value_bands in bands.items()
        if value is not None
    }
    # Without ``by_day`` the pass is the funnel report alone (``run_funnel`` without a gathering
    # for the page): the entry days and the largest gaps (the histograms' ranges) are left out.
    alone = not by_day
    # Alone and without a breakdown, the progress rows are grouped straight from the table's
    # scan (``Apart.flat``) by the furthest step and settled, two keys the planner estimates well
    # (the step's statistics, a boolean): no layer over the rows, no key to compute but the
    # comparison. Issue 16: 0.53 against 0.79 s of one process's CPU for the whole pass at
    # scale 1, with the largest gaps left out too.
    flat = alone and not by_breakdown and relation.apart is not None
    if flat:
        keys = ["o.furthest_step", "o.entered_at <= %s"]
    else:
        # One integer for the entry day, the furthest step and settled: for three keys the
        # planner guesses 80,000 groups (it cannot tell how few (day, step) pairs there are) and
        # sorts every row by them; for one expression it guesses few enough to aggregate in each
        # worker.
        day_key = (
            f"((o.entered_at AT TIME ZONE 'UTC')::date - DATE '1970-01-01')::bigint * {_KEY_DAY} + "
            if by_day
            else ""
        )
        keys = [f"{day_key}o.furthest_step * 2 + (o.entered_at <= %s)::int"]
    params: list[Any] = [open_after]
    if by_breakdown:
        keys.insert(0, "o.bd")
    columns = ["count(*)"]
    if not alone:
        columns += [f"max({gap(k, 'o.')})" for k in steps]
    join = ""
    if not by_breakdown:
        for k in steps:
            low, high = whole[k - 2]
            columns += [
                f"count(*) FILTER (WHERE {gap(k, 'o.')} < %s::bigint)",
                f"onramp_collect({gap(k, 'o.')})"
                f" FILTER (WHERE {gap(k, 'o.')} BETWEEN %s::bigint AND %s::bigint)",
            ]
            params += [low, low, high]
    else:
        # Values without a row in the list (or no list: no value in the sample) collect all.
        low_bound = "COALESCE(b.low_{k}, %s::bigint)" if own else "%s::bigint"
        high_bound = "COALESCE(b.high_{k}, %s::bigint)" if own else "%s::bigint"
        for k in steps:
            low, high = low_bound.format(k=k), high_bound.format(k=k)
            columns += [
                f"count(*) FILTER (WHERE {gap(k, 'o.')} < {low})",
                f"onramp_collect({gap(k, 'o.')})"
                f" FILTER (WHERE {gap(k, 'o.')} BETWEEN {low} AND {high})",
            ]
            params += [*_EVERYTHING[:1], *_EVERYTHING]
        if own:
            row = "(%s::text" + ", %s::bigint, %s::bigint" * (n_steps - 1) + ")"
            names = ", ".join(f"low_{k}, high_{k}" for k in steps)
            join = (
                f" LEFT JOIN (VALUES {', '.join([row] * len(own))}) b(value, {names})"
                " ON b.value = o.bd"
            )
            for value, value_bands in own.items():
                params.append(value)
                for (low, high), (whole_low, whole_high) in zip(value_bands, whole, strict=True):
                    params += [min(low, whole_low), max(high, whole_high)]
    group_by = ", ".join(str(i + 1) for i in range(len(keys)))

    def select(source: str) -> str:
        return f"SELECT {', '.join(keys)}, {', '.join(columns)} FROM {source} o{join} GROUP BY {group_by}"

    # The aggregates are sums, maxima and collections: the progress rows and the re-entrants
    # are aggregated apart (:class:`Apart`), by the two arms of one statement (one snapshot:
    # an entrant moving from one table to the other meanwhile is counted once), and their
    # groups merged below like the workers'.
    apart = relation.apart
    if apart is None:
        rows = fetch(relation.sql + select("outcomes"), [*relation.params, *params])
    else:
        progress = apart.flat if flat else apart.held
        sql = (
            f"WITH outcomes AS ({progress.body}), reentered AS ({apart.reentries.body})"
            f" ({select('outcomes')}) UNION ALL ({select('reentered')})"
        )
        rows = fetch(sql, [*progress.params, *apart.reentries.params, *params, *params])
    n = n_steps
    entrants: Counter[date] = Counter()
    completions: Counter[date] = Counter()
    counts: dict[str | None, list[int]] = {}
    settled_counts: dict[str | None, list[int]] = {}
    still: Counter[str | None] = Counter()
    maxima: dict[str | None, list[int]] = {}
    below: dict[str | None, list[int]] = {}
    collected: dict[str | None, list[list[int]]] = {}
    for row in rows:
        value, rest = (row[0], row[1:]) if by_breakdown else (None, row)
        if flat:
            step, is_settled, size, *numbers = rest
            key = step * 2 + int(is_settled)
        else:
            key, size, *numbers = rest
        day = _EPOCH + timedelta(days=key // _KEY_DAY)
        reached, settled = min((key % _KEY_DAY) // 2, n), key % 2 == 1
        entrants[day] += size
        if reached >= n:
            completions[day] += size
        largest, banded = ([], numbers) if alone else (numbers[: n - 1], numbers[n - 1 :])
        for group in (None, value) if by_breakdown else (None,):
            if group not in counts:
                counts[group], settled_counts[group] = [0] * n, [0] * n
                maxima[group], below[group] = [0] * (n - 1), [0] * (n - 1)
                collected[group] = [[] for _ in range(n - 1)]
            for k in range(reached):
                counts[group][k] += size
                if settled:
                    settled_counts[group][k] += size
            if not settled and reached < n:
                still[group] += size
            for i, value_max in enumerate(largest):
                if value_max is not None and value_max > maxima[group][i]:
                    maxima[group][i] = value_max
            for i in range(n - 1):
                below[group][i] += int(banded[2 * i] or 0)
                if banded[2 * i + 1] and not (group is None and by_breakdown):
                    collected[group][i] += banded[2 * i + 1]
    if None not in counts:  # no entrants
        counts[None], settled_counts[None] = [0] * n, [0] * n
        maxima[None], below[None] = [0] * (n - 1), [0] * (n - 1)
        collected[None] = [[] for _ in range(n - 1)]
    aggregates: dict[str | None, StepAggregate] = {}
    missed: list[tuple[str | None, int]] = []
    # Every group's gaps in order. With a breakdown the whole funnel's are its values' gaps
    # together: their sorted lists, joined, are sorted again as a merge of a few sorted runs.
    ordered: dict[str | None, list[list[int]]] = {}
    for group in sorted(counts, key=lambda group: group is None):
        if group is None and by_breakdown:
            ordered[None] = [
                sorted(itertools.chain.from_iterable(ordered[value][i] for value in ordered))
                for i in range(n - 1)
            ]
        else:
            ordered[group] = [sorted(values) for values in collected[group]]
    for group in counts:
        group_bands = whole if group is None else own.get(group, [_EVERYTHING] * (n - 1))
        medians: list[float | None] = [None] * n
        for k in steps:
            # The gaps collected for this group may reach past its own band (the union's other
            # half): those below it count as below, those above are dropped.
            low, high = group_bands[k - 2]
            values = ordered[group][k - 2]
            start, end = bisect_left(values, low), bisect_right(values, high)
            median = _from_band(
                counts[group][k - 1], below[group][k - 2] + start, values[start:end]
            )
            if median is _MISS:
                missed.append((group, k))
            else:
                medians[k - 1] = median
        aggregates[group] = StepAggregate(
            counts[group],
            medians,
            still[group],
            settled_counts[group],
            None if alone else maxima[group],
        )
    if not by_day:
        return FunnelPass(aggregates), missed
    return FunnelPass(aggregates, entrants, completions), missed


_MISS = object()


def _from_band(n: int, below: int, values: Sequence[int]) -> Any:
    """The median (seconds) of ``n`` gaps from how many lie below the band and the band's values,
    in order; ``_MISS`` when a middle rank is outside the band."""
    if not n:
        return None
    ranks = (n // 2, n // 2 + 1) if n % 2 == 0 else ((n + 1) // 2, (n + 1) // 2)
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


def step_bins(
    relation: Relation, steps: Sequence[int], widths: Sequence[int], n_bins: Sequence[int]
) -> dict[int, Counter[int]]:
    """Per step k in ``steps``, how many step-(k-1)→k gaps fall in each time-to-convert bin.

    Bin i of step k holds the whole-second gaps in [i × width, (i + 1) × width), the last bin
    everything above. One step (the page's histogram) is a plain parallel ``GROUP BY`` of its
    bin over the people who reached it; several are the grouping sets of one hashed aggregate
    (serial: PostgreSQL 15 does not aggregate grouping sets in parallel)."""
    result: dict[int, Counter[int]] = {k: Counter() for k in steps}
    if len(steps) == 1:
        (k,) = steps
        sql = relation.sql + (
            f"SELECT LEAST(floor({gap(k)}::float8 / 1e6 / %s)::int, %s), count(*)"
            f" FROM outcomes WHERE furthest_step >= {k} GROUP BY 1"
        )
        for bucket, count in fetch(sql, [*relation.params, widths[0], n_bins[0] - 1]):
            result[k][bucket] = count
        return result
    keys = [
        f"CASE WHEN furthest_step >= {k} THEN LEAST(floor({gap(k)}::float8 / 1e6 / %s)::int, %s)"
        f" END AS b{k}"
        for k in steps
    ]
    names = [f"b{k}" for k in steps]
    which = " ".join(
        f"WHEN GROUPING({name}) = 0 THEN {k}" for k, name in zip(steps, names, strict=True)
    )
    sql = relation.sql + (
        f"SELECT CASE {which} END, COALESCE({', '.join(names)}), count(*)"
        f" FROM (SELECT {', '.join(keys)} FROM outcomes) o"
        f" GROUP BY GROUPING SETS ({', '.join(f'({name})' for name in names)})"
    )
    params = [*relation.params]
    for width, bins in zip(widths, n_bins, strict=True):
        params += [width, bins - 1]
    for k, bucket, count in fetch(sql, params):
        if bucket is not None:  # None: the entrants who did not reach step k
            result[k][bucket] = count
    return result
