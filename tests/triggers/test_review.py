"""Support staff work the manual-review queue in the admin; every action is audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from triggers.delivery.pipeline import deliver_due
from triggers.models import AuditLog, Message, ReviewItem
from triggers.services.templates import template_save

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)


@pytest.fixture
def review_item(timeline) -> ReviewItem:
    template_save(slug="strict", channel="in_app", subject="", body="Hello {{ company }}")
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "in_app", "template": "strict", "delay": "0s"}],
        },
    )
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    return ReviewItem.objects.get()


@pytest.fixture
def support(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def test_support_sees_the_queue_and_the_item(support, review_item):
    response = support.get(reverse("admin:triggers_reviewitem_changelist"))
    assert response.status_code == 200
    assert b"render" in response.content
    page = support.get(reverse("admin:triggers_reviewitem_change", args=[review_item.pk]))
    assert b"Edit and send" in page.content and b"company" in page.content


def test_edit_and_send_delivers_once_and_is_audited(support, bob, review_item):
    url = reverse("admin:triggers_reviewitem_edit_and_send", args=[review_item.pk])
    response = support.post(url, {"channel": "in_app", "subject": "", "body": "Hello from support"})
    assert response.status_code == 302
    support.post(
        url, {"channel": "in_app", "subject": "", "body": "Hello again"}
    )  # already resolved
    review_item.refresh_from_db()
    assert review_item.status == "resent" and review_item.resolved_by == bob
    manual = Message.objects.get(manual=True)
    assert (manual.fallback_of_id, manual.body) == (review_item.message_id, "Hello from support")
    deliver_due()  # manual messages are due when support sends them
    manual.refresh_from_db()
    assert manual.status == "sent" and manual.body == "Hello from support"
    audit = AuditLog.objects.get(action="review:resent")
    assert audit.actor == bob and audit.object_id == str(review_item.pk)


def test_edit_and_send_refuses_an_empty_message_next_to_the_field(support, review_item):
    url = reverse("admin:triggers_reviewitem_edit_and_send", args=[review_item.pk])
    response = support.post(url, {"channel": "email", "subject": "", "body": "Hi"})
    assert response.status_code == 200
    assert b"An email needs a subject" in response.content
    assert not Message.objects.filter(manual=True).exists()


def test_dismiss_action_cancels_the_message(support, review_item):
    response = support.post(
        reverse("admin:triggers_reviewitem_changelist"),
        {"action": "dismiss_selected", "_selected_action": [review_item.pk]},
    )
    assert response.status_code == 302
    review_item.refresh_from_db()
    assert review_item.status == "dismissed"
    assert Message.objects.get(pk=review_item.message_id).status == "cancelled"
    assert AuditLog.objects.filter(action="review:dismissed").count() == 1


def test_person_page_answers_why_with_decisions(support, review_item):
    person = review_item.message.person
    page = support.get(reverse("admin:onboarding_person_change", args=[person.pk]))
    assert page.status_code == 200
    assert b"Follow-ups and decisions" in page.content
    assert b"review" in page.content and b"enrolled" in page.content


def test_growth_cannot_work_the_review_queue(alice, review_item):
    client = Client()
    client.force_login(alice)
    response = client.get(reverse("admin:triggers_reviewitem_changelist"))
    assert response.status_code in (302, 403)
