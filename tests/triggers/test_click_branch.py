"""``unless_clicked_within`` (issue 20 part 3): "email; if not clicked within 24 h, in-app".

Through the real tracking API, tick and delivery pass, with the email sent to a loopback SMTP
server and its click link followed with the test client, as a recipient's mail client would."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from urllib.parse import urlsplit

import pytest
import time_machine

from triggers.delivery.pipeline import deliver_due
from triggers.models import DecisionLog, Message
from triggers.rules.spec import parse_rule
from triggers.services.templates import template_save

from .conftest import T0
from .test_delivery import event_rule, identify

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)
H = timedelta(hours=1)

SEQUENCE = [
    {"channel": "email", "template": "setup-link", "delay": "0s"},
    {"channel": "in_app", "template": "nudge", "delay": "1h", "unless_clicked_within": "24h"},
]


@pytest.fixture
def link_template(db):
    template_save(
        slug="setup-link",
        channel="email",
        subject="Finish setting up",
        body="Hi {{ first_name | default: 'there' }}, finish here: https://app.example.com/setup",
    )


def click(client, email, at) -> None:
    """Follow the email's first link as the recipient would, at ``at``."""
    html = email.get_body(preferencelist=("html",)).get_content()
    href = unescape(re.search(r'<a href="([^"]+)"', html).group(1))
    parts = urlsplit(href)
    with time_machine.travel(at, tick=False):
        response = client.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 302
    assert response["Location"] == "https://app.example.com/setup"


def start(api, timeline, smtp):
    identify(api, "u1", email="ada@example.com", first_name="Ada")
    event_rule(follow_ups=SEQUENCE)
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    assert deliver_due(now=T0 + M).sent == 1
    [email] = smtp.messages
    return email


def second() -> Message:
    return Message.objects.get(step=1)


@pytest.mark.usefixtures("link_template")
def test_the_second_follow_up_is_skipped_after_a_click(api, client, timeline, smtp):
    email = start(api, timeline, smtp)
    click(client, email, T0 + 30 * M)

    report = deliver_due(now=T0 + H + M)  # the in-app follow-up is due
    assert report.sent == 0 and report.outcomes["skipped"] == 1
    assert (second().status, second().reason) == ("cancelled", "previous_clicked")
    log = DecisionLog.objects.get(message=second(), outcome="skipped")
    first = Message.objects.get(step=0)
    assert log.reason == "previous_clicked"
    assert log.detail["previous_message"] == first.pk
    assert log.detail["clicked_after"] == 29 * 60  # sent at T0+1m, clicked at T0+30m
    assert log.detail["window"] == "1d"  # canonical spelling of 24h
    assert deliver_due(now=T0 + 3 * timedelta(days=1)).sent == 0


@pytest.mark.usefixtures("link_template")
def test_not_clicked_the_second_follow_up_waits_for_the_window_then_goes(
    api, client, timeline, smtp
):
    start(api, timeline, smtp)

    # Due 1 h after entry, but the click window runs 24 h from the email's send: it waits.
    report = deliver_due(now=T0 + H + M)
    assert report.sent == 0 and report.outcomes["deferred"] == 1
    assert second().status == "deferred"
    assert second().due_at == T0 + M + timedelta(hours=24)
    assert DecisionLog.objects.get(message=second(), outcome="deferred").reason == "click_window"

    assert deliver_due(now=T0 + M + timedelta(hours=24)).sent == 1
    assert second().status == "sent"
    branch = DecisionLog.objects.get(message=second(), outcome="branch")
    assert branch.reason == "previous_not_clicked"
    assert branch.detail["previous_message"] == Message.objects.get(step=0).pk


@pytest.mark.usefixtures("link_template")
def test_a_branch_deferred_by_quiet_hours_is_logged_once(api, client, timeline, smtp):
    """The click window closes at 10:01 UTC, inside the rule's quiet hours (10:00-11:00): the
    branch is decided, the follow-up waits for 11:00, and is decided again then. The log says
    which way the sequence went once, not once per pass that reached the branch."""
    identify(api, "u1", email="ada@example.com", first_name="Ada")
    sequence = [SEQUENCE[0], {**SEQUENCE[1], "unless_clicked_within": "25h"}]
    event_rule(follow_ups=sequence, quiet_hours={"start": "10:00", "end": "11:00"})
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    assert deliver_due(now=T0 + M).sent == 1  # 09:01
    closes = T0 + M + timedelta(hours=25)  # 10:01 the next day: quiet
    assert deliver_due(now=T0 + H + M).outcomes["deferred"] == 1  # waits for the click window
    assert second().due_at == closes
    report = deliver_due(now=closes)
    assert report.sent == 0 and report.outcomes["deferred"] == 1
    assert (second().status, second().reason) == ("deferred", "quiet_hours")

    assert deliver_due(now=closes + H).sent == 1
    assert second().status == "sent"
    branches = DecisionLog.objects.filter(message=second(), outcome="branch")
    assert [b.reason for b in branches] == ["previous_not_clicked"]


@pytest.mark.usefixtures("link_template")
def test_a_click_after_the_window_does_not_skip(api, client, timeline, smtp):
    email = start(api, timeline, smtp)
    click(client, email, T0 + 25 * H)  # the window closed at T0+24h01m
    # The in-app row was never claimed before the click: its check sees the late click.
    assert deliver_due(now=T0 + 26 * H).sent == 1
    assert second().status == "sent"
    assert DecisionLog.objects.filter(message=second(), reason="previous_not_clicked").exists()


def test_a_previous_follow_up_that_never_went_out_does_not_hold_the_next(api, timeline):
    identify(api, "u1", first_name="Ada")  # no email address: the email goes to review
    event_rule(follow_ups=[{**SEQUENCE[0], "template": "reminder"}, SEQUENCE[1]])
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    assert Message.objects.get(step=0).status == "needs_review"
    assert deliver_due(now=T0 + H + M).sent == 1
    assert DecisionLog.objects.get(message=second(), outcome="branch").reason == (
        "previous_not_sent"
    )


def test_the_definition_round_trips():
    definition = {"trigger": {"kind": "event", "event": "x"}, "follow_ups": SEQUENCE}
    spec, problems = parse_rule(definition)
    assert problems == []
    assert spec.follow_ups[1].unless_clicked_within == 24 * 3600
    again = spec.to_definition()
    assert again["follow_ups"][1]["unless_clicked_within"] == "1d"
    assert "unless_clicked_within" not in again["follow_ups"][0]
    assert parse_rule(again)[0] == spec


@pytest.mark.parametrize(
    ("follow_ups", "path", "message"),
    [
        (
            [{**SEQUENCE[0], "unless_clicked_within": "24h"}],
            "follow_ups[0].unless_clicked_within",
            "not on the first follow-up",
        ),
        (
            [SEQUENCE[0], {**SEQUENCE[1], "unless_clicked_within": "0s"}],
            "follow_ups[1].unless_clicked_within",
            "must be longer than 0s",
        ),
        (
            [SEQUENCE[0], {**SEQUENCE[1], "unless_clicked_within": "soon"}],
            "follow_ups[1].unless_clicked_within",
            "must be a duration",
        ),
        (
            [{"channel": "sms", "template": "t", "delay": "0s"}, SEQUENCE[1]],
            "follow_ups[1].unless_clicked_within",
            "the previous follow-up is sms, whose clicks are not tracked",
        ),
        (
            [{"channel": "webhook", "template": "t", "delay": "0s"}, SEQUENCE[1]],
            "follow_ups[1].unless_clicked_within",
            "the previous follow-up is webhook, whose clicks are not tracked",
        ),
    ],
)
def test_validation_names_the_field(follow_ups, path, message):
    spec, problems = parse_rule(
        {"trigger": {"kind": "event", "event": "x"}, "follow_ups": follow_ups}
    )
    assert spec is None
    assert [p.path for p in problems] == [path]
    assert message in problems[0].message


def test_the_configuration_file_carries_the_field(db):
    from onboarding.configfile.document import export_config, import_config

    from .test_configfile_rules import dump, load, problems_of

    data = load()
    data["rules"][0]["follow_ups"][1]["unless_clicked_within"] = "24h"
    import_config(dump(data))
    exported = export_config()
    assert (
        "      - {channel: email, template: profile-reminder, delay: 3d, unless_clicked_within: 1d}\n"
        in exported
    )
    assert {c.status for c in import_config(exported).changes} == {"unchanged"}

    data = load()
    data["rules"][0]["follow_ups"][0]["unless_clicked_within"] = "24h"
    problems = problems_of(dump(data))
    assert any(
        p.startswith("rules[0].follow_ups[0].unless_clicked_within: not on the first follow-up")
        for p in problems
    ), problems


def test_the_backtest_says_it_does_not_model_clicks(db, flow, templates):
    from triggers.simulation.backtest import NO_CLICKS, run_backtest

    definition = {"trigger": {"kind": "event", "event": "Trial Ending"}, "follow_ups": SEQUENCE}
    definition["follow_ups"] = [{**SEQUENCE[0], "template": "reminder"}, SEQUENCE[1]]
    result = run_backtest(definition=definition, since=T0, until=T0 + H, now=T0 + H)
    assert NO_CLICKS in result.approximations
    assert NO_CLICKS in result.as_dict()["approximations"]  # what the editor's panel prints
    plain = {**definition, "follow_ups": definition["follow_ups"][:1]}
    result = run_backtest(definition=plain, since=T0, until=T0 + H, now=T0 + H)
    assert NO_CLICKS not in result.approximations


@pytest.mark.usefixtures("link_template")
def test_a_skip_carries_on_down_the_chain(api, client, timeline, smtp):
    identify(api, "u1", email="ada@example.com", first_name="Ada")
    third = {
        "channel": "email",
        "template": "reminder",
        "delay": "2d",
        "unless_clicked_within": "1d",
    }
    event_rule(follow_ups=[*SEQUENCE, third])
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    [email] = smtp.messages
    click(client, email, T0 + 2 * M)
    deliver_due(now=T0 + H + M)
    assert deliver_due(now=T0 + timedelta(days=3)).sent == 0
    last = Message.objects.get(step=2)
    assert (last.status, last.reason) == ("cancelled", "previous_clicked")
    log = DecisionLog.objects.get(message=last, outcome="skipped")
    assert log.detail["previous_skipped"] == second().pk
    assert len(smtp.messages) == 1


def test_a_click_on_the_previous_follow_ups_fallback_counts(api, timeline):
    from triggers.services.outcomes import message_record_outcome

    identify(api, "u1", first_name="Ada")  # no email address: the email falls back to in-app
    event_rule(
        follow_ups=[{**SEQUENCE[0], "template": "reminder"}, SEQUENCE[1]],
        fallback={"channel": "in_app", "template": "nudge"},
    )
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    assert deliver_due(now=T0 + M).sent == 1
    fallback = Message.objects.get(step=0, channel="in_app")
    assert fallback.status == "sent" and fallback.fallback_of is not None
    message_record_outcome(message_id=fallback.pk, outcome="clicked", now=T0 + 10 * M)
    assert deliver_due(now=T0 + H + M).sent == 0
    assert Message.objects.get(step=1, fallback_of=None).reason == "previous_clicked"


@pytest.mark.usefixtures("link_template")
def test_one_query_per_batch_and_none_without_the_field(api, timeline, django_assert_num_queries):
    from triggers.delivery.checks import ClickBranch, rule_spec

    for n in range(5):
        identify(api, f"u{n}", email=f"u{n}@example.com")
    event_rule(follow_ups=SEQUENCE)
    event_rule(
        slug="plain", follow_ups=[SEQUENCE[0], {**SEQUENCE[1], "unless_clicked_within": None}]
    )
    for n in range(5):
        timeline.send(T0, f"u{n}", "Trial Ending")
    timeline.tick(T0 + M)
    batch = list(
        Message.objects.filter(step=1).select_related("rule_version", "enrollment", "rule")
    )
    specs = {m.pk: rule_spec(m) for m in batch}
    plain = [m for m in batch if m.rule.slug == "plain"]
    with django_assert_num_queries(0):
        ClickBranch(plain, specs)
    assert len(batch) == 10
    with django_assert_num_queries(1):
        branches = ClickBranch(batch, specs)
    assert len(branches.windows) == 5


@pytest.mark.usefixtures("link_template")
def test_an_experiment_arms_own_sequence_can_react_to_a_click(api, client, timeline, smtp):
    from triggers.services.experiments import experiment_save, experiment_set_status

    for n in range(3):
        identify(api, f"u{n}", email=f"u{n}@example.com")
    event_rule(follow_ups=[{**SEQUENCE[0], "template": "reminder"}])  # the rule's own: no branch
    arms = [
        {"name": "branch", "weight": 999, "follow_ups": SEQUENCE},
        {"name": "plain", "weight": 1},
    ]
    with time_machine.travel(T0 - M, tick=False):
        experiment, _ = experiment_save(
            slug="branch",
            rule_slug="trial",
            variants=arms,
            metric={"flow": "activation", "completed_within": "1d"},
        )
        experiment_set_status(experiment=experiment, status="running")
    for n in range(3):
        timeline.send(T0, f"u{n}", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    # Someone is in the "branch" arm: all three land in "plain" with a chance of 1 in 10⁹.
    email = next(
        e
        for e in smtp.messages
        if Message.objects.filter(
            person__email=e["To"], step=1, enrollment__variant__name="branch"
        ).exists()
    )
    click(client, email, T0 + 2 * M)
    clicked = Message.objects.get(step=1, person__email=email["To"])
    deliver_due(now=T0 + H + M)
    clicked.refresh_from_db()
    assert (clicked.status, clicked.reason) == ("cancelled", "previous_clicked")
    others = Message.objects.filter(step=1).exclude(pk=clicked.pk)
    assert {m.status for m in others} <= {"deferred"}  # not clicked: waiting for the window
