"""The installation's delivery policy: the global frequency cap, default quiet hours and default
timezone (DESIGN §4.5), edited on the Settings page.

The environment gives the first values; the first save on the Settings page stores a row
(:class:`~triggers.models.WorkspaceSettings`) which wins from then on. The engine, delivery and the
backtest read :func:`policy`, which every process caches for :data:`CACHE_SECONDS`: a change
reaches every worker within that time, and the process that saved it at once.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import time as clock
from zoneinfo import available_timezones

from django.conf import settings
from django.core.signals import setting_changed
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from triggers.models import AuditLog, WorkspaceSettings

CACHE_SECONDS = 2.0
MAX_CAP = 100
MAX_CAP_PERIOD_SECONDS = 90 * 86400


@dataclass(frozen=True)
class Policy:
    global_cap_max: int
    global_cap_period_seconds: int
    quiet_hours: str  # "21:00-08:00", or "" for none
    default_timezone: str
    stored: bool  # False: the environment's values (nobody has saved the Settings page yet)

    @property
    def quiet(self) -> tuple[clock, clock] | None:
        return parse_quiet_hours(self.quiet_hours)

    def values(self) -> dict[str, object]:
        values = asdict(self)
        del values["stored"]
        return values


def parse_quiet_hours(text: str) -> tuple[clock, clock] | None:
    """``"21:00-08:00"`` → (21:00, 08:00); empty → None."""
    if not text.strip():
        return None
    start, _, end = text.strip().partition("-")
    return clock.fromisoformat(start.strip()), clock.fromisoformat(end.strip())


class PolicyError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def environment_policy() -> Policy:
    return Policy(
        global_cap_max=settings.ONRAMP_GLOBAL_CAP_MAX,
        global_cap_period_seconds=settings.ONRAMP_GLOBAL_CAP_PERIOD,
        quiet_hours=settings.ONRAMP_QUIET_HOURS,
        default_timezone=settings.ONRAMP_DEFAULT_TIMEZONE,
        stored=False,
    )


_cache: tuple[Policy | None, float] | None = None  # (the stored policy or None, expiry)


def clear_cache() -> None:
    global _cache
    _cache = None


def policy() -> Policy:
    """The policy in force: the stored row, else the environment's values."""
    global _cache
    now = time.monotonic()
    if _cache is None or _cache[1] <= now:
        row = WorkspaceSettings.objects.filter(pk=1).first()
        stored = (
            None
            if row is None
            else Policy(
                global_cap_max=row.global_cap_max,
                global_cap_period_seconds=row.global_cap_period_seconds,
                quiet_hours=row.quiet_hours,
                default_timezone=row.default_timezone,
                stored=True,
            )
        )
        _cache = (stored, now + CACHE_SECONDS)
    # With no row, the settings are read on every call, so overriding them (tests) just works.
    return _cache[0] or environment_policy()


def validate(
    *, global_cap_max: int, global_cap_period_seconds: int, quiet_hours: str, default_timezone: str
) -> None:
    """Raise :class:`PolicyError` naming the field for a value the engine could not apply."""
    if not 1 <= global_cap_max <= MAX_CAP:
        raise PolicyError("global_cap_max", f"Between 1 and {MAX_CAP} follow-ups.")
    if not 60 <= global_cap_period_seconds <= MAX_CAP_PERIOD_SECONDS:
        raise PolicyError("global_cap_period_seconds", "Between 1 minute and 90 days.")
    try:
        quiet = parse_quiet_hours(quiet_hours)
    except ValueError:
        quiet = (None, None)  # unreadable: refused below like an empty span
    if quiet is not None and quiet[0] == quiet[1]:
        raise PolicyError(
            "quiet_hours", "Write a start and an end in 24-hour time, such as 21:00-08:00."
        )
    # Every name in the list loads (it is what zoneinfo found on this machine).
    if default_timezone not in available_timezones():
        raise PolicyError(
            "default_timezone", "Use an IANA time zone name, such as Europe/Berlin or UTC."
        )


def save_policy(
    *,
    global_cap_max: int,
    global_cap_period_seconds: int,
    quiet_hours: str,
    default_timezone: str,
    actor,
) -> Policy:
    """Store the policy (validated) and write who changed what to the audit log."""
    values = {
        "global_cap_max": global_cap_max,
        "global_cap_period_seconds": global_cap_period_seconds,
        "quiet_hours": quiet_hours.strip(),
        "default_timezone": default_timezone.strip(),
    }
    validate(**values)
    quiet = parse_quiet_hours(values["quiet_hours"])
    values["quiet_hours"] = f"{quiet[0]:%H:%M}-{quiet[1]:%H:%M}" if quiet else ""
    before = policy().values()
    with transaction.atomic():
        WorkspaceSettings.objects.update_or_create(pk=1, defaults={**values, "updated_by": actor})
        changes = {
            name: [before[name], value] for name, value in values.items() if before[name] != value
        }
        AuditLog.objects.create(
            actor=actor,
            actor_label=getattr(actor, "get_username", lambda: "")(),
            action="update",
            object_type="workspace_settings",
            object_id="1",
            changes=changes,
        )
    clear_cache()
    return policy()


@receiver(post_save, sender=WorkspaceSettings)
@receiver(post_delete, sender=WorkspaceSettings)
def _saved(**_kwargs: object) -> None:
    clear_cache()


@receiver(setting_changed)
def _setting_changed(**_kwargs: object) -> None:
    clear_cache()
