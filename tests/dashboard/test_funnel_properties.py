"""Property-based: for random small event sets, the progress-based funnel, the raw-event funnel and
the brute-force reference agree (counts, medians, still converting, friction, breakdown).

Events go in through the tracking API in random batches (so some arrive late, with older
timestamps); each example runs in a savepoint that is rolled back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.funnels import FunnelQuery, funnel_people, run_funnel

from .test_funnel_semantics import assert_same, identify, make_flow, reference_funnel, send, track

BASE = datetime(2026, 3, 2, tzinfo=UTC)
FLOWS = {
    "filtered": [("Signed Up", {}), ("Email Verified", {}), ("Profile Completed", {"plan": "pro"})],
    "repeated": [("Signed Up", {}), ("Email Verified", {}), ("Email Verified", {})],
    "entry-filter": [("Signed Up", {"plan": "pro"}), ("Signed Up", {}), ("Profile Completed", {})],
}
NAMES = ["Signed Up", "Email Verified", "Profile Completed", "Page Viewed"]
PLANS = [None, "pro", "free"]

events = st.tuples(
    st.sampled_from(["u1", "u2", "u3", "u4"]),
    st.sampled_from(NAMES),
    st.integers(min_value=0, max_value=6 * 24 * 2),  # half-hours: equal timestamps are common
    st.sampled_from(PLANS),
    st.integers(min_value=0, max_value=2),  # which batch it arrives in
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    shape=st.sampled_from(sorted(FLOWS)),
    window_hours=st.sampled_from([1, 6, 24, 48]),
    timeline=st.lists(events, min_size=1, max_size=14),
    traits=st.dictionaries(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from(["pro", "free"])),
    since_day=st.integers(min_value=0, max_value=4),
    days=st.integers(min_value=0, max_value=3),
    now_hours=st.integers(min_value=0, max_value=8 * 24),
    breakdown=st.sampled_from([None, "plan"]),
)
def test_progress_raw_and_reference_agree(
    api, shape, window_hours, timeline, traits, since_day, days, now_hours, breakdown
):
    with transaction.atomic():
        flow = make_flow(shape, timedelta(hours=window_hours), *FLOWS[shape])
        batches: list[list[dict]] = [[], [], []]
        for user, plan in traits.items():
            batches[0].append(identify(user, BASE - timedelta(days=1), plan=plan))
        for user, name, half_hours, plan, batch in timeline:
            properties = {} if plan is None else {"plan": plan}
            at = BASE + timedelta(minutes=30 * half_hours)
            batches[batch].append(track(user, name, at, **properties))
        for batch in reversed(batches):  # later batches first: older events arrive late
            if batch:
                send(api, *batch)

        since = (BASE + timedelta(days=since_day)).date()
        until = since + timedelta(days=days)
        now = BASE + timedelta(hours=now_hours)
        ref = reference_funnel(flow, since, until, now, breakdown)
        results = {}
        for mode in ("progress", "events"):
            query = FunnelQuery(
                flow=flow, since=since, until=until, now=now, breakdown=breakdown, mode=mode
            )
            results[mode] = run_funnel(query)
            assert_same(results[mode], ref)
            for step in results[mode].steps:
                assert funnel_people(query, step=step.index).total == step.count
        assert results["progress"].as_dict() == results["events"].as_dict()
        transaction.set_rollback(True)
