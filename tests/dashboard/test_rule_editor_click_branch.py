"""The rule editor's follow-up rows carry ``unless_clicked_within`` (issue 20 part 3): saved into
the definition, shown again from it, and each problem under that row's field."""

from __future__ import annotations

import pytest

from triggers.models import Rule, RuleVersion

from .test_views_rules import field_block, form_data

pytestmark = pytest.mark.django_db


@pytest.fixture
def growth(client, alice):
    client.force_login(alice)
    return client


BRANCH = {
    "follow_ups-0-channel": "email",
    "follow_ups-0-template": "reminder",
    "follow_ups-1-channel": "in_app",
    "follow_ups-1-template": "nudge",
    "follow_ups-1-delay": "1h",
    "follow_ups-1-at": "",
    "follow_ups-1-unless_clicked_within": "24h",
}


def test_saved_and_shown_again(growth, flow, templates):
    response = growth.post("/rules/new/", form_data(**BRANCH))
    assert response.status_code == 302
    version = RuleVersion.objects.get(rule=Rule.objects.get(slug="nudge-profile"))
    assert version.definition["follow_ups"][1] == {
        "channel": "in_app",
        "template": "nudge",
        "delay": "1h",
        "unless_clicked_within": "1d",  # stored in canonical form
    }
    html = growth.get(response["Location"]).content.decode()
    assert 'value="1d"' in field_block(html, "follow_ups-1-unless_clicked_within")
    # The first row has nothing to react to: no such field there.
    assert 'id="field-follow_ups-0-unless_clicked_within"' not in html
    assert "Skip if the previous one was clicked within" in html


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"follow_ups-1-unless_clicked_within": "0h"}, "follow_ups-1-unless_clicked_within", "Must be longer than 0s."),
        ({"follow_ups-1-unless_clicked_within": "a day"}, "follow_ups-1-unless_clicked_within", "Must be a duration such as 90s"),
        ({"follow_ups-0-unless_clicked_within": "1h"}, "follow_ups-0-unless_clicked_within", "Not on the first follow-up"),
        (
            {"follow_ups-0-channel": "sms", "follow_ups-0-template": ""},
            "follow_ups-1-unless_clicked_within",
            "The previous follow-up is sms, whose clicks are not tracked; only email and in-app clicks are.",
        ),
    ],
)  # fmt: skip
def test_each_problem_is_under_the_rows_field(growth, flow, templates, overrides, field, message):
    response = growth.post("/rules/new/", form_data(**{**BRANCH, **overrides}))
    assert response.status_code == 200
    assert message in field_block(response.content.decode(), field)
    assert not Rule.objects.exists()
