"""The sandbox: a test send reaches the marketer only; simulating a person leaves no trace."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.apps import apps

from onboarding.models import Person
from triggers.delivery.pipeline import deliver_due
from triggers.models import AuditLog, Message, MessageTemplate
from triggers.services.templates import template_save
from triggers.simulation import sandbox

from .conftest import T0, make_rule
from .test_delivery import event_rule, identify

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)


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


def _without_links(html: str) -> str:
    """The HTML with every link target blanked and the open pixel removed."""
    return re.sub(r"<img [^>]*>", "", re.sub(r'href="[^"]*"', 'href=""', html))


def test_test_send_renders_exactly_like_a_real_send(smtp, alice, api, timeline):
    """Same text, same HTML (paragraphs, inlined styles, links, footer) as the real email to the
    same person; only link targets differ (no tracking in a test) and there is no open pixel."""
    template_save(
        slug="reminder",
        channel="email",
        subject="Finish, {{ first_name }}",
        body="Hi {{ first_name }},\n\nOpen https://app.example.com/setup now.\nSee you",
    )
    identify(api, "u1", email="ada@example.com", first_name="Ada")
    event_rule()
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    assert deliver_due(now=T0 + M).sent == 1
    sandbox.test_send(
        template=MessageTemplate.objects.get(slug="reminder"),
        to_email="alice@example.com",
        person=Person.objects.get(external_id="u1"),
        actor=alice,
    )
    real, test = smtp.messages
    assert test["Subject"] == "[Test] " + real["Subject"]
    real_html = real.get_body(("html",)).get_content()
    test_html = test.get_body(("html",)).get_content()
    assert "<p style=" in test_html and "Unsubscribe</a>" in test_html
    assert 'href="https://app.example.com/setup"' in test_html  # a test link goes straight there
    assert _without_links(test_html) == _without_links(real_html)
    real_text = real.get_body(("plain",)).get_content().replace("\r\n", "\n")
    test_text = test.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert test_text.split("\n--\n")[0] == real_text.split("\n--\n")[0]
