"""The unsubscribe link does what the rule editor promises: pending follow-ups of that enrollment
are cancelled on every channel, consent for the message's channel is withdrawn, and the decision
log says why (``cancelled``, reason ``unsubscribed``)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from onboarding.models import Person
from triggers.delivery.pipeline import deliver_due
from triggers.models import DecisionLog, Enrollment, Message

from .conftest import T0
from .test_delivery import event_rule, identify

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)

SEQUENCE = [
    {"channel": "email", "template": "reminder", "delay": "0s"},
    {"channel": "in_app", "template": "nudge", "delay": "5m"},
    {"channel": "email", "template": "reminder", "delay": "1d"},
]


def unsubscribe_path(email) -> str:
    link = email["List-Unsubscribe"].strip().strip("<>")
    return urlsplit(link).path


def test_one_click_unsubscribe_cancels_pending_follow_ups_on_every_channel(
    api, client, timeline, smtp
):
    identify(api, "u1", email="ada@example.com", first_name="Ada")
    event_rule(follow_ups=SEQUENCE)
    other = event_rule(slug="other", follow_ups=[SEQUENCE[1]])  # another enrollment: untouched
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    assert deliver_due(now=T0 + M).sent == 1  # the first email; the in-app ones are due in 5m
    [email] = smtp.messages

    # RFC 8058 one-click: a POST with List-Unsubscribe=One-Click, as mail providers send it.
    response = client.post(unsubscribe_path(email), {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200

    person = Person.objects.get(external_id="u1")
    assert person.consent.get("email") is False
    assert person.consent.get("in_app") is not False  # consent is withdrawn for email only
    trial = Message.objects.filter(rule__slug="trial").order_by("step")
    assert [(m.channel, m.status) for m in trial] == [
        ("email", "sent"),
        ("in_app", "cancelled"),
        ("email", "cancelled"),
    ]
    assert {m.reason for m in trial[1:]} == {"unsubscribed"}
    cancelled = DecisionLog.objects.filter(outcome="cancelled", reason="unsubscribed")
    assert sorted(cancelled.values_list("message__step", flat=True)) == [1, 2]
    enrollment = Enrollment.objects.get(rule__slug="trial")
    assert (enrollment.status, enrollment.exit_reason) == ("exited", "unsubscribed")

    # Nothing more from that enrollment, whenever delivery runs; the other rule's in-app goes out.
    assert deliver_due(now=T0 + 2 * timedelta(days=1)).sent == 1
    assert Message.objects.get(rule=other).status == "sent"
    assert len(smtp.messages) == 1


def test_the_rule_editor_says_what_unsubscribe_does(client, alice):
    alice.groups.add(Group.objects.get(name="growth"))
    client.force_login(alice)
    html = client.get(reverse("triggers:rule_new")).content.decode()
    assert (
        "Unsubscribing from any of them always cancels the person's pending follow-ups of this"
        " rule on every channel and withdraws consent for that channel." in html
    )
