"""The rule editor's caps panel (which caps apply, the 7-day estimate of what they suppress),
what "Who matches now" says activation does, and activation's "also enroll people who are idle
right now" (issue 15 item 2)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.dashboard.test_views_rules import form_data
from tests.triggers.conftest import T0, make_rule
from triggers import workspace
from triggers.models import BacktestRun, DecisionLog, Enrollment, Message, Rule
from triggers.services.backtests import backtest_execute
from triggers.services.rules import rule_save

pytestmark = pytest.mark.django_db

NOW = T0 + timedelta(days=3)


@pytest.fixture
def growth(client: Client, alice) -> Client:
    client.force_login(alice)
    return client


def text(html: bytes | str) -> str:
    html = html.decode() if isinstance(html, bytes) else html
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#x27;", "'")


def idle_form(**overrides) -> dict[str, str]:
    """A new rule: idle 5 minutes anywhere in the flow, two in-app follow-ups (0m, 1h)."""
    return form_data(
        step="",
        **{
            "follow_ups-1-channel": "in_app",
            "follow_ups-1-template": "nudge",
            "follow_ups-1-delay": "1h",
            "follow_ups-1-at": "",
        },
        **overrides,
    )


# --- which caps apply ---------------------------------------------------------------------------


def test_the_editor_shows_the_caps_from_settings(growth, flow, templates):
    workspace.save_policy(
        global_cap_max=3,
        global_cap_period_seconds=7 * 86400,
        quiet_hours="21:00-08:00",
        default_timezone="UTC",
        actor=None,
    )
    caps = text(growth.get("/rules/new/").content)
    assert "Global cap (Settings): at most 3 follow-ups per 7 days per person" in caps
    assert "This rule's cap : none." in caps
    assert "Quiet hours (Settings): 21:00–08:00 in the person's local time" in caps
    # The rule's own cap field says the same, not a fixed "2 per 7 days".
    assert (
        "the global cap (at most 3 follow-ups per 7 days per person, across rules and channels),"
        " set on the Settings page, always applies." in caps
    )


def test_the_rules_own_cap_and_quiet_hours_are_shown_as_typed(growth, flow, templates):
    data = idle_form(quiet_start="22:00", quiet_end="07:00", cap_max="1", cap_per="1d")
    caps = text(growth.post("/rules/preview/", data, headers={"HX-Request": "true"}).content)
    assert "Global cap (Settings): at most 2 follow-ups per 7 days per person" in caps
    assert "This rule's cap : at most 1 per 1 day from this rule." in caps
    assert "Quiet hours (this rule): 22:00–07:00" in caps


# --- the estimate -------------------------------------------------------------------------------


@pytest.fixture
def signed_up(flow, templates, timeline) -> Rule:
    """Three people signed up two days ago, then nothing; a live rule enrolled all three."""
    other = make_rule(
        "welcome",
        {
            "trigger": {"kind": "event", "event": "Signed Up"},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "1d"}],
            "exit_when": "never",
        },
        active_from=NOW - timedelta(days=3),
    )
    for user in ("ann", "ben", "cat"):
        timeline.send(NOW - timedelta(days=2), user, "Signed Up")
    timeline.tick(NOW - timedelta(days=2) + timedelta(minutes=1))
    assert Enrollment.objects.filter(rule=other).count() == 3
    return other


def test_the_estimate_replays_the_form_over_14_days_and_says_what_caps_suppress(
    growth, signed_up, django_capture_on_commit_callbacks
):
    workspace.save_policy(
        global_cap_max=1,
        global_cap_period_seconds=7 * 86400,
        quiet_hours="",
        default_timezone="UTC",
        actor=None,
    )
    with time_machine.travel(NOW, tick=False):
        with django_capture_on_commit_callbacks(execute=False):
            response = growth.post(
                reverse("triggers:rule_caps_estimate"), idle_form(), headers={"HX-Request": "true"}
            )
        run = BacktestRun.objects.get()
        assert (run.since, run.until) == (NOW - timedelta(days=14), NOW)
        assert run.rule is None and run.definition["trigger"]["minutes"] == 5
        assert "Replaying the last 14 days" in text(response.content)
        backtest_execute(run.pk)  # what the worker does with the queued task
        answer = text(
            growth.get(reverse("triggers:rule_caps_estimate_status", args=[run.pk])).content
        )
    # Each person: the 0m follow-up goes out, the 1h one meets the global cap of 1 per 7 days.
    assert "Caps would have suppressed 3 of 6 follow-ups (50 %) in the last 14 days" in answer
    assert "(global cap 1 per 7 days; Welcome (3) already messages these people)" in answer
    assert "3 by the global cap, 0 by this rule's cap" in answer


def test_the_rules_own_cap_is_counted_too(growth, signed_up):
    with time_machine.travel(NOW, tick=False):
        growth.post(
            reverse("triggers:rule_caps_estimate"),
            idle_form(cap_max="1", cap_per="1d"),
            headers={"HX-Request": "true"},
        )
        run = BacktestRun.objects.get()
        backtest_execute(run.pk)
        answer = text(
            growth.get(reverse("triggers:rule_caps_estimate_status", args=[run.pk])).content
        )
    assert "Caps would have suppressed 3 of 6 follow-ups" in answer
    assert "0 by the global cap, 3 by this rule's cap" in answer


def test_an_unfinished_rule_is_not_estimated(growth, flow, templates):
    response = growth.post(
        reverse("triggers:rule_caps_estimate"),
        idle_form(**{"follow_ups-0-template": ""}),
        headers={"HX-Request": "true"},
    )
    assert "Complete the rule to estimate it" in text(response.content)
    assert not BacktestRun.objects.exists()


def test_viewers_cannot_start_an_estimate(client, charlie):
    client.force_login(charlie)
    assert client.post(reverse("triggers:rule_caps_estimate")).status_code == 403


# --- "who matches now" says what activation does ----------------------------------------------


@pytest.fixture
def idle_people(flow, templates, timeline) -> None:
    """recent: idle 2 h at NOW; stale: idle 30 h; fresh: active 2 minutes ago."""
    timeline.send(NOW - timedelta(hours=2), "recent", "Signed Up")
    timeline.send(NOW - timedelta(hours=30), "stale", "Signed Up")
    timeline.send(NOW - timedelta(minutes=2), "fresh", "Signed Up")


def test_who_matches_now_says_nobody_is_enrolled_retroactively(growth, idle_people):
    with time_machine.travel(NOW, tick=False):
        html = growth.post("/rules/preview/", idle_form(), headers={"HX-Request": "true"})
    panel = text(html.content)
    assert "3 People in Activation, not completed" in panel
    assert "2 of them idle for 5 min or more right now" in panel
    assert (
        "On activation. Nobody counted here is enrolled for what already happened: the rule"
        " enters only people whose idle mark passes after you activate it" in panel
    )
    assert (
        "Unless you tick Also enroll people who are idle right now below, which says how many it"
        " would enroll: they enter at activation too." in panel
    )
    # The option, its count and its hours come back with every refresh (out of band).
    assert 'id="activation-options" hx-swap-oob="true"' in html.content.decode()
    assert "1 person is idle now for at most 24 h." in panel


def test_the_option_recounts_on_its_own(growth, idle_people):
    data = idle_form(backfill="on", backfill_hours="48")
    with time_machine.travel(NOW, tick=False):
        response = growth.post(
            "/rules/preview/?part=activation-options", data, headers={"HX-Request": "true"}
        )
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="activation-options">')  # only the option
    assert "Who matches now" not in html
    assert re.search(r'name="backfill" id="id_backfill" form="rule-form" checked', html)
    assert "2 people are idle now for at most 48 h." in text(html)


def test_other_kinds_say_it_too_without_the_option(growth, flow, templates):
    data = idle_form(kind="event", event="Signed Up", exit_when="never")
    panel = text(growth.post("/rules/preview/", data, headers={"HX-Request": "true"}).content)
    assert "the rule enters only people whose deadline passes after you activate it" in panel
    assert "Also enroll people who are idle right now" not in panel


def test_an_active_rule_has_no_activation_text(growth, idle_people):
    rule = make_rule("idle", {**_definition(), "reentry": "once"})
    page = text(growth.get(f"/rules/{rule.slug}/").content)
    assert "Who matches now" in page and "On activation." not in page
    assert "Also enroll people who are idle right now" not in page


def _definition() -> dict:
    return {
        "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
        "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0m"}],
        "exit_when": "progressed",
    }


# --- activation with "also enroll people who are idle right now" -------------------------------


def test_the_option_is_off_by_default(growth, idle_people):
    with time_machine.travel(NOW, tick=False):
        page = growth.post("/rules/new/", idle_form(action="refresh")).content.decode()
        response = growth.post("/rules/new/", idle_form(action="activate"))
    assert re.search(
        r'<input type="checkbox" name="backfill" id="id_backfill" form="rule-form">', page
    )
    assert response.status_code == 302
    assert Rule.objects.get(slug="nudge-profile").status == "active"
    assert not Enrollment.objects.exists()


def test_activating_with_the_option_enrolls_them_and_says_how_many(growth, idle_people):
    data = idle_form(action="activate", backfill="on", backfill_hours="48")
    with time_machine.travel(NOW, tick=False):
        preview = text(growth.post("/rules/preview/", data, headers={"HX-Request": "true"}).content)
        assert "2 people are idle now for at most 48 h." in preview
        response = growth.post("/rules/new/", data, follow=True)
    assert "Saved and activated Nudge stalled profile. Also enrolled 2 people idle right now" in (
        text(response.content)
    )
    rule = Rule.objects.get(slug="nudge-profile")
    assert sorted(
        Enrollment.objects.filter(rule=rule).values_list("person__external_id", flat=True)
    ) == ["recent", "stale"]
    assert set(
        DecisionLog.objects.filter(rule=rule, outcome="enrolled").values_list("reason", flat=True)
    ) == {"activation_backfill"}
    assert set(Message.objects.filter(rule=rule, step=1).values_list("due_at", flat=True)) == {
        NOW + timedelta(hours=1)
    }


def test_resuming_a_draft_from_its_editor_offers_it_too(growth, idle_people):
    rule, _ = rule_save(slug="draft-idle", name="Draft idle", definition=_definition())
    with time_machine.travel(NOW, tick=False):
        page = growth.get(f"/rules/{rule.slug}/").content.decode()
        assert '<input type="hidden" name="rule" value="draft-idle">' in page
        assert "1 person is idle now for at most 24 h." in text(page)
        data = idle_form(action="activate", backfill="on", backfill_hours="24", rule="draft-idle")
        data.pop("slug")
        data["follow_ups-TOTAL"] = "1"
        growth.post(f"/rules/{rule.slug}/", data)
    rule.refresh_from_db()
    assert rule.status == "active"
    assert list(Enrollment.objects.values_list("person__external_id", flat=True)) == ["recent"]


def test_bad_hours_are_refused_next_to_the_field(growth, idle_people):
    data = idle_form(action="activate", backfill="on", backfill_hours="500")
    with time_machine.travel(NOW, tick=False):
        html = growth.post("/rules/new/", data).content.decode()
    assert "Ensure this value is less than or equal to 168." in html
    assert not Rule.objects.exists()


def test_the_estimate_reads_reach_let_through_and_progressed_anyway_on_settled_windows(db):
    """Reach per week from the 14 days; progressed anyway only among occurrences whose 7 days
    are over: someone who progressed early in a still-open window is not counted in the rate."""
    from dashboard.rules.caps import caps_estimate

    now = timezone.now()
    run = BacktestRun.objects.create(
        since=now - timedelta(days=14),
        until=now,
        status="done",
        definition={},
        result={
            "entered": 60,
            "people": 56,
            "scheduled": 56,
            "outcomes": {"capped:global": 15},
            "deferred": 0,
            "overlap": {"people": 0, "rules": {}},
            "progressed_anyway": {
                "occurrences": 14,  # 11 settled + 3 who progressed inside an open window
                "settled": 11,
                "window_open": 33,
                "window_days": 7,
            },
        },
    )
    estimate = caps_estimate(run)
    assert (estimate.per_week, estimate.let_through) == (28, 41)
    assert (estimate.progressed_anyway, estimate.anyway_judged) == (11, 27)
    assert estimate.anyway_rate == "40.7%"
    assert estimate.anyway_interval == "24.5%–59.3%"
