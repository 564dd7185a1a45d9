from celery import shared_task

from onboarding.services.failed_events import failed_events_purge


@shared_task(name="onboarding.tasks.purge_failed_events")
def purge_failed_events() -> int:
    return failed_events_purge()


@shared_task(name="onboarding.tasks.maintain_event_partitions")
def maintain_event_partitions() -> dict:
    """Create the coming months' event partitions; apply ONRAMP_EVENT_RETENTION_MONTHS."""
    from onboarding.services.partitions import maintain_event_partitions as maintain

    result = maintain()
    return {
        "created": result.created,
        "dropped": result.dropped,
        "deleted_events": result.deleted_events,
        "deleted_dedupe": result.deleted_dedupe,
    }
