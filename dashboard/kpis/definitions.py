"""What the KPIs mean, in one place: windows, thresholds and the predicates the roll-up uses.

Each setting can be overridden in Django settings (``ONRAMP_KPI_…``); the defaults are the ones
docs/guide-kpis.md describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q

# Outcomes of the decision log the roll-up counts, by column.
SKIPPED = "skipped"
SUPPRESSED = "suppressed"
DEFERRED = "deferred"
CANCELLED_OUTCOMES = ("cancelled", "exited")
FAILED = "fallback"  # the channel failed and the fallback channel was tried
REVIEW = "review"
UNKNOWN = "unknown"
CAP_REASONS = ("cap:global", "cap:rule")

# A response: a click on any channel, or "seen" for an in-app message (in-app messages have no
# click for many people: being seen is how they respond). Opens are not counted (image proxies).
RESPONDED = Q(clicked_at__isnull=False) | Q(channel="in_app", seen_at__isnull=False)


def _setting(name: str, default):
    return getattr(settings, name, default)


@dataclass(frozen=True)
class Windows:
    reengaged_within: timedelta
    attributed_within: timedelta
    stalled_after: timedelta


def windows() -> Windows:
    return Windows(
        reengaged_within=timedelta(hours=_setting("ONRAMP_KPI_REENGAGED_HOURS", 24)),
        attributed_within=timedelta(days=_setting("ONRAMP_KPI_ATTRIBUTION_DAYS", 7)),
        stalled_after=timedelta(minutes=_setting("ONRAMP_KPI_STALLED_MINUTES", 60)),
    )


# The beat task recomputes at most this many days back (late data, windows still closing).
MAX_LOOKBACK_DAYS = 90
