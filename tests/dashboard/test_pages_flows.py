"""The flow editor: field errors next to the fields, row actions with and without htmx, saving."""

from __future__ import annotations

import pytest
from django.urls import reverse

from onboarding.models import OnboardingFlow
from onboarding.services.flows import StepInput, flow_save

NEW = reverse("dashboard:flow_new")
EDIT = reverse("dashboard:flow_edit", args=["activation"])


@pytest.fixture
def growth(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def activation(db):
    return flow_save(
        slug="activation",
        name="Activation",
        window_seconds=86400,
        steps=[StepInput("Signed up", "Signed Up"), StepInput("Verified", "Email Verified")],
    ).object


def form_data(*steps: dict, action: str = "save", **fields) -> dict:
    data = {"name": "Trial", "slug": "trial", "window": "7d", "action": action, **fields}
    data["steps-TOTAL_FORMS"] = str(len(steps))
    data["steps-INITIAL_FORMS"] = "0"
    for index, step in enumerate(steps):
        for key, value in step.items():
            data[f"steps-{index}-{key}"] = value
    return data


@pytest.mark.parametrize("url", [NEW, EDIT])
def test_access(client, charlie, activation, url):
    assert client.get(url).status_code == 302
    client.force_login(charlie)
    assert client.get(url).status_code == 403
    assert client.post(url, form_data()).status_code == 403


@pytest.mark.parametrize("url", [NEW, EDIT])
def test_growth_sees_the_editor(growth, activation, url):
    html = growth.get(url).content.decode()
    assert html.startswith("<!doctype html>") and 'id="flow-steps"' in html


def test_edit_shows_the_stored_flow(growth, activation):
    html = growth.get(EDIT).content.decode()
    assert 'value="Email Verified"' in html
    assert 'value="1d"' in html
    assert "disabled" in html.split('name="slug"')[1].split(">")[0]


def test_create_flow(growth, db):
    response = growth.post(
        NEW,
        form_data(
            {"name": "Signed up", "event": "Signed Up"},
            {
                "name": "Profile",
                "event": "Profile Completed",
                "where": "completionPercentage=100\nsource=ads",
                "critical": "on",
            },
            {"name": "", "event": ""},  # a blank row is skipped
        ),
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:funnel", args=["trial"])
    flow = OnboardingFlow.objects.get(slug="trial")
    assert flow.window_seconds == 7 * 86400
    steps = list(flow.steps.order_by("position"))
    assert [(s.name, s.event_name) for s in steps] == [
        ("Signed up", "Signed Up"),
        ("Profile", "Profile Completed"),
    ]
    assert steps[1].where == {"completionPercentage": 100, "source": "ads"}
    assert steps[1].critical and not steps[1].optional


def test_where_as_json(growth, db):
    growth.post(NEW, form_data({"name": "A", "event": "A", "where": '{"plan": "pro", "seats": 3}'}))
    assert OnboardingFlow.objects.get(slug="trial").steps.get().where == {"plan": "pro", "seats": 3}


def test_field_errors_next_to_the_fields(growth, db):
    response = growth.post(
        NEW,
        form_data(
            {"name": "Signed up", "event": "Signed Up"},
            {"name": "Verified", "event": "", "where": "no equals sign"},
            window="7 days",
            slug="Not A Slug",
        ),
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Write a duration such as 90s, 5m, 24h or 7d" in html
    assert "Enter a valid “slug”" in html
    row = html.split('name="steps-1-name"')[1].split('class="row-buttons"')[0]
    assert "This field is required." in row
    assert "Line 1: write key=value" in row
    assert not OnboardingFlow.objects.exists()
    assert 'value="Verified"' in html  # what was typed is kept


def test_zero_window_and_duplicate_slug(growth, activation):
    html = growth.post(
        NEW, form_data({"name": "A", "event": "A"}, slug="activation", window="0s")
    ).content.decode()
    assert "Must be longer than zero." in html
    html = growth.post(
        NEW, form_data({"name": "A", "event": "A"}, slug="activation")
    ).content.decode()
    assert "A flow with this slug already exists." in html


def test_a_flow_needs_a_step(growth, db):
    html = growth.post(NEW, form_data()).content.decode()
    assert "Add at least one step" in html


def test_edit_rebuilds_through_the_service(growth, activation):
    response = growth.post(
        EDIT,
        form_data(
            {"name": "Verified", "event": "Email Verified"},
            {"name": "Signed up", "event": "Signed Up"},
            name="Activation v2",
            slug="ignored",
            window="2d",
        ),
    )
    assert response.status_code == 302
    activation.refresh_from_db()
    assert (activation.name, activation.slug, activation.window_seconds) == (
        "Activation v2",
        "activation",
        2 * 86400,
    )
    assert [s.event_name for s in activation.steps.order_by("position")] == [
        "Email Verified",
        "Signed Up",
    ]


def test_add_row_with_htmx_returns_the_steps_partial(growth, db):
    response = growth.post(
        NEW,
        form_data({"name": "A", "event": "A"}, action="add"),
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="flow-steps",
    )
    html = response.content.decode()
    assert "<html" not in html
    assert html.strip().startswith('<section class="card" id="flow-steps"')
    assert 'name="steps-TOTAL_FORMS" value="2"' in html
    assert 'name="steps-1-name"' in html and 'value="A"' in html
    assert not OnboardingFlow.objects.exists()


def test_row_actions_without_javascript(growth, db):
    steps = ({"name": "A", "event": "A"}, {"name": "B", "event": "B"}, {"name": "C", "event": "C"})
    html = growth.post(NEW, form_data(*steps, action="down:0")).content.decode()
    assert html.startswith("<!doctype html>")
    assert html.index('value="B"') < html.index('value="A"') < html.index('value="C"')
    html = growth.post(NEW, form_data(*steps, action="remove:1")).content.decode()
    assert 'value="B"' not in html and 'name="steps-TOTAL_FORMS" value="2"' in html
    assert "This field is required" not in html  # row actions never validate
