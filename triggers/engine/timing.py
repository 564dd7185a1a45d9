"""Local time for people: due times of follow-ups ("next day 10:00") and, later, quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from triggers.rules.spec import FollowUp
from triggers.workspace import policy


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def person_zone(timezone_name: str | None) -> ZoneInfo:
    """The person's timezone, else the workspace default (the Settings page), else UTC."""
    # The policy is read only when the person's own zone is missing or unknown.
    return _zone(timezone_name) or _zone(policy().default_timezone) or ZoneInfo("UTC")


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


def quiet_until(
    now: datetime, quiet: tuple[time, time] | None, timezone_name: str | None
) -> datetime | None:
    """If ``now`` falls in the person's local quiet hours, when they end (UTC); else None."""
    if quiet is None:
        return None
    start, end = quiet
    zone = person_zone(timezone_name)
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    overnight = start > end
    inside = (clock >= start or clock < end) if overnight else (start <= clock < end)
    if not inside:
        return None
    day = local.date()
    if overnight and clock >= start:
        day += timedelta(days=1)
    return datetime.combine(day, end, tzinfo=zone).astimezone(UTC)
