"""The roles on real writes: what each may change, checked on the rows, not only the status code.

Before the roles, every write checked only ``dashboard.view_dashboard``: a user with just that
permission paused a rule and stopped an experiment, and growth shipped experiments.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.core import mail
from django.test import Client
from django.urls import reverse

from triggers.models import AuditLog, BacktestRun, Experiment, MessageTemplate, Rule
from triggers.services.experiments import experiment_save, experiment_set_status
from triggers.services.rules import rule_save, rule_set_status
from triggers.services.templates import template_save

from .conftest import RULE


@pytest.fixture
def rule(flow) -> Rule:
    template_save(slug="reminder", channel="email", subject="Hi", body="Hi {{ first_name }}")
    rule, _ = rule_save(slug="idle", name="Idle", definition=RULE)
    return rule_set_status(rule=rule, status="active")


@pytest.fixture
def experiment(rule) -> Experiment:
    experiment, _ = experiment_save(
        slug="idle-ab",
        rule_slug="idle",
        variants=[{"name": "a", "weight": 50}, {"name": "b", "weight": 50, "holdout": True}],
        metric={"flow": "activation", "completed_within": "1d"},
    )
    return experiment_set_status(experiment=experiment, status="running")


@pytest.fixture
def dashboard_only(db) -> User:
    """Only ``dashboard.view_dashboard``, granted directly: the user of the report."""
    user = User.objects.create_user("dora", password="pw-dora")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    return user


def _as(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("persona", ["dashboard_only", "vera", "owen"])
def test_only_growth_pauses_a_rule(persona, rule, request, alice):
    response = _as(request.getfixturevalue(persona)).post(
        reverse("triggers:rule_status", args=["idle"]), {"status": "paused"}
    )
    assert response.status_code == 403
    assert Rule.objects.get(slug="idle").status == "active"

    allowed = _as(alice).post(reverse("triggers:rule_status", args=["idle"]), {"status": "paused"})
    assert allowed.status_code == 302
    assert Rule.objects.get(slug="idle").status == "paused"


@pytest.mark.parametrize("persona", ["dashboard_only", "vera", "alice"])
def test_only_experiment_owners_stop_and_ship(persona, experiment, request, owen):
    client = _as(request.getfixturevalue(persona))
    stop = client.post(
        reverse("triggers:experiment_status", args=["idle-ab"]), {"status": "stopped"}
    )
    ship = client.post(reverse("triggers:experiment_ship", args=["idle-ab"]), {"variant": "a"})
    assert (stop.status_code, ship.status_code) == (403, 403)
    experiment.refresh_from_db()
    assert experiment.status == "running" and experiment.shipped_variant is None

    owner = _as(owen)
    confirmed = {"variant": "a", "confirm": "1", "typed_name": "a"}
    assert owner.post(reverse("triggers:experiment_ship", args=["idle-ab"]), confirmed)[
        "Location"
    ] == reverse("triggers:experiment_results", args=["idle-ab"])
    experiment.refresh_from_db()
    assert experiment.status == "stopped" and experiment.shipped_variant.name == "a"
    assert AuditLog.objects.get(action="ship").actor == owen


def test_growth_defines_an_experiment_but_cannot_start_it_from_the_editor(rule, alice, owen):
    form = {
        "slug": "idle-test",
        "metric_flow": "activation",
        "completed_within": "1d",
        "arm-0-name": "a",
        "arm-0-weight": "50",
        "arm-1-name": "b",
        "arm-1-weight": "50",
        "arm-1-holdout": "on",
    }
    url = reverse("triggers:experiment_new", args=["idle"])
    assert _as(alice).post(url, {**form, "action": "start"}).status_code == 403
    assert not Experiment.objects.exists()
    page = _as(alice).get(url)
    assert b'value="start"' not in page.content  # no button growth cannot use
    assert (
        b'value="start"' in _as(owen).get(reverse("triggers:experiment_new", args=["idle"])).content
    )


def test_a_viewer_reads_the_editors_but_saves_nothing(rule, vera):
    client = _as(vera)
    page = client.get(reverse("triggers:rule_edit", args=["idle"]))
    assert page.status_code == 200
    assert reverse("triggers:rule_status", args=["idle"]).encode() not in page.content
    posts = [
        (reverse("triggers:rule_edit", args=["idle"]), {"action": "save", "name": "Renamed"}),
        (reverse("triggers:rule_new"), {"action": "save", "slug": "x", "name": "X"}),
        (reverse("triggers:template_new"), {"action": "save", "slug": "t", "channel": "email"}),
        (reverse("dashboard:flow_new"), {"action": "save", "slug": "f", "name": "F"}),
        (reverse("dashboard:segment_new"), {"action": "save", "slug": "s", "name": "S"}),
        (reverse("triggers:rule_backtest", args=["idle"]), {}),
    ]
    assert [client.post(url, data).status_code for url, data in posts] == [403] * len(posts)
    assert Rule.objects.get().name == "Idle" and not BacktestRun.objects.exists()


def test_only_template_editors_send_sandbox_tests(rule, vera, owen, alice):
    template = MessageTemplate.objects.get(slug="reminder")
    data = {"action": "test_send", "template": template.pk, "to_email": "me@example.com"}
    url = reverse("triggers:sandbox")
    for user in (vera, owen):
        assert _as(user).post(url, data).status_code == 403
        assert b"Send test" not in _as(user).get(url).content
    assert not mail.outbox
    assert _as(alice).post(url, data).status_code == 302
    assert len(mail.outbox) == 1


def test_every_admin_action_names_its_permissions():
    """Django checks ``allowed_permissions`` of an action; an action without them runs for any
    staff user who can see the list. ``delete_selected`` is Django's, gated by delete."""
    unguarded = []
    for model, model_admin in admin.site._registry.items():
        for action in model_admin.actions or []:
            function = action if callable(action) else getattr(model_admin, action)
            if not getattr(function, "allowed_permissions", None):
                unguarded.append(f"{model._meta.label}.{getattr(function, '__name__', action)}")
    assert not unguarded, unguarded


def test_the_beats_tasks_are_switched_off_only_with_the_change_permission(db, root):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=1, period="minutes")
    task = PeriodicTask.objects.create(name="probe", task="probe", interval=every, enabled=True)
    viewer = User.objects.create_user("sam", password="pw-sam", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_periodictask"))
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    data = {"action": "disable_tasks", "_selected_action": [task.pk]}

    assert b"disable_tasks" not in _as(viewer).get(url).content
    _as(viewer).post(url, data)
    task.refresh_from_db()
    assert task.enabled

    assert _as(root).post(url, data).status_code == 302
    task.refresh_from_db()
    assert not task.enabled
