"""The message template pages: access, Liquid errors next to fields, saving, the preview."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from onboarding.models import Person
from triggers.models import AuditLog, MessageTemplate

pytestmark = pytest.mark.django_db


@pytest.fixture
def growth(client: Client, alice) -> Client:
    client.force_login(alice)
    return client


@pytest.fixture
def people(db) -> tuple[Person, Person]:
    now = timezone.now()
    ada = Person.objects.create(
        external_id="ada",
        email="ada@example.com",
        traits={"first_name": "Ada", "plan": "pro"},
        first_seen=now - timedelta(days=2),
        last_seen=now - timedelta(hours=3),
    )
    bo = Person.objects.create(
        external_id="bo", traits={}, first_seen=now - timedelta(days=1), last_seen=now
    )
    return ada, bo


def field_block(html: str, name: str) -> str:
    match = re.search(rf'<div class="field[^"]*" id="field-{name}">(.*?)</div>', html, re.S)
    assert match, f"no field {name}"
    return match.group(1)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/rules/templates/"),
        ("get", "/rules/templates/new/"),
        ("get", "/rules/templates/nudge/"),
        ("post", "/rules/templates/preview/"),
    ],
)
def test_access(client: Client, alice, charlie, templates, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    client.force_login(charlie)
    assert getattr(client, method)(path).status_code == 403
    client.force_login(alice)
    assert getattr(client, method)(path).status_code == 200


def test_list_shows_templates_and_the_rules_using_them(growth, flow, templates):
    from triggers.services.rules import rule_save

    rule_save(
        slug="nudge-rule",
        name="Nudge rule",
        definition={
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0m"}],
        },
    )
    html = growth.get("/rules/templates/").content.decode()
    assert 'href="/rules/templates/nudge/"' in html
    assert 'href="/rules/templates/reminder/"' in html
    assert "Nudge rule" in html


def test_liquid_syntax_error_is_next_to_the_body(growth):
    data = {
        "slug": "tip",
        "channel": "in_app",
        "subject": "",
        "body": "Hi {{ first_name ",
        "action": "save",
    }
    html = growth.post("/rules/templates/new/", data).content.decode()
    body = field_block(html, "body")
    assert 'class="field-error"' in body
    assert "field-error" not in field_block(html, "subject")
    assert not MessageTemplate.objects.exists()


def test_unknown_filter_in_subject_is_next_to_the_subject(growth):
    data = {
        "slug": "tip",
        "channel": "email",
        "subject": "{{ first_name | shout }}",
        "body": "Hello",
        "action": "save",
    }
    html = growth.post("/rules/templates/new/", data).content.decode()
    assert "Unknown filter &#x27;shout&#x27;" in field_block(html, "subject")


def test_email_needs_a_subject(growth):
    data = {"slug": "tip", "channel": "email", "subject": "", "body": "Hello", "action": "save"}
    html = growth.post("/rules/templates/new/", data).content.decode()
    assert "An email needs a subject." in field_block(html, "subject")


def test_save_creates_and_audits(growth, alice):
    data = {
        "slug": "tip",
        "channel": "email",
        "subject": "Hi {{ first_name | default: 'there' }}",
        "body": "Finish your profile.",
        "action": "save",
    }
    response = growth.post("/rules/templates/new/", data)
    assert response.status_code == 302
    assert response["Location"] == "/rules/templates/tip/"
    template = MessageTemplate.objects.get(slug="tip")
    assert template.channel == "email"
    assert AuditLog.objects.get(object_type="triggers.messagetemplate").actor == alice

    data["body"] = "Finish your profile today."
    assert growth.post("/rules/templates/tip/", data).status_code == 302
    template.refresh_from_db()
    assert template.body == "Finish your profile today."


def test_preview_defaults_to_the_most_recently_seen_person(growth, people):
    html = growth.get("/rules/templates/new/").content.decode()
    assert "most recently seen person" in html
    assert "<strong>bo</strong>" in html


def test_preview_renders_for_a_chosen_person(growth, people, templates):
    response = growth.post(
        "/rules/templates/preview/",
        {
            "channel": "email",
            "subject": "Hi {{ first_name }}",
            "body": "You are on {{ plan }}.",
            "person": "ada@example.com",
        },
        headers={"HX-Request": "true", "HX-Target": "template-preview"},
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card preview-card" id="template-preview"')
    assert '<div class="rendered-subject">Hi Ada</div>' in html
    assert "You are on pro." in html


def test_preview_shows_the_missing_variable(growth, people):
    html = growth.post(
        "/rules/templates/preview/",
        {"channel": "in_app", "subject": "", "body": "Hi {{ first_name }}", "person": "bo"},
    ).content.decode()
    assert "This person would not get the message." in html
    assert "first_name" in re.search(r'<div class="render-problem".*?</div>', html, re.S).group(0)
    assert "rendered-body" not in html


def test_preview_for_an_unknown_person_says_so(growth, people):
    html = growth.post(
        "/rules/templates/preview/",
        {"channel": "in_app", "body": "Hello", "person": "nobody@example.com"},
    ).content.decode()
    assert "Nobody with external id or email" in html
    assert "Hello" in html


def test_preview_button_works_without_javascript(growth, people):
    html = growth.post(
        "/rules/templates/new/",
        {
            "slug": "tip",
            "channel": "in_app",
            "body": "Hi {{ first_name | default: 'there' }}",
            "person": "bo",
            "action": "preview",
        },
    ).content.decode()
    assert "<html" in html
    assert "Hi there" in html
    assert not MessageTemplate.objects.exists()
