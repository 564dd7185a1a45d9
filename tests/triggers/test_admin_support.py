"""The admin as support staff read it: a draft to edit, steps counted from 1, messages named by the
person, and the beat's schedule usable under the Content-Security-Policy."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from triggers.delivery.pipeline import deliver_due
from triggers.models import DecisionLog, Message, ReviewItem
from triggers.services.templates import template_save

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)
SCRIPT_TAG = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.IGNORECASE | re.DOTALL)


def _identify(api, user: str, **traits) -> None:
    payload = {"type": "identify", "userId": user, "traits": traits, "timestamp": T0.isoformat()}
    with time_machine.travel(T0, tick=False):
        response = api.post("/v1/identify", json.dumps(payload), content_type="application/json")
    assert response.status_code == 200, response.content


@pytest.fixture
def review_item(api, timeline) -> ReviewItem:
    """An email Ada never got: her template needs a ``company`` she has not told us."""
    template_save(
        slug="welcome-team",
        channel="email",
        subject="Welcome, {{ first_name }}",
        body="Hi {{ first_name }}, invite your team to {{ company }}.",
    )
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "email", "template": "welcome-team", "delay": "0s"}],
        },
    )
    _identify(api, "u1", first_name="Ada", email="ada@example.com")
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    return ReviewItem.objects.get()


@pytest.fixture
def support(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def _field(html: str, name: str) -> str:
    """The value of a form field (textarea or input) in a page."""
    textarea = re.search(rf'<textarea[^>]*name="{name}"[^>]*>(.*?)</textarea>', html, re.DOTALL)
    if textarea:
        return textarea.group(1).strip()
    found = re.search(rf'<input[^>]*name="{name}"[^>]*value="([^"]*)"', html)
    return found.group(1) if found else ""


# --- Edit and send opens with the rendered message ---------------------------------------------


def test_edit_and_send_opens_with_the_message_rendered_for_the_person(support, review_item):
    assert review_item.message.body == ""  # the strict render failed: nothing was stored
    page = support.get(reverse("admin:triggers_reviewitem_edit_and_send", args=[review_item.pk]))
    html = page.content.decode()
    assert _field(html, "subject") == "Welcome, Ada"
    assert _field(html, "body") == "Hi Ada, invite your team to [missing: company]."
    assert 'value="email" selected' in html


def test_a_rendered_message_opens_as_it_was_sent(support, review_item):
    Message.objects.filter(pk=review_item.message_id).update(subject="As sent", body="Sent text")
    page = support.get(reverse("admin:triggers_reviewitem_edit_and_send", args=[review_item.pk]))
    assert _field(page.content.decode(), "body") == "Sent text"


def test_a_missing_mark_left_in_the_text_is_refused_next_to_the_field(support, review_item):
    url = reverse("admin:triggers_reviewitem_edit_and_send", args=[review_item.pk])
    response = support.post(
        url,
        {
            "channel": "email",
            "subject": "Welcome, Ada",
            "body": "Hi Ada, invite your team to [missing: company].",
        },
    )
    assert response.status_code == 200
    errors = re.findall(r'<ul class="errorlist"[^>]*>(.*?)</ul>', response.content.decode(), re.S)
    assert len(errors) == 1 and "[missing:" in errors[0]
    assert not Message.objects.filter(manual=True).exists()
    response = support.post(
        url, {"channel": "email", "subject": "Welcome, Ada", "body": "Hi Ada, invite your team."}
    )
    assert response.status_code == 302
    assert Message.objects.get(manual=True).body == "Hi Ada, invite your team."


# --- Step numbers are 1-based ------------------------------------------------------------------


def test_the_message_page_counts_steps_from_one(support, review_item):
    page = support.get(reverse("admin:triggers_message_change", args=[review_item.message_id]))
    html = page.content.decode()
    step = re.search(r'field-step_number.*?<div class="readonly">(.*?)</div>', html, re.S)
    assert step and step.group(1) == "1"
    assert "0-based" not in html
    # The decisions table: a Step column, and no 0-based "step" in the detail.
    assert "<th>Step</th>" in html
    assert "&quot;step&quot;" not in html


def test_decision_tables_and_the_decision_log_count_steps_from_one(support, review_item):
    person = review_item.message.person
    page = support.get(reverse("admin:onboarding_person_change", args=[person.pk])).content.decode()
    assert "<th>Step</th>" in page and "&quot;step&quot;" not in page
    rows = re.findall(r"<tr><td>[^<]*</td><td>Trial</td><td>([^<]*)</td><td>(\w+)</td>", page)
    assert ("1", "review") in rows

    listing = support.get(reverse("admin:triggers_decisionlog_changelist")).content.decode()
    assert re.search(r'<td class="field-step">1</td><td class="field-outcome">review</td>', listing)
    decision = DecisionLog.objects.get(outcome="review")
    assert decision.detail["step"] == 0  # stored 0-based, shown 1-based
    detail = support.get(reverse("admin:triggers_decisionlog_change", args=[decision.pk]))
    html = detail.content.decode()
    assert re.search(r'field-step\b.*?<div class="readonly">1</div>', html, re.S)
    assert "&quot;step&quot;" not in html


# --- A message is labelled by the person ---------------------------------------------------------


def test_a_message_is_named_by_the_person_not_a_row_number(support, review_item):
    message = review_item.message
    assert str(message) == "Email to u1, step 1 (needs_review)"
    assert str(review_item) == "Email to u1: render"
    assert str(message.enrollment).startswith("u1 in Trial")
    page = support.get(reverse("admin:triggers_reviewitem_change", args=[review_item.pk]))
    assert "Email to u1: render" in page.content.decode()  # the title and breadcrumbs
    decision = DecisionLog.objects.get(outcome="review")
    html = support.get(
        reverse("admin:triggers_decisionlog_change", args=[decision.pk])
    ).content.decode()
    assert "Email to u1, step 1" in html
    assert f"to {message.person_id} (" not in html


def test_an_anonymous_persons_message_is_named_by_email_when_there_is_no_user_id(review_item):
    person = review_item.message.person
    person.external_id = None
    person.save(update_fields=["external_id"])
    message = Message.objects.get(pk=review_item.message_id)
    assert str(message) == "Email to ada@example.com, step 1 (needs_review)"


def test_a_refused_review_action_names_the_person(support, review_item):
    response = support.post(
        reverse("admin:triggers_reviewitem_changelist"),
        {"action": "resend_selected", "_selected_action": [review_item.pk]},
        follow=True,
    )
    html = response.content.decode()
    assert "Email to u1: render: This message was never rendered" in html
    assert f"Item {review_item.pk}:" not in html


# --- The beat's schedule under the CSP --------------------------------------------------------


def _inline_code(html: str) -> list[str]:
    """Script elements with code in them (the CSP's script-src 'self' refuses to run those)."""
    return [
        body.strip()[:80]
        for attributes, body in SCRIPT_TAG.findall(html)
        if body.strip() and "application/json" not in attributes
    ]


def test_the_periodic_task_pages_have_no_inline_script(root):
    client = Client()
    client.force_login(root)
    hourly = CrontabSchedule.objects.create(minute="0", hour="*")
    task = PeriodicTask.objects.create(name="probe", task="probe", crontab=hourly)
    for url in (
        reverse("admin:django_celery_beat_periodictask_changelist"),
        reverse("admin:django_celery_beat_periodictask_add"),
        reverse("admin:django_celery_beat_periodictask_change", args=[task.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert "script-src 'self'" in response["Content-Security-Policy"]
        assert _inline_code(response.content.decode()) == [], url
    page = client.get(reverse("admin:django_celery_beat_periodictask_change", args=[task.pk]))
    html = page.content.decode()
    assert "js/admin-periodic-task.js" in html
    data = re.search(r'<script id="readable-crontabs" type="application/json">(.*?)</script>', html)
    assert data and str(hourly.pk) in json.loads(data.group(1))
