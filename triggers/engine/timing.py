"""Local time for people: due times of follow-ups ("next day 10:00") and, later, quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings

from triggers.rules.spec import FollowUp


def person_zone(timezone_name: str | None) -> ZoneInfo:
    """The person's timezone, else the workspace default (``ONRAMP_DEFAULT_TIMEZONE``)."""
    for name in (timezone_name, settings.ONRAMP_DEFAULT_TIMEZONE, "UTC"):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def follow_up_due_at(base: datetime, follow_up: FollowUp, timezone_name: str | None) -> datetime:
    """``base + delay``; with ``at``, that day's ``at`` in the person's local time.

    ``{delay: 1d, at: "10:00"}`` is "next day at 10:00 local". A local time that would fall
    before ``base`` (``{delay: 0s, at: "10:00"}`` at 11:00) moves to the following day.
    """
    moment = base + timedelta(seconds=follow_up.delay)
    if follow_up.at is None:
        return moment
    zone = person_zone(timezone_name)
    local = moment.astimezone(zone)
    target = datetime.combine(local.date(), follow_up.at, tzinfo=zone)
    if target < base:
        target = datetime.combine(local.date() + timedelta(days=1), follow_up.at, tzinfo=zone)
    return target.astimezone(UTC)
