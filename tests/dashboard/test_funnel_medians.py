"""The funnel's medians from one parallel pass (``dashboard/funnels/pg.py``, issue 16): pivots from
a sample, the gaps below and inside the band counted and collected, the middle ranks read from the
band; a band that misses the middle falls back to the exact sort. Every path must give exactly the
medians of the single-process sort (and of the reference: test_funnel_semantics,
test_funnel_properties)."""

# ruff: noqa: S608

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard.funnels import FunnelQuery, gather, pg, run_funnel

from .test_funnel_semantics import DAY, T0, identify, make_flow, send, track

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

PEOPLE = 240


@pytest.fixture
def flow(api):
    """240 people over 3 days; random gaps (many equal ones) to steps 2 and 3; a third on plan
    pro, the rest free, one source each of three."""
    flow = make_flow("medians", 2 * DAY, ("Signed Up", {}), ("Verified", {}), ("Paid", {}))
    rng = random.Random(16)
    messages = []
    for i in range(PEOPLE):
        user = f"u{i}"
        entered = T0 + timedelta(minutes=rng.randrange(3 * 24 * 60))
        source = ("ads", "seo", "referral")[i % 3]
        messages.append(identify(user, T0 - DAY, plan="pro" if i % 3 == 0 else "free"))
        messages.append(track(user, "Signed Up", entered, source=source))
        if rng.random() < 0.8:
            verified = entered + timedelta(minutes=rng.choice([1, 5, 5, 10, 30, 90, 240]))
            messages.append(track(user, "Verified", verified))
            if rng.random() < 0.6:
                messages.append(track(user, "Paid", verified + timedelta(hours=rng.randrange(30))))
    for start in range(0, len(messages), 200):
        send(api, *messages[start : start + 200])
    return flow


def query(flow, **extra) -> FunnelQuery:
    return FunnelQuery(
        flow=flow, since=T0.date(), until=(T0 + 3 * DAY).date(), now=T0 + 9 * DAY, **extra
    )


def exact(q: FunnelQuery):
    """The single-process sort's aggregates for the query."""
    gathered = gather(q)
    return pg.step_aggregates(
        gathered.relation, 3, q.clock - q.window, by_breakdown=bool(q.breakdown)
    )


def banded(q: FunnelQuery):
    gathered = gather(q)
    return pg.step_aggregates(
        gathered.relation,
        3,
        q.clock - q.window,
        by_breakdown=bool(q.breakdown),
        sample=gathered.sample,
    )


@pytest.fixture
def whole_sample(monkeypatch):
    """Every page sampled and a band from a single sampled gap: the band path on a small table."""
    monkeypatch.setattr(pg, "SAMPLE_PERCENT", 100.0)
    monkeypatch.setattr(pg, "_MIN_SAMPLED", 1)


def test_the_band_gives_the_exact_medians(flow, whole_sample):
    q = query(flow)
    assert banded(q) == exact(q)
    total = banded(q)[None]
    assert total.counts[0] == PEOPLE and total.medians[1] is not None


def test_a_breakdown_reads_each_values_band(flow, whole_sample):
    """Each breakdown value has its own band (and the whole funnel its own) in the same pass: the
    medians equal the sort's, and nothing is sorted but the sample."""
    q = query(flow, breakdown="source")
    with CaptureQueriesContext(connection) as queries:
        result = banded(q)
    sorts = [s["sql"] for s in queries.captured_queries if "percentile_disc" in s["sql"]]
    assert len(sorts) == 1 and "TABLESAMPLE" in sorts[0]
    assert any("onramp_collect" in s["sql"] for s in queries.captured_queries)
    assert set(result) == {None, "ads", "seo", "referral"}
    assert result == exact(q)
    assert all(result[value].medians[1] is not None for value in result)


def test_a_breakdown_value_the_sample_missed_has_every_gap_collected(flow, monkeypatch):
    """A value with too few sampled gaps (here: a sample of a few pages, a band for none of the
    values) still gets its exact medians, without the sort."""
    monkeypatch.setattr(pg, "SAMPLE_PERCENT", 0.0001)
    q = query(flow, breakdown="source")
    with CaptureQueriesContext(connection) as queries:
        result = banded(q)
    assert not any(
        "percentile_disc" in s["sql"] and "TABLESAMPLE" not in s["sql"]
        for s in queries.captured_queries
    )
    assert result == exact(q)


def test_a_breakdown_value_missing_from_the_bands_is_collected_whole(flow, whole_sample):
    """Bands for some values only (as when the sample missed a rare value): the others are
    collected whole through the join's null bounds, and every median is exact."""
    real = pg._pivots

    def without_seo(sample, n, **kw):
        bands = real(sample, n, **kw)
        bands.pop("seo")
        return bands

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(pg, "_pivots", without_seo)
    try:
        q = query(flow, breakdown="source")
        with CaptureQueriesContext(connection) as queries:
            result = banded(q)
    finally:
        monkeypatch.undo()
    assert not any(
        "percentile_disc" in s["sql"] and "TABLESAMPLE" not in s["sql"]
        for s in queries.captured_queries
    )
    assert result == exact(q)


def test_the_band_is_read_in_one_parallel_pass_without_a_sort(flow, whole_sample):
    gathered = gather(query(flow))
    with CaptureQueriesContext(connection) as queries:
        pg.step_aggregates(gathered.relation, 3, T0, by_breakdown=False, sample=gathered.sample)
    statements = [q["sql"] for q in queries.captured_queries if "outcomes" in q["sql"]]
    assert len(statements) == 2  # the sample's pivots, the pass
    assert "TABLESAMPLE SYSTEM" in statements[0]
    assert "percentile_disc" not in statements[1] and "onramp_collect" in statements[1]


def test_only_part_of_the_gaps_is_collected(flow, whole_sample):
    """About 115 sampled Verified → Paid gaps: a band of ±20 % around the median (between the
    sample's 30th and 70th percentiles), not every gap."""
    gathered = gather(query(flow))
    pivots = pg._pivots(gathered.sample, 3)[None]
    sql = gathered.relation.sql + (
        "SELECT count(*) FILTER (WHERE offset_3 - offset_2 BETWEEN %s AND %s), count(offset_3)"
        " FROM outcomes"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*gathered.relation.params, *pivots[1]])
        inside, reached = cursor.fetchone()
    assert 0 < inside < 0.75 * reached


def test_a_missed_band_falls_back_to_the_sort(flow, whole_sample, monkeypatch):
    """Pivots far above every gap: nothing below, nothing inside; the exact pass decides."""
    far = (10**15, 10**15 + 1)
    monkeypatch.setattr(pg, "_pivots", lambda sample, n, **kw: {None: [far, None]})
    q = query(flow)
    with CaptureQueriesContext(connection) as queries:
        result = banded(q)
    assert any("percentile_disc" in q["sql"] for q in queries.captured_queries)
    assert result == exact(q)


def test_a_missed_band_of_a_breakdown_value_falls_back_to_the_sort(flow, whole_sample, monkeypatch):
    far = (10**15, 10**15 + 1)
    real = pg._pivots

    def missing(sample, n, **kw):
        bands = real(sample, n, **kw)
        bands["ads"] = [far, far]
        return bands

    monkeypatch.setattr(pg, "_pivots", missing)
    q = query(flow, breakdown="source")
    with CaptureQueriesContext(connection) as queries:
        result = banded(q)
    assert any(
        "percentile_disc" in s["sql"] and "TABLESAMPLE" not in s["sql"]
        for s in queries.captured_queries
    )
    assert result == exact(q)


def test_a_sample_without_rows_collects_every_gap(flow, monkeypatch):
    """A small table (the sample holds too few gaps for a band): every gap is collected in the
    same parallel pass, no sort."""
    monkeypatch.setattr(pg, "SAMPLE_PERCENT", 0.0001)
    q = query(flow)
    with CaptureQueriesContext(connection) as queries:
        result = banded(q)
    statements = [s["sql"] for s in queries.captured_queries if "outcomes" in s["sql"]]
    assert len(statements) == 2 and "onramp_collect" in statements[1]
    assert "percentile_disc" not in statements[1]
    assert result == exact(q)


def test_a_segment_funnel_uses_the_band_too(flow, whole_sample):
    from onboarding.models import Segment

    pro = Segment.objects.create(
        slug="pro",
        name="Pro",
        definition={"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    )
    q = query(flow, segment=pro)
    gathered = gather(q)
    with CaptureQueriesContext(connection) as queries:
        result = banded(q)
    sorts = [s["sql"] for s in queries.captured_queries if "percentile_disc" in s["sql"]]
    assert len(sorts) == 1 and "TABLESAMPLE" in sorts[0]  # the pivots, from the sample
    assert result == exact(q) and 0 < result[None].counts[0] < PEOPLE
    assert gathered.sample is not None


def test_run_funnel_uses_the_band(flow, whole_sample):
    with CaptureQueriesContext(connection) as queries:
        result = run_funnel(query(flow))
    assert any("onramp_collect" in s["sql"] for s in queries.captured_queries)
    expected = exact(query(flow))
    assert [s.median_seconds_from_previous for s in result.steps] == expected[None].medians


@pytest.mark.parametrize("breakdown", [None, "source"])
def test_gather_looks_up_the_segments_reentrants_once(flow, breakdown):
    """The relations gather builds (the funnel's, without the breakdown, the sample) share one
    lookup of the segment's re-entrants instead of one each."""
    from onboarding.models import Segment

    pro = Segment.objects.create(
        slug="pro",
        name="Pro",
        definition={"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    )
    with CaptureQueriesContext(connection) as queries:
        gather(query(flow, segment=pro, breakdown=breakdown))
    assert len([q for q in queries.captured_queries if "onboarding_flowreentry" in q["sql"]]) == 1


@pytest.mark.parametrize("breakdown", [None, "source"])
def test_the_grouped_pass_is_parallel_safe(flow, whole_sample, breakdown):
    """Nothing in the pass is parallel-restricted (the breakdown's trait fallback is a
    parallel-safe function, not a correlated subquery, which would keep the value and all the
    aggregation grouped by it in the leader): with parallel query forced, the whole plan runs
    under one Gather."""
    q = query(flow, breakdown=breakdown)
    gathered = gather(q)
    with CaptureQueriesContext(connection) as queries:
        run_funnel(q, gathered)
    passes = [s["sql"] for s in queries.captured_queries if "onramp_collect" in s["sql"]]
    assert len(passes) == 1
    name = "force_parallel_mode" if connection.pg_version < 160000 else "debug_parallel_query"
    for grouped in passes:
        assert "TABLESAMPLE" not in grouped
        with connection.cursor() as cursor:
            cursor.execute(f"SET {name} = on")
            try:
                cursor.execute("EXPLAIN " + grouped)
                plan = [row[0] for row in cursor.fetchall()]
            finally:
                cursor.execute(f"RESET {name}")
        assert plan[0].startswith("Gather"), plan[0]
        assert not any("SubPlan" in line for line in plan)


def test_collected_states_are_estimated_small():
    """The planner's estimate of onramp_collect's state: without it (8 kB per state, times its
    guess of tens of thousands of groups) it expects the hashed aggregate to spill and sorts
    every row in each worker instead (dashboard migration 0010)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT aggtransspace, aggcombinefn::text FROM pg_aggregate"
            " WHERE aggfnoid = 'onramp_collect(bigint)'::regprocedure"
        )
        assert cursor.fetchone() == (64, "array_cat")


@pytest.mark.parametrize("breakdown", [None, "source"])
def test_the_funnel_alone_leaves_the_days_out(flow, whole_sample, breakdown):
    """``run_funnel`` without a shared gathering (no trend to feed) groups by furthest step and
    settled only; the report is the same as the page's."""
    q = query(flow, breakdown=breakdown)
    with CaptureQueriesContext(connection) as queries:
        alone = run_funnel(q)
    (grouped,) = [s["sql"] for s in queries.captured_queries if "onramp_collect" in s["sql"]]
    assert "AT TIME ZONE" not in grouped
    assert "max(" not in grouped  # the histograms' ranges: the page's pass only
    gathered = gather(q)
    assert run_funnel(q, gathered) == alone
    assert sum(gathered.memo["days"][0].values()) == alone.entrants


def test_the_funnel_alone_groups_the_progress_rows_from_the_tables_scan(api, flow, whole_sample):
    """Alone and without a breakdown, the progress rows are grouped by the furthest step and
    settled straight over the table (no ``UNION ALL`` layer over every row), and the re-entrants
    by an arm of their own, merged in Python; the report is the page's and the exact sort's."""
    # Two people enter again inside the range after a first entry the day before it.
    for user in ("again-1", "again-2"):
        send(
            api,
            identify(user, T0 - 2 * DAY),
            track(user, "Signed Up", T0 - DAY + timedelta(hours=1)),
            track(user, "Signed Up", T0 + timedelta(hours=2)),
            track(user, "Verified", T0 + timedelta(hours=2, minutes=7)),
        )
    q = query(flow)
    with CaptureQueriesContext(connection) as queries:
        alone = run_funnel(q)
    (grouped,) = [s["sql"] for s in queries.captured_queries if "onramp_collect" in s["sql"]]
    progress, reentries = grouped.split("), reentered AS (")
    assert "onboarding_flowprogress" in progress and "UNION ALL" not in progress
    assert "onboarding_flowreentry" in reentries and "onboarding_flowprogress" not in reentries
    assert grouped.count("GROUP BY 1, 2") == 2  # the two arms, each grouped on its own
    assert alone.steps[0].count == PEOPLE + 2
    assert run_funnel(q, gather(q)) == alone
    expected = exact(q)[None]
    assert [s.count for s in alone.steps] == expected.counts
    assert [s.median_seconds_from_previous for s in alone.steps] == expected.medians
