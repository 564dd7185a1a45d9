"""The sandbox: a test send reaches the marketer only; simulating a person leaves no trace."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps

from onboarding.models import Person
from triggers.models import AuditLog, Message, MessageTemplate
from triggers.simulation import sandbox

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")


def _counts() -> dict[str, int]:
    return {
        model._meta.label: model.objects.count()
        for app in ("onboarding", "triggers")
        for model in apps.get_app_config(app).get_models()
    }


def test_test_send_reaches_the_marketer_and_writes_no_message(smtp, alice, timeline):
    timeline.send(T0, "u1", "Signed Up")
    person = Person.objects.get(external_id="u1")
    person.traits = {"first_name": "Ada"}
    person.save()
    template = MessageTemplate.objects.get(slug="reminder")
    rendered = sandbox.test_send(
        template=template, to_email="alice@example.com", person=person, actor=alice
    )
    assert rendered.body == "Hi Ada"
    [received] = smtp.messages
    assert received["To"] == "alice@example.com"
    assert received["Subject"] == "[Test] Finish setting up"
    assert "Hi Ada" in received.get_body(("plain",)).get_content()
    assert not Message.objects.exists()
    assert AuditLog.objects.filter(action="template.test_send", actor=alice).count() == 1


def test_test_send_with_the_sample_person(smtp, alice):
    template = MessageTemplate.objects.get(slug="nudge")
    sandbox.test_send(template=template, to_email="alice@example.com", actor=alice)
    assert "Need a hand, Sam?" in smtp.messages[0].get_body(("plain",)).get_content()


def test_test_send_needs_a_destination(alice):
    with pytest.raises(sandbox.SandboxError):
        sandbox.test_send(template=MessageTemplate.objects.get(slug="nudge"), actor=alice)


def test_preview_renders_for_any_person(timeline):
    timeline.send(T0, "u1", "Signed Up")
    person = Person.objects.get(external_id="u1")
    assert sandbox.preview(MessageTemplate.objects.get(slug="nudge"), person).body == (
        "Need a hand, there?"
    )


def test_simulate_person_shows_what_would_fire_and_changes_nothing():
    saved = make_rule(
        "idle",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [
                {"channel": "in_app", "template": "nudge", "delay": "0s"},
                {"channel": "email", "template": "reminder", "delay": "10m"},
            ],
        },
    )
    unsaved = {
        "trigger": {"kind": "event", "event": "Trial Ending"},
        "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
    }
    before = _counts()
    simulation = sandbox.simulate_person(
        [saved, unsaved],
        [(0, "Signed Up", {}), (60, "Email Verified", {})],
        traits={"first_name": "Ada", "email": "ada@example.com"},
        start=T0,
        after_seconds=30 * 60,
    )
    assert _counts() == before
    fired = simulation.fired
    assert [(d.rule, d.at) for d in fired] == [("idle", T0 + timedelta(minutes=6))]
    sends = simulation.would_send
    assert [(d.channel, d.at, d.body) for d in sends] == [
        ("in_app", T0 + timedelta(minutes=6), "Need a hand, Ada?"),
        ("email", T0 + timedelta(minutes=16), "Hi Ada"),
    ]
    assert simulation.as_dict()["ticks"] == simulation.ticks
