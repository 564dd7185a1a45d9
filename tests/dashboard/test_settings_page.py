"""The Settings page: the workspace delivery policy, read by every dashboard role, changed by
growth, audited, refused next to the field when the engine could not apply it."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from triggers import workspace
from triggers.models import AuditLog

URL = "/settings/"
VALID = {
    "global_cap_max": "3",
    "global_cap_period": "2d",
    "quiet_hours": " 21:00 - 08:00 ",
    "default_timezone": "Europe/Berlin",
}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_before_any_save_the_page_shows_the_environments_values(alice, settings):
    settings.ONRAMP_GLOBAL_CAP_MAX = 4
    settings.ONRAMP_DEFAULT_TIMEZONE = "Asia/Tokyo"
    html = client_for(alice).get(URL).content.decode()
    assert re.search(r'name="global_cap_max"[^>]*value="4"', html)
    assert '<option value="Asia/Tokyo" selected>' in html
    assert "From the environment until someone saves this page" in html


def test_growth_saves_the_policy_and_it_is_audited(alice, settings):
    settings.ONRAMP_GLOBAL_CAP_MAX = 2
    client = client_for(alice)
    response = client.post(URL, VALID)
    assert response.status_code == 302
    policy = workspace.policy()
    assert policy.values() == {
        "global_cap_max": 3,
        "global_cap_period_seconds": 2 * 86400,
        "quiet_hours": "21:00-08:00",
        "default_timezone": "Europe/Berlin",
    }
    entry = AuditLog.objects.get(object_type="workspace_settings")
    assert entry.actor == alice and entry.changes["global_cap_max"] == [2, 3]
    html = client.get(URL).content.decode()
    assert "Saved on this page; the environment's values no longer apply" in html
    assert 'data-testid="settings-history"' in html and "alice" in html
    assert "Global cap: 2 → 3; Cap period: 7d → 2d" in html
    settings.ONRAMP_GLOBAL_CAP_MAX = 9  # the environment no longer decides
    workspace.clear_cache()
    assert workspace.policy().global_cap_max == 3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("global_cap_max", "0", "greater than or equal to 1"),
        ("global_cap_period", "soon", "Write a duration such as 90s"),
        ("global_cap_period", "30s", "Between 1 minute and 90 days."),
        ("quiet_hours", "after dinner", "such as 21:00-08:00"),
        ("default_timezone", "Mars/Olympus", "Select a valid choice"),
    ],
)
def test_a_bad_value_is_an_error_next_to_its_field_and_saves_nothing(alice, field, value, message):
    response = client_for(alice).post(URL, VALID | {field: value})
    assert response.status_code == 400
    html = response.content.decode()
    # the error sits in the field's own block, after its input
    block = re.search(
        rf'<div class="field has-error"[^>]*>\s*<label[^>]*for="id_{field}".*?</div>', html, re.S
    )
    assert block and message in block.group(0)
    assert not workspace.policy().stored
    assert not AuditLog.objects.filter(object_type="workspace_settings").exists()


def test_a_viewer_reads_but_cannot_change(vera):
    client = client_for(vera)
    html = client.get(URL).content.decode()
    assert '<fieldset class="settings-fieldset" disabled>' in html
    assert "Save settings" not in html
    assert client.post(URL, VALID).status_code == 403
    assert not workspace.policy().stored


def test_support_and_anonymous_visitors_are_kept_out(bob):
    assert client_for(bob).get(URL).status_code == 403
    assert Client().get(URL).status_code == 302
