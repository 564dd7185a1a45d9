"""The rule pages: access, the list, the editor (errors next to fields, saving, statuses), the live
preview, htmx partials."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from onboarding.models import FlowProgress, Person, Segment
from triggers.models import AuditLog, DecisionLog, Rule, RuleState, RuleVersion
from triggers.services.rules import rule_save, rule_set_status

pytestmark = pytest.mark.django_db

DEFINITION = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "step": 3, "minutes": 5},
    "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0m"}],
    "exit_when": "progressed",
    "reentry": "once",
}


@pytest.fixture
def growth(client: Client, alice) -> Client:
    client.force_login(alice)
    return client


@pytest.fixture
def rule(flow, templates):
    rule, _ = rule_save(slug="profile-stalled", name="Profile stalled", definition=DEFINITION)
    return rule


def form_data(**overrides) -> dict[str, str]:
    """A complete, valid editor post for an inactive_in_flow rule with two follow-ups."""
    data = {
        "name": "Nudge stalled profile",
        "slug": "nudge-profile",
        "priority": "10",
        "kind": "inactive_in_flow",
        "flow": "activation",
        "step": "3",
        "minutes": "5",
        "segment": "",
        "exit_when": "progressed",
        "reentry": "once",
        "reentry_every": "",
        "quiet_start": "",
        "quiet_end": "",
        "cap_max": "",
        "cap_per": "",
        "fallback_channel": "",
        "fallback_template": "",
        "follow_ups-TOTAL": "2",
        "follow_ups-0-channel": "in_app",
        "follow_ups-0-template": "nudge",
        "follow_ups-0-delay": "0m",
        "follow_ups-0-at": "",
        "follow_ups-1-channel": "email",
        "follow_ups-1-template": "reminder",
        "follow_ups-1-delay": "3d",
        "follow_ups-1-at": "10:00",
        "action": "save",
    }
    data.update(overrides)
    return data


def field_block(html: str, name: str) -> str:
    """The markup of the field wrapper ``#field-<name>`` (its input and its errors)."""
    match = re.search(
        rf'<div class="field[^"]*" id="field-{re.escape(name)}">(.*?)</div>', html, re.S
    )
    assert match, f"no field {name}"
    return match.group(1)


# --- access -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/rules/"),
        ("get", "/rules/new/"),
        ("get", "/rules/profile-stalled/"),
        ("get", "/rules/trigger-fields/?kind=event"),
        ("post", "/rules/preview/"),
        ("post", "/rules/profile-stalled/status/"),
    ],
)
def test_access(client: Client, alice, charlie, rule, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")

    client.force_login(charlie)
    assert getattr(client, method)(path).status_code == 403

    client.force_login(alice)
    expected = 302 if path.endswith("/status/") else 200
    assert getattr(client, method)(path).status_code == expected


def test_htmx_request_from_an_expired_session_redirects_the_page(client: Client):
    response = client.get(
        "/rules/trigger-fields/", headers={"HX-Request": "true", "HX-Current-URL": "/rules/new/"}
    )
    assert response["HX-Redirect"].startswith("/login/")


# --- list ---------------------------------------------------------------------------------------


def test_list_shows_status_trigger_in_words_counts_and_last_evaluation(growth, rule, flow):
    rule_set_status(rule=rule, status="active")
    state = RuleState.objects.get(rule=rule)
    state.last_tick_at, state.last_tick_seconds = timezone.now(), 0.045
    state.save()
    person = Person.objects.create(first_seen=timezone.now(), last_seen=timezone.now())
    now = timezone.now()
    for outcome, n in (("enrolled", 3), ("sent", 2), ("suppressed", 1)):
        for _ in range(n):
            DecisionLog.objects.create(at=now, person=person, rule=rule, outcome=outcome)
    DecisionLog.objects.create(at=now - timedelta(days=8), person=person, rule=rule, outcome="sent")

    html = growth.get("/rules/").content.decode()
    row = re.search(r'<tr class="rule-row" data-rule="profile-stalled">(.*?)</tr>', html, re.S)
    assert row
    cells = row.group(1)
    assert "Profile stalled" in cells
    assert "Idle 5 min at step 3 of Activation" in cells
    assert 'class="status status-active"' in cells
    numbers = re.findall(r'<td class="num[^"]*">(\d+)</td>', cells)
    assert numbers == ["0", "3", "2", "1"]  # priority, enrolled, sent, suppressed
    assert "45 ms" in cells
    assert 'href="/rules/new/"' in html


def test_list_runs_a_bounded_number_of_queries(growth, flow, templates):
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert growth.get("/rules/").status_code == 200
        return len(queries)

    rule_save(slug="r0", name="R0", definition=DEFINITION)
    few = count()
    for index in range(1, 8):
        rule, _ = rule_save(slug=f"r{index}", name=f"R{index}", definition=DEFINITION)
        rule_set_status(rule=rule, status="active")
    assert count() == few
    assert few <= 9  # 8, plus one aggregate for every rule's clicks and opens


def test_empty_list_invites_a_first_rule(growth):
    assert "Create the first rule" in growth.get("/rules/").content.decode()


# --- editor: errors next to fields ---------------------------------------------------------------


def test_new_rule_editor_renders(growth, flow, templates):
    html = growth.get("/rules/new/").content.decode()
    assert 'id="trigger-fields"' in html
    assert 'id="follow-ups"' in html
    assert 'id="rule-preview"' in html
    assert "3 · Profile" not in html  # no flow chosen yet, no steps
    assert 'value="activate"' in html and "Save as draft" in html


def test_zero_minutes_error_is_next_to_minutes(growth, flow, templates):
    html = growth.post("/rules/new/", form_data(minutes="0")).content.decode()
    assert "Must be a positive integer." in field_block(html, "minutes")
    assert not Rule.objects.exists()


def test_unknown_step_error_is_next_to_step(growth, flow, templates):
    html = growth.post("/rules/new/", form_data(step="9")).content.decode()
    assert "The flow has 3 steps; there is no step 9." in field_block(html, "step")


def test_bad_delay_in_second_follow_up_is_under_that_rows_delay(growth, flow, templates):
    html = growth.post(
        "/rules/new/", form_data(**{"follow_ups-1-delay": "3 days"})
    ).content.decode()
    assert "Must be a duration such as 90s" in field_block(html, "follow_ups-1-delay")
    assert "Must be a duration" not in field_block(html, "follow_ups-0-delay")


def test_template_of_another_channel_is_flagged_on_the_template(growth, flow, templates):
    data = form_data(**{"follow_ups-1-channel": "sms"})
    html = growth.post("/rules/new/", data).content.decode()
    assert "Template &#x27;reminder&#x27; is for email, not sms." in field_block(
        html, "follow_ups-1-template"
    )


def test_exit_when_progressed_without_a_flow_is_flagged(growth, flow, templates):
    data = form_data(kind="event", event="Trial Ending", exit_when="progressed")
    html = growth.post("/rules/new/", data).content.decode()
    assert "needs a trigger with a flow" in html
    assert re.search(r'id="exit-when-field".*?needs a trigger with a flow', html, re.S)


def test_unknown_segment_and_bad_quiet_hours(growth, flow, templates):
    data = form_data(segment="nope", quiet_start="21:00", quiet_end="21:00")
    html = growth.post("/rules/new/", data).content.decode()
    assert "No segment with slug" in field_block(html, "segment")
    assert "Must differ from start." in html


# --- editor: saving ------------------------------------------------------------------------------


def test_save_as_draft_creates_version_and_audit_row(growth, alice, flow, templates):
    response = growth.post("/rules/new/", form_data())
    assert response.status_code == 302
    assert response["Location"] == "/rules/nudge-profile/"
    rule = Rule.objects.get(slug="nudge-profile")
    assert rule.status == "draft"
    assert rule.priority == 10
    version = RuleVersion.objects.get(rule=rule)
    assert version.created_by == alice
    assert version.definition["follow_ups"][1] == {
        "channel": "email",
        "template": "reminder",
        "delay": "3d",
        "at": "10:00",
    }
    audit = AuditLog.objects.get(object_type="triggers.rule", object_id=str(rule.pk))
    assert (audit.action, audit.actor) == ("create", alice)


def test_save_and_activate_sets_rule_state(growth, alice, flow, templates):
    response = growth.post("/rules/new/", form_data(action="activate"))
    assert response.status_code == 302
    rule = Rule.objects.get(slug="nudge-profile")
    assert rule.status == "active"
    assert RuleState.objects.get(rule=rule).checked_until is not None


def test_editing_makes_a_new_version_and_shows_the_diff(growth, rule):
    data = form_data(slug="ignored", name="Profile stalled", minutes="30")
    response = growth.post("/rules/profile-stalled/", data)
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.current_version.number == 2
    assert rule.slug == "profile-stalled"
    html = growth.get("/rules/profile-stalled/").content.decode()
    assert 'id="version-history"' in html
    assert re.search(r'<span class="diff-remove">−\s+minutes: 5</span>', html)
    assert re.search(r'<span class="diff-add">\+\s+minutes: 30</span>', html)
    assert "alice" in html


def test_editor_shows_the_stored_definition(growth, rule):
    html = growth.get("/rules/profile-stalled/").content.decode()
    assert '<option value="3" selected>3 · Profile</option>' in html
    assert 'value="5"' in field_block(html, "minutes")
    assert "Pause" not in html  # a draft is not paused or resumed
    assert "Save and activate" in html


def test_duplicate_slug_is_refused(growth, rule):
    html = growth.post("/rules/new/", form_data(slug="profile-stalled")).content.decode()
    assert "already exists" in field_block(html, "slug")


def test_pause_and_resume_through_the_service(growth, alice, rule):
    rule_set_status(rule=rule, status="active")
    assert "Pause" in growth.get("/rules/profile-stalled/").content.decode()
    growth.post("/rules/profile-stalled/status/", {"status": "paused"})
    rule.refresh_from_db()
    assert rule.status == "paused"
    assert "Resume" in growth.get("/rules/profile-stalled/").content.decode()
    growth.post("/rules/profile-stalled/status/", {"status": "active"})
    rule.refresh_from_db()
    assert rule.status == "active"
    actions = list(
        AuditLog.objects.filter(actor=alice, object_id=str(rule.pk)).values_list(
            "action", flat=True
        )
    )
    assert actions == ["status:active", "status:paused"]


def test_status_rejects_unknown_values(growth, rule):
    growth.post("/rules/profile-stalled/status/", {"status": "exploded"})
    rule.refresh_from_db()
    assert rule.status == "draft"


# --- editor: rows and partials -------------------------------------------------------------------


def test_row_actions_work_without_javascript(growth, flow, templates):
    html = growth.post("/rules/new/", form_data(action="add")).content.decode()
    assert 'name="follow_ups-TOTAL" value="3"' in html
    assert "<html" in html  # the whole page, for a browser without JavaScript

    html = growth.post("/rules/new/", form_data(action="up:1")).content.decode()
    first = field_block(html, "follow_ups-0-delay")
    assert 'value="3d"' in first
    html = growth.post("/rules/new/", form_data(action="remove:0")).content.decode()
    assert 'name="follow_ups-TOTAL" value="1"' in html
    assert not Rule.objects.exists()


def test_row_actions_with_htmx_return_only_the_follow_ups(growth, flow, templates):
    response = growth.post(
        "/rules/new/",
        form_data(action="add"),
        headers={"HX-Request": "true", "HX-Target": "follow-ups"},
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="follow-ups">')
    assert "<html" not in html
    assert 'name="follow_ups-TOTAL" value="3"' in html


def test_channel_change_filters_the_templates(growth, flow, templates):
    data = form_data(
        action="refresh", **{"follow_ups-0-channel": "email", "follow_ups-0-template": ""}
    )
    html = growth.post(
        "/rules/new/", data, headers={"HX-Request": "true", "HX-Target": "follow-ups"}
    ).content.decode()
    options = field_block(html, "follow_ups-0-template")
    assert 'value="reminder"' in options
    assert 'value="nudge"' not in options


def test_trigger_fields_partial_follows_the_kind(growth, flow, templates):
    response = growth.get(
        "/rules/trigger-fields/",
        {"kind": "repeated_event", "exit_when": "progressed"},
        headers={"HX-Request": "true", "HX-Target": "trigger-fields"},
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="trigger-fields">')
    assert 'name="times"' in html and 'name="within"' in html and 'name="event"' in html
    assert 'name="minutes"' not in html
    assert '<option value="repeated_event" selected>' in html
    # the stop condition follows out of band: an event trigger has no flow to progress in
    assert 'hx-swap-oob="true"' in html
    assert '<option value="never" selected>' in html


def test_trigger_fields_lists_the_flows_steps(growth, flow):
    html = growth.get(
        "/rules/trigger-fields/", {"kind": "step_abandoned", "flow": "activation"}
    ).content.decode()
    assert "2 · Verified" in html and "3 · Profile" in html


def test_change_kind_without_javascript_rerenders_the_form(growth, flow, templates):
    html = growth.post(
        "/rules/new/", form_data(action="refresh", kind="milestone")
    ).content.decode()
    assert 'name="times"' in html and 'name="minutes"' not in html
    assert "<html" in html
    assert not Rule.objects.exists()


# --- live preview ---------------------------------------------------------------------------------


def _in_flow(flow, external_id: str, *, furthest: int, idle_minutes: int) -> Person:
    now = timezone.now()
    person = Person.objects.create(
        external_id=external_id,
        first_seen=now - timedelta(hours=2),
        last_seen=now - timedelta(minutes=idle_minutes),
        last_event_at=now - timedelta(minutes=idle_minutes),
        last_event_received_at=now - timedelta(minutes=idle_minutes),
        traits={"plan": "pro" if external_id.startswith("pro") else "free"},
    )
    FlowProgress.objects.create(
        flow=flow,
        person=person,
        entered_at=now - timedelta(hours=2),
        entry_event_id=1,
        latest_entry_at=now - timedelta(hours=2),
        furthest_step=furthest,
        reached_at=now - timedelta(hours=1),
        window_ends_at=now + timedelta(days=6),
    )
    return person


def test_preview_counts_the_population_the_idle_and_the_segment(growth, flow, templates):
    _in_flow(flow, "pro-1", furthest=2, idle_minutes=10)
    _in_flow(flow, "free-1", furthest=2, idle_minutes=10)
    _in_flow(flow, "pro-2", furthest=2, idle_minutes=1)
    _in_flow(flow, "pro-3", furthest=1, idle_minutes=10)  # at step 2, not 3
    Segment.objects.create(
        slug="pro",
        name="Pro plan",
        definition={"match": "all", "conditions": [{"trait": "plan", "op": "eq", "value": "pro"}]},
    )
    response = growth.post(
        "/rules/preview/",
        form_data(segment="pro"),
        headers={"HX-Request": "true", "HX-Target": "rule-preview"},
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card preview-card" id="rule-preview"')
    assert '<p class="preview-count">3</p>' in html
    assert "People in Activation at step 3 · Profile, not completed" in html
    assert "<dt>1</dt><dd>of them idle for 5 min or more right now and in the segment" in html
    assert "<dt>2</dt><dd>of them in <strong>Pro plan</strong>" in html
    assert "pro-1" in html and "pro-2" in html and "free-1" not in html
    assert (
        "Detected within 30 s of the 5-min mark (counted from when the person&#x27;s last event"
        " happened):"
        " the evaluation runs every 30 s." in html
    )


def test_preview_reads_the_interval_from_the_beat_schedule(growth, flow, templates):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    interval = IntervalSchedule.objects.create(every=1, period="minutes")
    PeriodicTask.objects.update_or_create(
        name="onramp: evaluate trigger rules",
        defaults={"task": "triggers.tasks.evaluate_rules", "interval": interval},
    )
    html = growth.post("/rules/preview/", form_data()).content.decode()
    assert "Detected within 1 min of the 5-min mark" in html


def test_preview_explains_an_incomplete_trigger(growth, flow, templates):
    html = growth.post("/rules/preview/", form_data(flow="", step="")).content.decode()
    assert "Complete the trigger" in html
    assert "required" in html


def test_preview_for_event_triggers(growth, flow, templates):
    html = growth.post(
        "/rules/preview/",
        form_data(kind="repeated_event", event="Task Failed", times="3", within="10m"),
    ).content.decode()
    assert "People with Task Failed 3 times or more in the last 10m" in html
    assert "of the matching event arriving" in html


def test_shadow_mode_is_saved_from_the_editor_and_audited(growth, flow, templates):
    from triggers.models import AuditLog

    growth.post("/rules/new/", form_data(shadow="on"))
    rule = Rule.objects.get(slug="nudge-profile")
    assert rule.shadow is True
    growth.post(f"/rules/{rule.slug}/", form_data())  # the box unticked
    rule.refresh_from_db()
    assert rule.shadow is False
    assert AuditLog.objects.filter(object_id=str(rule.pk), changes__shadow=[True, False]).exists()
