from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from onboarding.models import FailedEvent


def failed_events_purge(*, now=None) -> int:
    """Delete rejected payloads older than ``ONRAMP_FAILED_EVENT_RETENTION_DAYS``."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.ONRAMP_FAILED_EVENT_RETENTION_DAYS)
    deleted, _ = FailedEvent.objects.filter(received_at__lt=cutoff).delete()
    return deleted
