"""What the support home shows: the review queue, and what failed in the last 24 hours.

Reads only. A delivery failure is a decision the delivery pass logged at the moment it happened
(``DecisionLog``): ``review`` (sent to the review queue: a template variable missing, no fallback
left), ``unknown`` (the provider may or may not have it) or ``fallback`` (failed on one channel, sent
on another). The log has the moment; the message row has only its current status. A rejected event
is a ``FailedEvent`` received in the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Min

from onboarding.models import FailedEvent
from triggers.models import DecisionLog, ReviewItem, ReviewStatus

WINDOW = timedelta(hours=24)
FAILURE_OUTCOMES = ("review", "unknown", "fallback")
LATEST_LIMIT = 10


@dataclass(frozen=True, slots=True)
class SupportSummary:
    open_reviews: int
    oldest_open_review_at: datetime | None
    failures_24h: int
    failures_by_outcome: dict[str, int]
    latest_failures: list[DecisionLog]
    rejected_events_24h: int
    rejected_by_code: list[tuple[str, int]]
    latest_rejected: list[FailedEvent]


def support_summary(*, now: datetime, limit: int = LATEST_LIMIT) -> SupportSummary:
    """The support home's numbers and latest rows, in six queries."""
    since = now - WINDOW
    queue = ReviewItem.objects.filter(status=ReviewStatus.OPEN).aggregate(
        count=Count("id"), oldest=Min("created_at")
    )
    failures = DecisionLog.objects.filter(at__gt=since, at__lte=now, outcome__in=FAILURE_OUTCOMES)
    by_outcome = dict(
        failures.order_by()
        .values_list("outcome")
        .annotate(n=Count("id"))
        .values_list("outcome", "n")
    )
    rejected = FailedEvent.objects.filter(received_at__gt=since, received_at__lte=now)
    by_code = list(
        rejected.order_by()
        .values_list("code")
        .annotate(n=Count("id"))
        .order_by("-n", "code")
        .values_list("code", "n")
    )
    return SupportSummary(
        open_reviews=queue["count"],
        oldest_open_review_at=queue["oldest"],
        failures_24h=sum(by_outcome.values()),
        failures_by_outcome={o: by_outcome[o] for o in FAILURE_OUTCOMES if o in by_outcome},
        latest_failures=list(
            failures.select_related("person", "rule", "message").order_by("-at", "-pk")[:limit]
        ),
        rejected_events_24h=sum(n for _, n in by_code),
        rejected_by_code=by_code,
        latest_rejected=list(
            rejected.select_related("source").order_by("-received_at", "-pk")[:limit]
        ),
    )
