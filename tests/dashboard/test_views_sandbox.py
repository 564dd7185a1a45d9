"""The sandbox page: a test send reaches the marketer only; a simulated person changes nothing."""

from __future__ import annotations

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from onboarding.models import Event, Person
from tests.triggers.conftest import make_rule
from triggers.models import AuditLog, Enrollment, Message

pytestmark = pytest.mark.usefixtures("flow", "templates")
URL = reverse("triggers:sandbox")


@pytest.fixture
def client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_test_send_reaches_only_the_marketer(client):
    from triggers.models import MessageTemplate

    template = MessageTemplate.objects.get(slug="reminder")
    response = client.post(
        URL, {"action": "test_send", "template": template.pk, "to_email": "me@example.com"}
    )
    assert response.status_code == 302
    [sent] = mail.outbox
    assert sent.to == ["me@example.com"] and sent.subject.startswith("[Test]")
    assert not Message.objects.exists()
    assert AuditLog.objects.filter(action="template.test_send").count() == 1


def test_simulate_a_person_shows_the_firing_and_leaves_nothing(client):
    rule = make_rule(
        "idle",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    before = (Person.objects.count(), Event.objects.count(), Enrollment.objects.count())
    response = client.post(
        URL,
        {
            "action": "simulate",
            "rules": [rule.pk],
            "traits": "first_name=Ada",
            "script": "0m Signed Up\n1m Email Verified",
            "after": "30m",
        },
    )
    assert response.status_code == 200
    simulation = response.context["simulation"]
    assert [d.rule for d in simulation.fired] == ["idle"]
    assert any("Need a hand, Ada?" in d.body for d in simulation.would_send)
    assert (Person.objects.count(), Event.objects.count(), Enrollment.objects.count()) == before


def test_script_errors_are_shown_next_to_the_field(client):
    response = client.post(
        URL, {"action": "simulate", "rules": [], "script": "soon Signed Up", "after": "1h"}
    )
    assert response.status_code == 200
    assert "is not a duration" in response.content.decode()


def test_charlie_is_refused(charlie):
    client = Client()
    client.force_login(charlie)
    assert client.get(URL).status_code == 403
