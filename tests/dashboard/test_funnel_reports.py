"""Trends by entry period, time-to-convert histograms, the people behind counts, CSV export.

Each report runs from progress rows (SQL on PostgreSQL) and from raw events; both must agree.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard.funnels import (
    FunnelQuery,
    FunnelQueryError,
    funnel_people,
    funnel_trends,
    gather,
    iter_funnel_people,
    people_csv_lines,
    run_funnel,
    runner,
    step_median_seconds,
    time_to_convert,
)
from onboarding.models import OnboardingFlow, Segment

from .test_funnel_semantics import DAY, T0, identify, make_flow, send, track

MODES = ["progress", "events"]
MINUTE = timedelta(minutes=1)


@pytest.fixture
def flow(db) -> OnboardingFlow:
    return make_flow("activation", DAY, ("Signed Up", {}), ("Email Verified", {}), ("Paid", {}))


@pytest.fixture
def timeline(api, flow) -> None:
    send(
        api,
        identify("a", T0 - DAY, email="a@example.com", plan="pro", source="ads"),
        # Monday T0: a completes, b verifies, c only signs up.
        track("a", "Signed Up", T0),
        track("a", "Email Verified", T0 + 10 * MINUTE),
        track("a", "Paid", T0 + 70 * MINUTE),
        track("b", "Signed Up", T0 + MINUTE),
        track("b", "Email Verified", T0 + 31 * MINUTE),
        track("c", "Signed Up", T0 + 2 * MINUTE),
        # Tuesday: d completes.
        track("d", "Signed Up", T0 + DAY),
        track("d", "Email Verified", T0 + DAY + 5 * MINUTE),
        track("d", "Paid", T0 + DAY + 65 * MINUTE),
        # The next Monday: e signs up.
        track("e", "Signed Up", T0 + 7 * DAY),
    )


def query(flow, mode, **options) -> FunnelQuery:
    defaults = {"since": T0.date(), "until": (T0 + 7 * DAY).date(), "now": T0 + 30 * DAY}
    return FunnelQuery(flow=flow, mode=mode, **{**defaults, **options})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("timeline")
def test_trends_by_day_and_week(flow, mode):
    days = funnel_trends(query(flow, mode), "day")
    assert len(days) == 8
    assert [(p.entrants, p.completions) for p in days[:2]] == [(3, 1), (1, 1)]
    assert days[0].conversion == pytest.approx(1 / 3)
    assert days[7].entrants == 1 and days[2].entrants == 0 and days[2].conversion == 0.0
    assert not any(p.incomplete for p in days)
    weeks = funnel_trends(query(flow, mode), "week")
    assert [(w.period_start, w.entrants, w.completions) for w in weeks] == [
        (T0.date(), 4, 2),
        ((T0 + 7 * DAY).date(), 1, 0),
    ]
    # A day is incomplete until its last possible entrant's window (day end + 1 day) has passed:
    # two days after T0 (Monday 10:00), Monday's windows are closed, Tuesday's are not.
    pinned = funnel_trends(query(flow, mode, now=T0 + 2 * DAY), "day")
    assert [p.incomplete for p in pinned[:3]] == [False, True, True]


@pytest.mark.usefixtures("timeline")
def test_trends_reject_unknown_interval(flow):
    with pytest.raises(FunnelQueryError):
        funnel_trends(query(flow, "progress"), "month")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("timeline")
def test_time_to_convert_histograms(flow, mode):
    histograms = time_to_convert(query(flow, mode), bins=3)
    assert [h.index for h in histograms] == [2, 3]
    verify, pay = histograms
    # Gaps 600, 1800, 300 s; width ceil(1800 / 3) = 600: [0,600) [600,1200) [1200,1800].
    assert verify.count == 3
    assert [(b.start_seconds, b.end_seconds, b.count) for b in verify.bins] == [
        (0, 600, 1),
        (600, 1200, 1),
        (1200, 1800, 1),
    ]
    assert pay.count == 2 and sum(b.count for b in pay.bins) == 2
    auto = time_to_convert(query(flow, mode))
    assert [len(h.bins) for h in auto] == [2, 2]  # ceil(cbrt(3)), ceil(cbrt(2))


@pytest.mark.parametrize("breakdown", [None, "source"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("timeline")
def test_a_page_gathers_its_entrants_once_for_three_reports(
    api, flow, mode, breakdown, monkeypatch
):
    # f entered before the range and again inside it: a re-entrant, from their re-entry row.
    send(
        api,
        track("f", "Signed Up", T0 - 3 * DAY),
        track("f", "Signed Up", T0 + 2 * DAY),
        track("f", "Email Verified", T0 + 2 * DAY + MINUTE),
    )
    q = query(flow, mode, breakdown=breakdown)
    separate = (run_funnel(q), funnel_trends(q, "day"), time_to_convert(q))
    assert separate[0].entrants == 6
    assert separate[2][0].count == 4  # a, b, d and f verified

    calls = []
    for name in ("allowed_people", "collect_outcomes"):
        real = getattr(runner, name)
        monkeypatch.setattr(
            runner,
            name,
            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k),
        )
    gathered = gather(q)
    together = (
        run_funnel(q, gathered),
        funnel_trends(q, "day", gathered),
        time_to_convert(q, gathered=gathered),
    )
    assert together == separate
    # The entrants' restriction is built once (PostgreSQL: the segment's re-entrants looked up
    # once), or the outcomes collected once (elsewhere), not three times.
    assert len(calls) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("breakdown", [None, "source"])
@pytest.mark.usefixtures("timeline")
def test_on_postgresql_the_page_reads_its_entrants_in_two_passes(flow, breakdown):
    # The funnel's grouped pass (counts, medians, still converting, the friction basis, the
    # largest gap per step: the histograms' ranges, and the entrants and completions per day: the
    # trend), then one pass for the bins of the histogram the page shows; before, the trend and
    # the bins of every step were a second hashed pass, and earlier still passes of their own.
    q = query(flow, "progress", breakdown=breakdown)
    gathered = gather(q)
    with CaptureQueriesContext(connection) as queries:
        result = run_funnel(q, gathered)
        trends = funnel_trends(q, "week", gathered)
        histograms = time_to_convert(q, gathered=gathered, step=2)
    passes = [q["sql"] for q in queries if "WITH outcomes" in q["sql"]]
    # (and the medians' pivots from a sample of the rows: test_funnel_medians)
    full = [sql for sql in passes if "TABLESAMPLE" not in sql]
    assert len(full) == 2
    assert "GROUPING SETS" not in full[1] and "furthest_step >= 2" in full[1]
    assert (result.entrants, result.still_converting, result.settled) == (5, 0, [5, 3, 2])
    assert [(p.entrants, p.completions) for p in trends] == [(4, 2), (1, 0)]
    assert [h.count for h in histograms] == [3]
    assert sum(b.count for b in histograms[0].bins) == 3
    # Every step's bins (the report's own form): one more pass, for all of them.
    with CaptureQueriesContext(connection) as queries:
        every = time_to_convert(q, gathered=gathered)
    assert len([q for q in queries if "WITH outcomes" in q["sql"]]) == 1
    assert every[0] == histograms[0] and [h.count for h in every] == [3, 2]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bins", [None, 3])
@pytest.mark.usefixtures("timeline")
def test_one_steps_histogram_alone_is_the_reports(flow, mode, bins):
    q = query(flow, mode)
    every = time_to_convert(q, bins=bins)
    assert [time_to_convert(q, bins=bins, step=k) for k in (2, 3)] == [[h] for h in every]
    gathered = gather(q)
    run_funnel(q, gathered)
    assert time_to_convert(q, bins=bins, gathered=gathered, step=3) == [every[1]]
    assert time_to_convert(q, step=1) == [] and time_to_convert(q, step=4) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("breakdown", [None, "source"])
@pytest.mark.usefixtures("timeline")
def test_one_steps_median_alone_is_the_funnels(flow, mode, breakdown):
    # What the "Why people stop" panel reads, without running the whole funnel again.
    q = query(flow, mode, breakdown=breakdown)
    medians = [step.median_seconds_from_previous for step in run_funnel(q).steps]
    assert medians == [None, 10 * 60, 60 * 60]
    assert [step_median_seconds(q, k) for k in (2, 3)] == medians[1:]
    with pytest.raises(FunnelQueryError):
        step_median_seconds(q, 1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("timeline")
def test_people_behind_each_count(flow, mode):
    q = query(flow, mode)
    result = run_funnel(q)
    for step in result.steps:
        page = funnel_people(q, step=step.index, outcome="reached", page_size=2)
        assert page.total == step.count
    reached = funnel_people(q, step=2, outcome="reached")
    assert [p.external_id for p in reached.people] == ["a", "b", "d"]
    a = reached.people[0]
    assert (a.email, a.furthest_step, a.entered_at, a.reached_at) == (
        "a@example.com",
        3,
        T0,
        T0 + 70 * MINUTE,
    )
    dropped = funnel_people(q, step=2, outcome="dropped")
    assert [p.external_id for p in dropped.people] == ["c", "e"]
    assert [p.external_id for p in funnel_people(q, step=3, outcome="dropped").people] == ["b"]
    second = funnel_people(q, step=1, page=2, page_size=2)
    assert [p.external_id for p in second.people] == ["c", "d"]
    assert (second.total, second.pages) == (5, 3)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("timeline")
def test_people_within_a_breakdown_value(flow, mode):
    q = query(flow, mode, breakdown="source")
    people = funnel_people(q, step=1, breakdown_value="ads")
    assert [p.external_id for p in people.people] == ["a"]
    assert funnel_people(q, step=1, breakdown_value="(none)").total == 4


@pytest.mark.usefixtures("timeline")
def test_people_argument_errors(flow):
    q = query(flow, "progress")
    for kwargs in (
        {"step": 0},
        {"step": 4},
        {"step": 1, "outcome": "dropped"},
        {"step": 2, "outcome": "lost"},
        {"step": 1, "page": 0},
        {"step": 1, "breakdown_value": "ads"},
    ):
        with pytest.raises(FunnelQueryError):
            funnel_people(q, **kwargs)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("timeline")
def test_iteration_and_csv_cover_everyone(flow, mode):
    q = query(flow, mode)
    assert [p.external_id for p in iter_funnel_people(q, step=1, chunk=2)] == list("abcde")
    lines = people_csv_lines(q, step=2, outcome="dropped")
    rows = list(csv.reader(io.StringIO("".join(lines))))
    assert rows[0] == [
        "person_id",
        "external_id",
        "email",
        "entered_at",
        "furthest_step",
        "reached_at",
        "still_converting",
    ]
    assert [(row[1], row[4], row[6]) for row in rows[1:]] == [
        ("c", "1", "false"),
        ("e", "1", "false"),
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("timeline")
def test_people_still_inside_their_window_are_marked(flow, mode):
    """An hour after e signed up, e's one-day window is open: listed with the people stopped at
    step 2, but marked as still converting (DESIGN §4.2); c's window closed days ago."""
    q = query(flow, mode, now=T0 + 7 * DAY + 60 * MINUTE)
    page = funnel_people(q, step=2, outcome="dropped")
    assert [(p.external_id, p.still_converting) for p in page.people] == [("c", False), ("e", True)]
    reached = funnel_people(q, step=1)
    marks = {p.external_id: p.still_converting for p in reached.people}
    assert marks == {"a": False, "b": False, "c": False, "d": False, "e": True}
    rows = list(csv.reader(io.StringIO("".join(people_csv_lines(q, step=2, outcome="dropped")))))
    assert [(row[1], row[6]) for row in rows[1:]] == [("c", "false"), ("e", "true")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.usefixtures("timeline")
def test_segment_filter_uses_the_segment_compiler(flow, mode):
    pro = Segment.objects.create(
        slug="pro",
        name="Pro",
        definition={"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    )
    result = run_funnel(query(flow, mode, segment=pro))
    assert [s.count for s in result.steps] == [1, 1, 1]
    assert result.as_dict()["segment"] == "pro"


@pytest.mark.parametrize("mode", MODES)
def test_segment_filter_applies_to_people_who_entered_again(api, flow, mode):
    # Both first entered before the range and enter again inside it, so the progress path walks
    # them from raw events; only the segment's member may count.
    send(
        api,
        identify("pro-again", T0 - 3 * DAY, plan="pro"),
        identify("free-again", T0 - 3 * DAY, plan="free"),
        track("pro-again", "Signed Up", T0 - 2 * DAY),
        track("pro-again", "Signed Up", T0 + MINUTE),
        track("pro-again", "Email Verified", T0 + 5 * MINUTE),
        track("free-again", "Signed Up", T0 - 2 * DAY),
        track("free-again", "Signed Up", T0 + MINUTE),
        track("free-again", "Email Verified", T0 + 5 * MINUTE),
        track("free-again", "Paid", T0 + 6 * MINUTE),
        track("pro-new", "Signed Up", T0 + 2 * MINUTE),
    )
    definition = {"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]}
    send(api, identify("pro-new", T0 + 3 * MINUTE, plan="pro"))
    pro = Segment.objects.create(slug="pro", name="Pro", definition=definition)
    result = run_funnel(query(flow, mode, segment=pro))
    assert [s.count for s in result.steps] == [2, 1, 0]
    everyone = run_funnel(query(flow, mode))
    assert [s.count for s in everyone.steps] == [3, 2, 1]


def test_query_validation(flow):
    with pytest.raises(FunnelQueryError):
        FunnelQuery(flow=flow, since=T0.date(), until=(T0 - DAY).date())
    with pytest.raises(FunnelQueryError):
        FunnelQuery(flow=flow, since=T0.date(), until=T0.date(), breakdown="")
