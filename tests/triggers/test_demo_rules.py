"""The demo's rules and templates: installed through the importer, valid, idempotent, and firing on
demo journeys (pinned clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.conf import settings

from onboarding.configfile.errors import ProblemsError
from onboarding.demo import iter_journeys
from onboarding.demo_config import install_demo_config
from onboarding.models import Person
from onboarding.services.sources import source_create
from onboarding.tracking.envelope import read_envelope
from onboarding.tracking.ingest import ingest_events
from triggers.demo import DEMO_RULES, install_demo_rules
from triggers.engine.evaluate import evaluate_rules
from triggers.models import AuditLog, Enrollment, MessageTemplate, Rule, RuleVersion
from triggers.rendering import render
from triggers.rules.spec import parse_rule
from triggers.services.rules import DatabaseCatalog

NOW = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
EXPECTED_RULES = {
    "pause-2m-nudge": "inactive_in_flow",
    "pause-3m-chat": "inactive_in_flow",
    "profile-form-abandoned": "step_abandoned",
    "sessions-without-progress": "inactive_sessions",
    "repeated-failures": "repeated_event",
    "reports-milestone": "milestone",
}


@pytest.fixture
def demo_config(db):
    install_demo_config()


def test_demo_rules_install_active_and_valid(demo_config):
    result = install_demo_rules()
    assert result.count("created") == 13
    rules = Rule.objects.select_related("current_version")
    assert {r.slug: r.current_version.definition["trigger"]["kind"] for r in rules} == (
        EXPECTED_RULES
    )
    assert {r.status for r in rules} == {"active"}
    catalog = DatabaseCatalog()
    for rule in rules:
        spec, problems = parse_rule(rule.current_version.definition, catalog)
        assert spec is not None, (rule.slug, problems)
    abandoned = Rule.objects.get(slug="profile-form-abandoned").current_version.definition
    assert abandoned["trigger"] == {
        "kind": "step_abandoned",
        "flow": "activation",
        "did": 2,
        "missing": 3,
        "within": "30m",
    }
    assert [(f["template"], f["delay"]) for f in abandoned["follow_ups"]] == [
        ("profile-reminder", "1h"),
        ("profile-last-reminder", "3d"),
    ]


def test_installing_twice_changes_nothing(demo_config):
    install_demo_rules()
    versions, audits = RuleVersion.objects.count(), AuditLog.objects.count()
    result = install_demo_rules()
    assert {c.status for c in result.changes} == {"unchanged"}
    assert (RuleVersion.objects.count(), AuditLog.objects.count()) == (versions, audits)


def test_the_demo_rules_need_the_demo_flow(db):
    with pytest.raises(ProblemsError) as error:
        install_demo_rules()
    assert "rules[0].trigger.flow: no flow with slug 'activation'" in str(error.value)
    assert not MessageTemplate.objects.exists()


def test_every_template_renders_with_defaults_and_with_demo_traits(demo_config):
    install_demo_rules()
    person, _ = next(iter_journeys(people=1, seed=3, now=NOW))
    traits = {"first_name": person.first_name, "plan": person.plan, "source": person.source}
    assert MessageTemplate.objects.count() == 7
    for template in MessageTemplate.objects.all():
        # Strict rendering: a person without traits still gets a message, never "Hi ,".
        anonymous = render(template.subject, template.body, {})
        assert "there" in anonymous.body, template.slug
        named = render(template.subject, template.body, traits, html=template.channel == "email")
        assert person.first_name in named.body, template.slug
        if template.channel == "email":
            assert person.first_name in named.subject or "Hi" in named.subject, template.slug
    assert "{{ first_name | default: 'there' }}" in DEMO_RULES


def _ingest(source, payload) -> None:
    received_at = datetime.fromisoformat(payload["timestamp"])
    with time_machine.travel(received_at, tick=False):
        envelope = read_envelope(
            {"batch": [payload]},
            event_type=None,
            received_at=received_at,
            max_event_bytes=settings.ONRAMP_MAX_EVENT_BYTES,
            max_future=timedelta(seconds=settings.ONRAMP_MAX_FUTURE_SECONDS),
        )
        assert not envelope.rejections
        ingest_events(
            source=source, events=envelope.events, received_at=received_at, endpoint="import"
        )


def test_a_demo_person_who_stalls_gets_the_pause_rules_on_a_pinned_clock(demo_config):
    demo, payloads = next(
        (person, payloads)
        for person, payloads in iter_journeys(people=300, seed=42, now=NOW)
        if person.stalled_now and 2 <= person.furthest_step < 5
    )
    first = datetime.fromisoformat(payloads[0]["timestamp"])
    last = datetime.fromisoformat(payloads[-1]["timestamp"])
    with time_machine.travel(first - timedelta(minutes=1), tick=False):
        install_demo_rules()  # detection looks forward from activation
    source = source_create(name="demo-app").source
    for payload in payloads:
        _ingest(source, payload)
    person = Person.objects.get(external_id=demo.user_id)
    assert person.last_seen == last

    evaluate_rules(now=last + timedelta(minutes=2) - timedelta(seconds=1))
    assert not Enrollment.objects.filter(rule__slug__startswith="pause-").exists()

    evaluate_rules(now=last + timedelta(minutes=2, seconds=30))
    nudge = Enrollment.objects.get(rule__slug="pause-2m-nudge", person=person)
    assert nudge.enrolled_at == last + timedelta(minutes=2)
    assert nudge.context["furthest_step"] == demo.furthest_step
    message = nudge.messages.get()
    assert (message.channel, message.template.slug, message.due_at) == (
        "in_app",
        "pause-nudge",
        last + timedelta(minutes=2),
    )
    assert not Enrollment.objects.filter(rule__slug="pause-3m-chat").exists()

    evaluate_rules(now=last + timedelta(minutes=3, seconds=30))
    chat = Enrollment.objects.get(rule__slug="pause-3m-chat", person=person)
    assert chat.enrolled_at == last + timedelta(minutes=3)
    # One nudge per idle spell: later ticks do not enroll again.
    evaluate_rules(now=last + timedelta(minutes=10))
    assert Enrollment.objects.filter(rule__slug="pause-2m-nudge", person=person).count() == 1
