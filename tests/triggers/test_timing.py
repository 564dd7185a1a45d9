from datetime import UTC, datetime, time

import pytest

from triggers.engine.timing import follow_up_due_at
from triggers.rules.spec import FollowUp


def at(hour, minute=0, day=2):
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def test_plain_delay():
    assert follow_up_due_at(at(9), FollowUp("email", "t", 3600), "Europe/Paris") == at(10)


def test_next_day_at_ten_local():
    follow_up = FollowUp("email", "t", 86400, time(10, 0))
    # 23:30 in Paris (UTC+1 in November) → next day 10:00 Paris = 09:00 UTC
    assert follow_up_due_at(at(22, 30), follow_up, "Europe/Paris") == at(9, day=3)
    # 01:00 in New York (UTC-5) on the 2nd → 10:00 on the 3rd New York = 15:00 UTC
    assert follow_up_due_at(at(6), follow_up, "America/New_York") == at(15, day=3)


def test_same_day_time_already_past_moves_to_tomorrow():
    follow_up = FollowUp("in_app", "t", 0, time(10, 0))
    assert follow_up_due_at(at(11), follow_up, "UTC") == at(10, day=3)
    assert follow_up_due_at(at(9), follow_up, "UTC") == at(10)


@pytest.mark.django_db
def test_unknown_timezone_falls_back_to_the_workspace_default(settings):
    settings.ONRAMP_DEFAULT_TIMEZONE = "Asia/Tokyo"
    follow_up = FollowUp("email", "t", 0, time(10, 0))
    assert follow_up_due_at(at(0), follow_up, "Not/AZone") == at(1)  # 10:00 Tokyo = 01:00 UTC


@pytest.mark.django_db
def test_the_settings_page_default_timezone_wins_over_the_environment(settings):
    from triggers.workspace import save_policy

    settings.ONRAMP_DEFAULT_TIMEZONE = "Asia/Tokyo"
    save_policy(
        global_cap_max=2,
        global_cap_period_seconds=7 * 86400,
        quiet_hours="",
        default_timezone="America/New_York",
        actor=None,
    )
    follow_up = FollowUp("email", "t", 0, time(10, 0))
    assert follow_up_due_at(at(0), follow_up, None) == at(15)  # 10:00 New York = 15:00 UTC
