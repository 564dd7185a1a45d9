"""Enrollment is set-based (DESIGN §5): a tick takes the same statements whether 3 or 30 people
fall due, one INSERT per table for all of them; and the one-statement insert keeps every value."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from onboarding.models import Person, Segment
from triggers.engine.inserts import insert_rows
from triggers.experiments.hashing import pick, position
from triggers.models import DecisionLog, Enrollment, Experiment, Message, MessageTemplate
from triggers.services.experiments import experiment_save, experiment_set_status

from .conftest import T0, make_rule

M = timedelta(minutes=1)
SELECT = re.compile(r'^SELECT .*? FROM "(\w+)"', re.IGNORECASE)
# Anywhere in a statement: on PostgreSQL, follow-ups and decisions are inserted in the
# enrollments' statement (data-modifying CTEs).
INSERT = re.compile(r'INSERT (?:OR IGNORE )?INTO "(\w+)"', re.IGNORECASE)


@pytest.fixture
def busy_rule(flow, templates):
    """A rule that uses every step of enrollment: a segment, re-entry once a day, an experiment
    with a holdout, a follow-up at a local time (time zones) and one after a delay."""
    Segment.objects.create(
        slug="pro",
        name="Pro",
        definition={"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    )
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "segment": "pro",
            "reentry": {"once_per": "1d"},
            "follow_ups": [
                {"channel": "in_app", "template": "nudge", "delay": "0s"},
                {"channel": "email", "template": "reminder", "delay": "1d", "at": "10:00"},
            ],
        },
    )
    experiment, _ = experiment_save(
        slug="trial-test",
        rule_slug="trial",
        variants=[
            {"name": "reminders", "weight": 70},
            {
                "name": "in-app-only",
                "weight": 20,
                "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
            },
            {"name": "holdout", "weight": 10, "holdout": True},
        ],
        metric={"flow": "activation", "completed_within": "1d"},
    )
    experiment_set_status(experiment=experiment, status="running")


def _send_batch(timeline, at: datetime, users: list[str]) -> None:
    """Each user sends Trial Ending at ``at``; one of them an hour late (late data). Every
    second user is on the pro plan (the segment)."""
    for user in users:
        timeline.send(at, user, "Trial Ending")
    timeline.send(at, f"late-{users[0]}", "Trial Ending", happened_at=at - 60 * M)
    for n, user in enumerate(users):
        if n % 2 == 0:
            Person.objects.filter(external_id=user).update(
                traits={"plan": "pro"}, timezone="America/New_York"
            )


def _tick(timeline, at: datetime):
    with CaptureQueriesContext(connection) as queries:
        report = timeline.tick(at)
    inserts = Counter(table for q in queries.captured_queries for table in INSERT.findall(q["sql"]))
    if connection.vendor == "postgresql":
        chained = [set(INSERT.findall(q["sql"])) for q in queries.captured_queries]
        assert {"triggers_enrollment", "triggers_message", "triggers_decisionlog"} in chained
    return report, len(queries.captured_queries), inserts


def _seed_putting_in_arm(experiment: Experiment, people: list[Person], arm: str) -> None:
    """A seed that puts ``people`` in ``arm``. With the random seed of ``experiment_save``, the
    small batch's two enrolled people both fell in the 10 % holdout about one run in a hundred
    (the fresh-clone check caught it): that tick wrote no follow-ups, one INSERT fewer."""
    variants = list(experiment.variants.order_by("position"))
    for n in range(10_000):
        seed = f"pinned-{n}"
        if all(pick(variants, position(seed, p.pk)).name == arm for p in people):
            Experiment.objects.filter(pk=experiment.pk).update(seed=seed)
            return
    raise AssertionError("no seed found")


def test_a_tick_takes_the_same_statements_for_3_or_30_people_due(busy_rule, timeline):
    _send_batch(timeline, T0, ["a0", "a1", "a2"])
    # The two on the pro plan (the segment) get the arm with every kind of follow-up.
    _seed_putting_in_arm(
        Experiment.objects.get(slug="trial-test"),
        list(Person.objects.filter(external_id__in=["a0", "a2"])),
        "reminders",
    )
    small, small_count, small_inserts = _tick(timeline, T0 + M)
    assert {e.variant.name for e in Enrollment.objects.select_related("variant")} == {"reminders"}
    # The second batch: 30 new people and the three from before, whom re-entry holds back.
    _send_batch(timeline, T0 + 2 * M, [f"b{n}" for n in range(30)] + ["a0", "a1", "a2"])
    large, large_count, large_inserts = _tick(timeline, T0 + 3 * M)

    (s,), (b,) = small.rules, large.rules
    assert (s.found, s.enrolled, dict(s.skipped)) == (
        4,
        2,
        {"late_data": 1, "segment": 1},
    )
    assert (b.found, b.enrolled, dict(b.skipped)) == (
        34,
        15,
        {"late_data": 1, "segment": 16, "reentry": 2},
    )
    assert large_count == small_count
    # One INSERT per table for everyone due; the experiment's assignments (persisted at first
    # eligibility) are the one write outside the three.
    for inserts in (small_inserts, large_inserts):
        assert inserts == {
            "triggers_enrollment": 1,
            "triggers_message": 1,
            "triggers_decisionlog": 1,
            "triggers_assignment": 1,
        }


def test_every_enrolled_person_gets_their_arm_messages_and_decisions(busy_rule, timeline):
    _send_batch(timeline, T0, [f"u{n}" for n in range(20)])
    timeline.tick(T0 + M)
    enrollments = list(Enrollment.objects.select_related("variant", "person"))
    assert len(enrollments) == 10
    for enrollment in enrollments:
        arm = enrollment.variant.name
        steps = list(
            Message.objects.filter(enrollment=enrollment)
            .order_by("step")
            .values_list("channel", "due_at")
        )
        if arm == "holdout":
            assert steps == []
        elif arm == "in-app-only":
            assert steps == [("in_app", T0)]
        else:
            # 10:00 the next day in New York is 15:00 UTC (EST).
            assert steps == [("in_app", T0), ("email", datetime(2026, 11, 3, 15, tzinfo=UTC))]
        outcomes = sorted(
            DecisionLog.objects.filter(enrollment=enrollment).values_list("outcome", flat=True)
        )
        assert outcomes == (["enrolled", "holdout"] if arm == "holdout" else ["enrolled"])
        assert enrollment.person.assignments.get().variant == enrollment.variant


@pytest.mark.django_db
def test_insert_rows_keeps_values_fills_defaults_and_skips_conflicts(templates):
    rule = make_rule(
        "idle",
        {
            "trigger": {"kind": "event", "event": "X"},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    person = Person.objects.create(external_id="p", first_seen=T0, last_seen=T0)
    when = datetime(2026, 11, 2, 9, 0, 1, 123456, tzinfo=UTC)
    context = {"quote": 'say "hi"', "unicode": "Grüße ✓", "nested": {"list": [1, 2.5, None]}}
    rows = [
        {
            "rule_id": rule.pk,
            "rule_version_id": rule.current_version_id,
            "person_id": person.pk,
            "occurrence_key": key,
            "enrolled_at": when,
            "context": context,
        }
        for key in ("a", "b")
    ]
    inserted = insert_rows(Enrollment, rows, returning=("person_id", "occurrence_key"))
    assert sorted(inserted) == [(person.pk, "a"), (person.pk, "b")]
    again = insert_rows(
        Enrollment,
        [rows[1], {**rows[0], "occurrence_key": "c"}],
        returning=("occurrence_key",),
        skip_conflicts=True,
    )
    assert again == [("c",)]
    stored = Enrollment.objects.order_by("pk")
    assert [e.occurrence_key for e in stored] == ["a", "b", "c"]  # in the order given
    first = stored[0]
    assert (first.enrolled_at, first.context, first.status, first.exit_reason) == (
        when,
        context,
        "active",
        "",
    )

    template = MessageTemplate.objects.get(slug="nudge")
    insert_rows(
        Message,
        [
            {
                "idempotency_key": "k1",
                "enrollment_id": first.pk,
                "rule_id": rule.pk,
                "rule_version_id": rule.current_version_id,
                "person_id": person.pk,
                "step": 0,
                "channel": "in_app",
                "template_id": template.pk,
                "due_at": when,
            }
        ],
    )
    message = Message.objects.get()
    assert (message.status, message.attempts, message.manual, message.due_at) == (
        "scheduled",
        0,
        False,
        when,
    )
    assert message.created_at is not None and message.sent_at is None
    assert insert_rows(Message, []) == []

    # Values every row has, bound once: a date-time, ids, a string.
    later = when + timedelta(days=1, microseconds=7)
    insert_rows(
        Enrollment,
        [{"person_id": person.pk, "occurrence_key": key} for key in ("d", "e")],
        constants={
            "rule_id": rule.pk,
            "rule_version_id": rule.current_version_id,
            "enrolled_at": later,
            "exit_reason": "fixed",
        },
    )
    added = Enrollment.objects.filter(occurrence_key__in=["d", "e"]).order_by("pk")
    assert [
        (e.occurrence_key, e.rule_id, e.enrolled_at, e.exit_reason, e.context) for e in added
    ] == [(key, rule.pk, later, "fixed", {}) for key in ("d", "e")]


def test_templates_and_experiments_are_read_once_per_tick_not_per_rule(busy_rule, timeline):
    make_rule(
        "trial-nudge",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    _send_batch(timeline, T0, ["a0", "a1", "a2"])
    with CaptureQueriesContext(connection) as queries:
        report = timeline.tick(T0 + M)
    assert [(r.rule, r.enrolled) for r in report.rules] == [("trial", 2), ("trial-nudge", 3)]
    reads = Counter(
        match.group(1)
        for q in queries.captured_queries
        if (match := SELECT.match(q["sql"]))
        and match.group(1) in ("triggers_messagetemplate", "triggers_experiment")
    )
    # Templates: once, for the first rule (the second needs none it has not read). Experiments:
    # which rules have one running, once per tick; then the one running for "trial".
    assert reads == {"triggers_messagetemplate": 1, "triggers_experiment": 2}


IDLE_RULES = {
    "idle-2m": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 2},
    "idle-3m": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 3},
    "idle-s2-3m": {"kind": "inactive_in_flow", "flow": "activation", "step": 2, "minutes": 3},
    "idle-s3-5m": {"kind": "inactive_in_flow", "flow": "activation", "step": 3, "minutes": 5},
}


@pytest.fixture
def idle_rules(flow, templates):
    return [
        make_rule(
            slug,
            {
                "trigger": trigger,
                "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
                "reentry": {"once_per": "1m"},
            },
        )
        for slug, trigger in IDLE_RULES.items()
    ]


def _idle_timeline(timeline) -> None:
    """People idle at step 1 and 2, one who completes a step in between, one learnt of late
    (an event that happened 10 minutes before it arrived)."""
    timeline.send(T0, "s1", "Signed Up")
    timeline.send(T0, "s2", "Signed Up")
    timeline.send(T0 + M, "s2", "Email Verified")
    timeline.send(T0 + M, "moves", "Signed Up")
    timeline.send(T0 + 3 * M, "moves", "Email Verified")
    timeline.send(T0 + 4 * M, "late", "Signed Up", happened_at=T0 - 6 * M)
    timeline.send(T0 + 2 * M, "again", "Signed Up")
    timeline.send(T0 + 5 * M, "again", "Page Viewed")


def test_idle_rules_of_a_flow_are_detected_together_as_each_would_alone(idle_rules, timeline):
    from triggers.engine.detectors import detect, idle_spells
    from triggers.engine.spells import IdleSpec
    from triggers.rules.spec import parse_rule

    _idle_timeline(timeline)
    triggers = [parse_rule(rule.current_version.definition)[0].trigger for rule in idle_rules]
    specs = [IdleSpec.of(trigger) for trigger in triggers]
    moments = [T0 + k * 30 * timedelta(seconds=1) for k in range(0, 24)]
    found_any = 0
    for since, until in pairwise(moments):
        together = idle_spells("activation", specs, since, until)
        for trigger, occurrences in zip(triggers, together, strict=True):
            alone = sorted(detect(trigger, since, until), key=lambda o: o.person_id)
            assert sorted(occurrences, key=lambda o: o.person_id) == alone
            found_any += len(alone)
    assert found_any > 5


def test_a_tick_reads_the_idle_rules_of_a_flow_in_one_query_each(idle_rules, timeline):
    _idle_timeline(timeline)
    reports = []
    for k in range(1, 20):
        with CaptureQueriesContext(connection) as queries:
            reports.append(timeline.tick(T0 + k * 30 * timedelta(seconds=1)))
        progress_reads = [
            q
            for q in queries.captured_queries
            if (match := SELECT.match(q["sql"])) and match.group(1) == "onboarding_flowprogress"
        ]
        # One for the four rules' idle spells, one for their exit check (people who moved).
        assert len(progress_reads) == 2
    enrolled = Counter(
        Enrollment.objects.values_list("rule__slug", "person__external_id", "occurrence_key")
    )
    assert set(enrolled.values()) == {1}
    by_rule = Counter(rule for rule, _, _ in enrolled)
    assert by_rule == {"idle-2m": 4, "idle-3m": 4, "idle-s2-3m": 2, "idle-s3-5m": 2}
    late = DecisionLog.objects.filter(reason="late_data").values_list("rule__slug", flat=True)
    assert sorted(late) == ["idle-2m", "idle-3m", "idle-s2-3m"]


def test_a_rule_whose_watermark_moved_after_the_shared_detection_detects_alone(
    idle_rules, timeline
):
    """Shared detection is read before the rules are claimed; a rule another tick moved in
    between detects again from its own watermark (and finds nothing twice)."""
    from triggers.engine.evaluate import TickReport, evaluate_rule
    from triggers.engine.lookups import TickLookups
    from triggers.models import Rule, RuleState

    _idle_timeline(timeline)
    now = T0 + 10 * M
    rules = list(Rule.objects.select_related("current_version").order_by("pk"))
    lookups = TickLookups.read()
    lookups.prepare(rules, now)
    assert all(lookups.detected[rule.pk][1] for rule in rules if rule.slug != "idle-s3-5m")
    RuleState.objects.filter(rule=rules[0]).update(checked_until=now - timedelta(seconds=30))
    report = TickReport(now=now, dry_run=False)
    for rule in rules:
        evaluate_rule(rule, now, report, lookups)
    found = {r.rule: r.found for r in report.rules}
    assert found["idle-2m"] == 0  # its spells fell due before the moved watermark
    assert found["idle-3m"] > 0


def test_the_session_rules_of_a_flow_read_once_and_find_as_each_would_alone(
    flow, templates, timeline
):
    from triggers.engine.detectors import detect
    from triggers.models import RuleState
    from triggers.rules.spec import parse_rule

    rules = [
        make_rule(
            f"sessions-{k}",
            {
                "trigger": {"kind": "inactive_sessions", "flow": "activation", "sessions": k},
                "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
            },
        )
        for k in (2, 3)
    ]
    triggers = [parse_rule(rule.current_version.definition)[0].trigger for rule in rules]
    H = timedelta(hours=1)
    timeline.send(T0, "u1", "Signed Up")
    timeline.send(T0, "u2", "Signed Up")
    timeline.send(T0 + 30 * M, "u2", "Email Verified")  # progressed: its sessions count after
    for hours in (1, 2, 3):
        timeline.send(T0 + hours * H, "u1", "Logged In")
        timeline.send(T0 + hours * H + 5 * M, "u2", "Logged In")
    enrolled = Counter()
    for hours in (1, 2, 3):
        since, now = T0 + hours * H - M, T0 + hours * H + 10 * M
        alone = {
            rule.slug: sorted(detect(trigger, since, now), key=lambda o: o.person_id)
            for rule, trigger in zip(rules, triggers, strict=True)
        }
        RuleState.objects.update(checked_until=since)
        with CaptureQueriesContext(connection) as queries:
            report = timeline.tick(now)
        assert {r.rule: r.found for r in report.rules} == {s: len(o) for s, o in alone.items()}
        event_reads = [
            q
            for q in queries.captured_queries
            if (match := SELECT.match(q["sql"])) and match.group(1) == "onboarding_event"
        ]
        # The people with an event in the interval, then their events: once for both rules.
        assert len(event_reads) == 2
        enrolled.update({r.rule: r.enrolled for r in report.rules})
    assert enrolled == {"sessions-2": 2, "sessions-3": 2}
