"""The periodic tasks, in one place, and how they reach django-celery-beat's tables.

:func:`install_schedules` runs after every ``manage.py migrate`` (a ``post_migrate`` receiver,
``TriggersConfig.ready``), so what this file says reaches an existing database at the next deploy.
Migrations do not install schedules. An operator's edit in the admin (*Periodic tasks*):

- the task, the interval and the arguments are the code's: an edit is put back at the next migrate;
- **Enabled** is the operator's: a schedule switched off in the admin stays off;
- a schedule removed from :data:`SCHEDULES` is disabled, not deleted (its history stays visible);
  if it comes back into the code, it is enabled again, unless the operator had disabled it;
- everything else (description, queue, expiry, priority, and schedules whose name does not start
  with ``onramp: ``) is left alone.

``tests/triggers/test_schedules_sync.py`` checks each of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PREFIX = "onramp: "
# What a schedule's description says when it was disabled because the code no longer has it.
REMOVED_FROM_CODE = "Disabled by migrate: no longer in triggers/schedules.py."

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


@dataclass
class ScheduleSync:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.created or self.updated or self.disabled)

    def __str__(self) -> str:
        parts = [f"{what} {', '.join(names)}" for what, names in vars(self).items() if names]
        return "Schedules: " + ("; ".join(parts) if parts else "unchanged") + "."


def install_schedules(apps: Any, using: str = "default") -> ScheduleSync:
    """Make django-celery-beat's rows say what :data:`SCHEDULES` says (see the module docstring).

    ``apps`` is an app registry: the global one, or the project state ``post_migrate`` passes.
    Rows are saved only when something differs, and beat is told of a change through
    django-celery-beat's change marker (historical models do not send its signals).
    """
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    report = ScheduleSync()
    existing = {
        entry.name: entry
        for entry in task_model.objects.using(using).filter(name__startswith=PREFIX)
    }
    for name, (task, seconds) in SCHEDULES.items():
        interval, _ = interval_model.objects.using(using).get_or_create(
            every=seconds, period="seconds"
        )
        wanted = {
            "task": task,
            "interval_id": interval.pk,
            "crontab_id": None,
            "solar_id": None,
            "clocked_id": None,
            "one_off": False,
            "args": "[]",
            "kwargs": "{}",
        }
        entry = existing.get(name)
        if entry is None:
            task_model.objects.using(using).create(name=name, enabled=True, **wanted)
            report.created.append(name)
            continue
        changed = [k for k, v in wanted.items() if getattr(entry, k) != v]
        if entry.description == REMOVED_FROM_CODE:  # back in the code: on again
            entry.enabled, entry.description = True, ""
            changed += ["enabled", "description"]
        if changed:
            for key in changed:
                setattr(entry, key, wanted.get(key, getattr(entry, key)))
            entry.save(using=using, update_fields=[k.removesuffix("_id") for k in changed])
            report.updated.append(name)
    for name, entry in existing.items():
        if name not in SCHEDULES and entry.enabled:
            entry.enabled, entry.description = False, REMOVED_FROM_CODE
            entry.save(using=using, update_fields=["enabled", "description"])
            report.disabled.append(name)
    if report:
        from django.utils import timezone

        tracker = apps.get_model("django_celery_beat", "PeriodicTasks")
        tracker.objects.using(using).update_or_create(
            ident=1, defaults={"last_update": timezone.now()}
        )
    return report


def install_schedules_after_migrate(
    sender: Any, using: str = "default", apps: Any = None, **kwargs: Any
) -> None:
    """The ``post_migrate`` receiver (``TriggersConfig.ready``)."""
    if apps is None:  # flush sends post_migrate without a project state
        from django.apps import apps
    try:
        apps.get_model("django_celery_beat", "PeriodicTask")
    except LookupError:  # django-celery-beat migrated back to zero
        return
    report = install_schedules(apps, using=using)
    if report and kwargs.get("verbosity", 1) >= 1:
        print(f"  {report}")
