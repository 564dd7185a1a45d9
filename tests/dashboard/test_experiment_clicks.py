"""Clicks as a secondary metric of an experiment (issue 20 part 3): per arm, clicked over email
and in-app messages sent, with its Wilson interval from triggers.stats; the holdout, which gets
nothing, shows n/a."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group

from dashboard.templatetags.experiment_format import pct_interval
from tests.triggers import conftest as trigger_fixtures
from tests.triggers.conftest import T0, make_rule
from tests.triggers.test_delivery import identify
from triggers import stats
from triggers.delivery.pipeline import deliver_due
from triggers.experiments.results import experiment_results
from triggers.models import Message
from triggers.services.experiments import experiment_save, experiment_set_status
from triggers.services.outcomes import message_record_outcome

flow, templates, timeline = (
    trigger_fixtures.flow,
    trigger_fixtures.templates,
    trigger_fixtures.timeline,
)
pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)
LATER = T0 + timedelta(days=2)


@pytest.fixture
def clicked(api, timeline):
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
            "exit_when": "never",
        },
    )
    with time_machine.travel(T0 - M, tick=False):
        experiment, _ = experiment_save(
            slug="email-vs-nothing",
            rule_slug="trial",
            variants=[
                {"name": "email", "weight": 50},
                {"name": "holdout", "weight": 50, "holdout": True},
            ],
            metric={"flow": "activation", "completed_within": "1d"},
        )
        experiment_set_status(experiment=experiment, status="running")
    for n in range(30):
        identify(api, f"u{n}", email=f"u{n}@example.com")
        timeline.send(T0, f"u{n}", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    sent = list(Message.objects.filter(status="sent").order_by("pk"))
    assert sent, "the email arm got someone"
    for message in sent[:4]:
        message_record_outcome(message_id=message.pk, outcome="clicked", now=T0 + 5 * M)
    return experiment, len(sent)


def test_click_rate_per_arm_with_its_interval(clicked):
    experiment, sent = clicked
    email, holdout = experiment_results(experiment, now=LATER).arms
    assert (email.clicks.count, email.clicks.of) == (4, sent)
    assert email.clicks.interval == stats.wilson_interval(4, sent)
    assert (holdout.clicks.count, holdout.clicks.of) == (0, 0)
    assert holdout.clicks.interval is None


def test_the_results_page_shows_it_and_n_a_for_the_holdout(client, alice, clicked):
    experiment, sent = clicked
    alice.groups.add(Group.objects.get(name="experiment owner"))
    client.force_login(alice)
    with time_machine.travel(LATER, tick=False):
        page = client.get(f"/rules/experiments/{experiment.slug}/").content.decode()
    assert "Click rate" in page
    interval = pct_interval(stats.wilson_interval(4, sent))
    assert f"4 of {sent} · {interval}" in page
    assert '<td class="num arm-clicks"><span class="muted">n/a: sends nothing</span></td>' in page
