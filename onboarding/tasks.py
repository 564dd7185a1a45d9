from celery import shared_task

from onboarding.services.failed_events import failed_events_purge


@shared_task(name="onboarding.tasks.purge_failed_events")
def purge_failed_events() -> int:
    return failed_events_purge()
