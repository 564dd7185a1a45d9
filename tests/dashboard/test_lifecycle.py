"""Archiving and deleting flows, segments and templates (issue 15 item 8): the pages, the rules of
``triggers.services.lifecycle`` (refused while in use, places listed and linked), the audit log,
permissions, lists and pickers."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from onboarding.models import FlowProgress, OnboardingFlow, Person, Segment
from onboarding.services.segments import segment_save
from triggers.models import AuditLog, Enrollment, Message, MessageTemplate, Rule
from triggers.services.experiments import experiment_save
from triggers.services.rules import RuleInvalid, rule_save

pytestmark = pytest.mark.django_db

ACTIVATION_RULE = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "step": 2, "minutes": 30},
    "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
}


@pytest.fixture
def growth(client: Client, alice) -> Client:
    client.force_login(alice)
    return client


@pytest.fixture
def viewer(vera) -> Client:
    client = Client()
    client.force_login(vera)
    return client


def make_rule(slug: str = "stalled", status: str = "draft", **definition) -> Rule:
    rule, _ = rule_save(
        slug=slug, name=slug.title(), definition={**ACTIVATION_RULE, **definition}, status=status
    )
    return rule


def places(html: str) -> str:
    """The text of the list of places on a page."""
    found = re.search(r'<ul class="usage-list"[^>]*>(.*?)</ul>', html, re.S)
    assert found, "no list of places on the page"
    return re.sub(r"\s+", " ", found.group(1))


def message_for(template: MessageTemplate, rule: Rule) -> Message:
    now = timezone.now()
    person = Person.objects.create(external_id="ada", first_seen=now, last_seen=now)
    enrollment = Enrollment.objects.create(
        rule=rule,
        rule_version=rule.current_version,
        person=person,
        occurrence_key="o",
        enrolled_at=now,
    )
    return Message.objects.create(
        idempotency_key="k",
        enrollment=enrollment,
        rule=rule,
        rule_version=rule.current_version,
        person=person,
        step=0,
        channel=template.channel,
        template=template,
        due_at=now,
        status="sent",
    )


def audited(action: str, obj) -> AuditLog:
    return AuditLog.objects.get(
        action=action, object_type=obj._meta.label_lower, object_id=str(obj.pk)
    )


# --- flows ---------------------------------------------------------------------------------------


def test_archive_hides_a_flow_from_the_list_and_unarchive_restores_it(growth, alice, flow):
    response = growth.post(reverse("dashboard:flow_archive", args=["activation"]))
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:flow_edit", args=["activation"])
    flow.refresh_from_db()
    assert flow.archived_at is not None
    assert audited("archive", flow).actor == alice

    funnel_link = f'href="{reverse("dashboard:funnel", args=["activation"])}">Activation<'
    listing = growth.get(reverse("dashboard:flows")).content.decode()
    assert funnel_link not in listing
    assert "Show archived (1)" in listing
    shown = growth.get(reverse("dashboard:flows") + "?archived=1").content.decode()
    assert funnel_link in shown and 'class="tag tag-muted">archived<' in shown
    page = growth.get(reverse("dashboard:flow_edit", args=["activation"])).content.decode()
    assert "hidden from lists and pickers, and rules cannot choose it" in page
    assert reverse("dashboard:flow_unarchive", args=["activation"]) in page

    response = growth.post(reverse("dashboard:flow_unarchive", args=["activation"]))
    assert response.status_code == 302
    flow.refresh_from_db()
    assert flow.archived_at is None
    assert audited("unarchive", flow).actor == alice
    assert funnel_link in growth.get(reverse("dashboard:flows")).content.decode()


def test_deleting_an_unused_flow_asks_first_then_deletes_and_audits(growth, alice, flow):
    page = growth.get(reverse("dashboard:flow_edit", args=["activation"])).content.decode()
    assert "Nothing uses this flow: it can be archived or deleted." in page
    url = reverse("dashboard:flow_delete", args=["activation"])
    confirm = growth.post(url)
    assert confirm.status_code == 200
    assert "Deleting it cannot be undone" in confirm.content.decode()
    assert OnboardingFlow.objects.filter(slug="activation").exists()

    response = growth.post(url, {"confirm": "yes"})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:flows")
    assert not OnboardingFlow.objects.filter(slug="activation").exists()
    log = AuditLog.objects.get(action="delete", object_type="onboarding.onboardingflow")
    assert log.actor == alice and log.changes == {"slug": ["activation", None]}


def test_a_flow_in_use_is_neither_deleted_nor_archived_and_the_page_says_where(
    growth, flow, templates
):
    make_rule("stalled", status="active")
    segment_save(
        slug="stuck",
        name="Stuck",
        definition={
            "match": "all",
            "conditions": [{"any": [{"flow": "activation", "state": "stalled", "step": 2}]}],
        },
    )
    experiment_save(
        slug="timing",
        rule_slug="stalled",
        variants=[{"name": "a", "weight": 50}, {"name": "h", "weight": 50, "holdout": True}],
        metric={"flow": "activation", "completed_within": "1d"},
    )

    for action in ("delete", "archive"):
        response = growth.post(
            reverse(f"dashboard:flow_{action}", args=["activation"]), {"confirm": "yes"}
        )
        assert response.status_code == 409
        listed = places(response.content.decode())
        rule_link = f'<a href="{reverse("triggers:rule_edit", args=["stalled"])}">Stalled</a>'
        assert rule_link in listed and "trigger (active)" in listed
        assert f'<a href="{reverse("dashboard:segment_edit", args=["stuck"])}">Stuck</a>' in listed
        experiment_url = reverse("triggers:experiment_results", args=["timing"])
        assert f'<a href="{experiment_url}">timing</a>' in listed
        assert "primary metric (draft)" in listed
    flow.refresh_from_db()
    assert flow.archived_at is None
    assert not AuditLog.objects.filter(object_type="onboarding.onboardingflow").exists()
    page = growth.get(reverse("dashboard:flow_edit", args=["activation"])).content.decode()
    assert (
        "Used by 3 places; while something in use names it, it cannot be archived or deleted."
        in page
    )


def test_history_refuses_delete_but_offers_archive(growth, flow, templates):
    """An archived rule and people's progress are history: archive yes, delete no."""
    make_rule("old", status="archived")
    now = timezone.now()
    person = Person.objects.create(external_id="ada", first_seen=now, last_seen=now)
    FlowProgress.objects.create(
        flow=flow,
        person=person,
        entered_at=now,
        entry_event_id=1,
        latest_entry_at=now,
        furthest_step=1,
        reached_at=now,
        window_ends_at=now,
    )
    response = growth.post(reverse("dashboard:flow_delete", args=["activation"]))
    assert response.status_code == 409
    html = response.content.decode()
    assert "would break the records below" in html
    listed = places(html)
    assert "trigger (archived)" in listed
    assert "1 person entered this flow" in listed
    archive_url = reverse("dashboard:flow_archive", args=["activation"])
    assert f'action="{archive_url}"' in html and "Archive instead" in html

    assert growth.post(archive_url).status_code == 302
    flow.refresh_from_db()
    assert flow.archived_at is not None
    assert FlowProgress.objects.filter(flow=flow).count() == 1


def test_an_archived_flow_is_not_offered_to_rules_segments_or_experiments(growth, flow, templates):
    other = OnboardingFlow.objects.create(slug="billing", name="Billing set-up")
    other.steps.create(position=1, name="Start", event_name="Billing Started")
    make_rule("stalled")
    pages = [reverse("triggers:rule_new"), reverse("triggers:experiment_new", args=["stalled"])]
    flow_row = (
        reverse("dashboard:segment_condition_row"),
        {"row": "0", "conditions-0-kind": "flow"},
    )

    def offered() -> list[bool]:
        found = [growth.get(url).content.decode() for url in pages]
        found.append(growth.post(*flow_row).content.decode())
        return ['value="billing"' in html for html in found]

    assert offered() == [True, True, True]
    assert growth.post(reverse("dashboard:flow_archive", args=["billing"])).status_code == 302
    assert offered() == [False, False, False]

    with pytest.raises(RuleInvalid) as error:
        rule_save(
            slug="new",
            name="New",
            definition={
                **ACTIVATION_RULE,
                "trigger": {**ACTIVATION_RULE["trigger"], "flow": "billing", "step": 1},
            },
        )
    assert "trigger.flow: flow 'billing' is archived: restore it or choose another" in str(
        error.value
    )


# --- segments ------------------------------------------------------------------------------------


@pytest.fixture
def mobile(db) -> Segment:
    return segment_save(
        slug="mobile",
        name="Mobile",
        definition={
            "match": "all",
            "conditions": [{"trait": "device", "op": "eq", "value": "ios"}],
        },
    ).object


def test_segment_archive_unarchive_and_delete(growth, alice, mobile):
    assert growth.post(reverse("dashboard:segment_archive", args=["mobile"])).status_code == 302
    mobile.refresh_from_db()
    assert mobile.archived_at is not None and audited("archive", mobile).actor == alice
    listing = growth.get(reverse("dashboard:segments")).content.decode()
    assert ">Mobile<" not in listing and "Show archived (1)" in listing
    assert ">Mobile<" in growth.get(reverse("dashboard:segments") + "?archived=1").content.decode()

    assert growth.post(reverse("dashboard:segment_unarchive", args=["mobile"])).status_code == 302
    mobile.refresh_from_db()
    assert mobile.archived_at is None and audited("unarchive", mobile).actor == alice

    url = reverse("dashboard:segment_delete", args=["mobile"])
    assert growth.post(url, {"confirm": "yes"})["Location"] == reverse("dashboard:segments")
    assert not Segment.objects.exists()
    assert AuditLog.objects.filter(action="delete", object_type="onboarding.segment").exists()


def test_a_segment_used_by_a_rule_filter_is_refused_with_the_rule_linked(
    growth, mobile, flow, templates
):
    make_rule("stalled", status="paused", segment="mobile")
    for action in ("delete", "archive"):
        response = growth.post(
            reverse(f"dashboard:segment_{action}", args=["mobile"]), {"confirm": "yes"}
        )
        assert response.status_code == 409
        listed = places(response.content.decode())
        assert f'<a href="{reverse("triggers:rule_edit", args=["stalled"])}">Stalled</a>' in listed
        assert "segment filter (paused)" in listed
    assert Segment.objects.get(slug="mobile").archived_at is None


def test_an_archived_segment_is_not_offered_to_rules(growth, mobile, flow, templates):
    url = reverse("triggers:rule_new")
    assert 'value="mobile"' in growth.get(url).content.decode()
    growth.post(reverse("dashboard:segment_archive", args=["mobile"]))
    assert 'value="mobile"' not in growth.get(url).content.decode()
    with pytest.raises(RuleInvalid, match="segment: segment 'mobile' is archived"):
        make_rule("new", segment="mobile")


# --- templates -----------------------------------------------------------------------------------


def test_template_archive_unarchive_and_delete(growth, alice, templates):
    reminder = MessageTemplate.objects.get(slug="reminder")
    assert growth.post(reverse("triggers:template_archive", args=["reminder"])).status_code == 302
    reminder.refresh_from_db()
    assert reminder.archived_at is not None and audited("archive", reminder).actor == alice
    listing = growth.get(reverse("triggers:templates")).content.decode()
    assert ">reminder<" not in listing and "Show archived (1)" in listing
    assert (
        ">reminder<" in growth.get(reverse("triggers:templates") + "?archived=1").content.decode()
    )

    growth.post(reverse("triggers:template_unarchive", args=["reminder"]))
    reminder.refresh_from_db()
    assert reminder.archived_at is None and audited("unarchive", reminder).actor == alice

    url = reverse("triggers:template_delete", args=["reminder"])
    assert growth.post(url, {"confirm": "yes"})["Location"] == reverse("triggers:templates")
    assert not MessageTemplate.objects.filter(slug="reminder").exists()


def test_a_template_in_use_lists_follow_ups_fallbacks_and_arms(growth, flow, templates):
    make_rule("stalled", status="active", fallback={"channel": "email", "template": "reminder"})
    make_rule(
        "nudger",
        follow_ups=[{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        fallback={"channel": "email", "template": "reminder"},
    )
    experiment_save(
        slug="timing",
        rule_slug="nudger",
        variants=[
            {
                "name": "later",
                "weight": 50,
                "follow_ups": [{"channel": "email", "template": "reminder", "delay": "1d"}],
            },
            {"name": "h", "weight": 50, "holdout": True},
        ],
        metric={"flow": "activation", "completed_within": "1d"},
    )
    response = growth.post(reverse("triggers:template_delete", args=["reminder"]))
    assert response.status_code == 409
    listed = places(response.content.decode())
    assert "follow-up 1 (active)" in listed and "channel fallback (active)" in listed
    assert f'<a href="{reverse("triggers:rule_edit", args=["nudger"])}">Nudger</a>' in listed
    assert "channel fallback (draft)" in listed
    assert "arm later (draft)" in listed
    assert MessageTemplate.objects.filter(slug="reminder").exists()


def test_a_template_with_past_messages_cannot_be_deleted_but_can_be_archived(
    growth, flow, templates
):
    rule = make_rule("old")
    reminder = MessageTemplate.objects.get(slug="reminder")
    message_for(reminder, rule)
    Rule.objects.filter(pk=rule.pk).update(status="archived")

    response = growth.post(reverse("triggers:template_delete", args=["reminder"]))
    assert response.status_code == 409
    html = response.content.decode()
    assert "1 message in the delivery ledger" in places(html)
    assert "Archive instead" in html
    archive_url = reverse("triggers:template_archive", args=["reminder"])
    assert growth.post(archive_url).status_code == 302
    reminder.refresh_from_db()
    assert reminder.archived_at is not None
    assert Message.objects.get().template == reminder
    page = growth.get(reverse("triggers:template_edit", args=["reminder"])).content.decode()
    assert (
        "Used by 2 places; these records must stay readable, so it can be archived but not"
        " deleted." in page
    )


def test_an_archived_template_is_not_offered_to_rules_or_test_sends(growth, flow, templates):
    pages = [reverse("triggers:rule_new"), reverse("triggers:sandbox")]
    for url in pages:
        html = growth.get(url).content.decode()
        assert 'value="reminder"' in html or ">reminder<" in html, url
    growth.post(reverse("triggers:template_archive", args=["reminder"]))
    for url in pages:
        html = growth.get(url).content.decode()
        assert 'value="reminder"' not in html and ">reminder<" not in html, url
    with pytest.raises(RuleInvalid, match="template 'reminder' is archived"):
        make_rule("new")


def test_an_archived_rule_may_keep_naming_an_archived_template(flow, templates):
    rule = make_rule("old", status="archived")
    MessageTemplate.objects.filter(slug="reminder").update(archived_at=timezone.now())
    again, changed = rule_save(
        slug="old", name="Renamed", definition=rule.current_version.definition
    )
    assert changed and again.name == "Renamed"


# --- permissions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url_name, slug",
    [
        ("dashboard:flow_archive", "activation"),
        ("dashboard:flow_unarchive", "activation"),
        ("dashboard:flow_delete", "activation"),
        ("dashboard:segment_archive", "mobile"),
        ("dashboard:segment_unarchive", "mobile"),
        ("dashboard:segment_delete", "mobile"),
        ("triggers:template_archive", "reminder"),
        ("triggers:template_unarchive", "reminder"),
        ("triggers:template_delete", "reminder"),
    ],
)
def test_a_viewer_gets_403_and_nothing_changes(viewer, flow, mobile, templates, url_name, slug):
    assert viewer.post(reverse(url_name, args=[slug]), {"confirm": "yes"}).status_code == 403
    assert OnboardingFlow.objects.get().archived_at is None
    assert Segment.objects.get().archived_at is None
    assert MessageTemplate.objects.filter(archived_at=None).count() == 2
    assert not AuditLog.objects.filter(action__in=["archive", "unarchive", "delete"]).exists()


def test_a_viewer_sees_where_it_is_used_but_no_buttons(viewer, growth, flow, mobile, templates):
    pages = [
        reverse("dashboard:flow_edit", args=["activation"]),
        reverse("dashboard:segment_edit", args=["mobile"]),
        reverse("triggers:template_edit", args=["reminder"]),
    ]
    for url in pages:
        mine = viewer.get(url).content.decode()
        assert 'id="lifecycle"' in mine
        assert ">Archive</button>" not in mine and ">Delete…</button>" not in mine
        theirs = growth.get(url).content.decode()
        assert ">Archive</button>" in theirs and ">Delete…</button>" in theirs


# --- what counts as in use, and what as history ----------------------------------------------------


def test_archived_segments_stopped_experiments_and_archived_rules_are_history(flow, templates):
    from triggers.models import Experiment
    from triggers.services.usage import usage_of

    segment_save(
        slug="stuck",
        name="Stuck",
        definition={"match": "all", "conditions": [{"flow": "activation", "state": "entered"}]},
    )
    Segment.objects.filter(slug="stuck").update(archived_at=timezone.now())
    make_rule("old", status="archived", segment="stuck")
    experiment_save(
        slug="timing",
        rule_slug="old",
        variants=[
            {
                "name": "later",
                "weight": 50,
                "follow_ups": [{"channel": "email", "template": "reminder", "delay": "1d"}],
            },
            {"name": "h", "weight": 50, "holdout": True},
        ],
        metric={"flow": "activation", "completed_within": "1d"},
    )
    Experiment.objects.filter(slug="timing").update(status="stopped")

    for obj in (flow, Segment.objects.get(), MessageTemplate.objects.get(slug="reminder")):
        usage = usage_of(obj)
        assert usage.places and not usage.live, obj
        assert usage.can_archive and not usage.can_delete
    details = {(p.kind, p.detail) for p in usage_of(flow).places}
    assert details == {
        ("rule", "trigger (archived)"),
        ("segment", "condition (archived)"),
        ("experiment", "primary metric (stopped)"),
    }
    assert {p.detail for p in usage_of(Segment.objects.get()).places} == {
        "segment filter (archived)"
    }
    assert ("experiment", "arm later (stopped)") in {
        (p.kind, p.detail) for p in usage_of(MessageTemplate.objects.get(slug="reminder")).places
    }


def test_only_the_current_version_of_a_rule_counts(growth, flow, templates):
    rule = make_rule("stalled", status="active")
    rule_save(
        slug="stalled",
        name="Stalled",
        definition={
            **ACTIVATION_RULE,
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    assert rule.versions.count() == 2
    url = reverse("triggers:template_delete", args=["reminder"])
    assert growth.post(url, {"confirm": "yes"}).status_code == 302
    assert growth.post(reverse("triggers:template_delete", args=["nudge"])).status_code == 409


def test_activating_a_rule_that_names_an_archived_template_is_refused(flow, templates):
    from django.core.exceptions import ValidationError

    from triggers.services.rules import rule_set_status

    rule = make_rule("old", status="archived")
    MessageTemplate.objects.filter(slug="reminder").update(archived_at=timezone.now())
    with pytest.raises(ValidationError, match="template 'reminder' is archived"):
        rule_set_status(rule=rule, status="active")
    rule.refresh_from_db()
    assert rule.status == "archived"


def test_filters_offer_archived_flows_and_segments_only_when_a_saved_url_names_them(
    growth, flow, mobile
):
    Segment.objects.filter(slug="mobile").update(archived_at=timezone.now())
    OnboardingFlow.objects.filter(slug="activation").update(archived_at=timezone.now())
    funnel = reverse("dashboard:funnel", args=["activation"])
    people = reverse("dashboard:people")
    assert 'value="mobile"' not in growth.get(funnel).content.decode()
    html = growth.get(people).content.decode()
    assert 'value="mobile"' not in html and 'value="activation"' not in html

    saved = growth.get(funnel + "?segment=mobile")
    assert saved.status_code == 200
    assert 'value="mobile" selected' in saved.content.decode()
    saved = growth.get(people + "?flow=activation&state=entered&segment=mobile").content.decode()
    assert 'value="activation" selected' in saved and 'value="mobile" selected' in saved


def test_counts_of_history_stop_at_the_cap(flow, monkeypatch):
    from triggers.services import usage

    monkeypatch.setattr(usage, "COUNT_CAP", 2)
    now = timezone.now()
    for index in range(3):
        person = Person.objects.create(external_id=f"p{index}", first_seen=now, last_seen=now)
        FlowProgress.objects.create(
            flow=flow,
            person=person,
            entered_at=now,
            entry_event_id=index,
            latest_entry_at=now,
            furthest_step=1,
            reached_at=now,
            window_ends_at=now,
        )
    (place,) = usage.usage_of(flow).places
    assert place.name == "2+ people entered this flow"
    FlowProgress.objects.filter(person__external_id__in=["p0", "p1"]).delete()
    (place,) = usage.usage_of(flow).places
    assert place.name == "1 person entered this flow"
