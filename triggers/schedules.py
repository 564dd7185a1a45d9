"""The periodic tasks, in one place. A migration installs them into django-celery-beat's tables,
where operators can see and change them in the admin; re-running the install never duplicates."""

from __future__ import annotations

from typing import Any

# name -> (task, every N seconds)
SCHEDULES: dict[str, tuple[str, int]] = {
    "onramp: heartbeat": ("triggers.tasks.heartbeat", 30),
    "onramp: evaluate trigger rules": ("triggers.tasks.evaluate_rules", 30),
    "onramp: deliver due follow-ups": ("triggers.tasks.deliver_due", 15),
    "onramp: purge old failed events": ("onboarding.tasks.purge_failed_events", 6 * 3600),
    "onramp: roll up KPIs": ("dashboard.tasks.rollup_kpis", 3600),
    # Event partitions ahead (PostgreSQL) and ONRAMP_EVENT_RETENTION_MONTHS; daily is plenty,
    # since partitions are created months ahead.
    "onramp: maintain event partitions": ("onboarding.tasks.maintain_event_partitions", 86400),
}


def install_schedules(apps: Any) -> None:
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, (task, seconds) in SCHEDULES.items():
        interval, _ = interval_model.objects.get_or_create(every=seconds, period="seconds")
        task_model.objects.get_or_create(name=name, defaults={"task": task, "interval": interval})
