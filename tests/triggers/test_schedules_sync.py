"""What triggers/schedules.py says reaches an existing database at the next ``migrate``
(a ``post_migrate`` receiver), and what becomes of an operator's edit in the admin
(docs/operations.md, "Schedules and groups after a deploy")."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from triggers.schedules import SCHEDULES

DELIVER = "onramp: deliver due follow-ups"


def migrate() -> None:
    """``manage.py migrate`` on the migrated test database: no migration left to apply, only the
    ``post_migrate`` signal, as at a deploy that brings no new migration."""
    call_command("migrate", verbosity=0, interactive=False)


def every(name: str) -> int:
    return PeriodicTask.objects.select_related("interval").get(name=name).interval.every


def test_a_fresh_database_has_every_schedule_enabled(db):
    rows = {t.name: t for t in PeriodicTask.objects.select_related("interval")}
    for name, (task, seconds) in SCHEDULES.items():
        assert rows[name].task == task
        assert (rows[name].interval.every, rows[name].interval.period) == (seconds, "seconds")
        assert rows[name].enabled


def test_an_interval_changed_in_the_code_reaches_an_existing_row(db, monkeypatch):
    row = PeriodicTask.objects.get(name=DELIVER)
    assert every(DELIVER) == 15
    monkeypatch.setitem(SCHEDULES, DELIVER, ("triggers.tasks.deliver_due", 7))
    migrate()
    assert every(DELIVER) == 7
    assert PeriodicTask.objects.get(name=DELIVER).pk == row.pk  # the same row, not a new one
    assert PeriodicTask.objects.filter(name__startswith="onramp: ").count() == len(SCHEDULES)


def test_a_task_renamed_in_the_code_reaches_an_existing_row(db, monkeypatch):
    monkeypatch.setitem(SCHEDULES, DELIVER, ("triggers.tasks.deliver_due_v2", 15))
    migrate()
    assert PeriodicTask.objects.get(name=DELIVER).task == "triggers.tasks.deliver_due_v2"


def test_the_operator_s_disabled_toggle_is_kept_and_the_code_s_interval_task_args_win(db):
    minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    row = PeriodicTask.objects.get(name=DELIVER)
    row.enabled, row.interval, row.args, row.task = False, minute, '["x"]', "edited.in.admin"
    row.description, row.queue, row.priority = "paused during the incident", "slow", 3
    row.save()
    migrate()
    row.refresh_from_db()
    assert not row.enabled
    assert (row.task, every(DELIVER), row.args, row.kwargs) == (
        "triggers.tasks.deliver_due",
        15,
        "[]",
        "{}",
    )
    assert (row.description, row.queue, row.priority) == ("paused during the incident", "slow", 3)


def test_a_crontab_chosen_in_the_admin_is_replaced_by_the_code_s_interval(db):
    crontab = CrontabSchedule.objects.create(minute="*/5")
    PeriodicTask.objects.filter(name=DELIVER).update(interval=None, crontab=crontab)
    migrate()
    row = PeriodicTask.objects.get(name=DELIVER)
    assert row.crontab_id is None and row.interval.every == 15


def test_a_schedule_removed_from_the_code_is_disabled_not_deleted(db, monkeypatch):
    monkeypatch.delitem(SCHEDULES, DELIVER)
    migrate()
    row = PeriodicTask.objects.get(name=DELIVER)
    assert not row.enabled
    assert "no longer in triggers/schedules.py" in row.description  # says why, in the admin
    assert PeriodicTask.objects.filter(name__startswith="onramp: ", enabled=True).count() == len(
        SCHEDULES
    )
    monkeypatch.undo()  # back in the code: enabled again
    migrate()
    row.refresh_from_db()
    assert row.enabled and row.description == ""


def test_a_schedule_the_operator_disabled_stays_disabled_when_it_returns_to_the_code(
    db, monkeypatch
):
    PeriodicTask.objects.filter(name=DELIVER).update(enabled=False)
    monkeypatch.delitem(SCHEDULES, DELIVER)
    migrate()
    monkeypatch.undo()
    migrate()
    assert not PeriodicTask.objects.get(name=DELIVER).enabled


def test_schedules_of_the_operator_s_own_are_left_alone(db, monkeypatch):
    minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.create(name="nightly export", task="x.export", interval=minute)
    migrate()
    own = PeriodicTask.objects.get(name="nightly export")
    assert own.enabled and own.task == "x.export" and own.interval_id == minute.pk


def test_a_change_tells_a_running_beat_and_no_change_leaves_it_be(db, monkeypatch):
    from django_celery_beat.models import PeriodicTasks

    migrate()
    before = PeriodicTasks.last_change()
    migrate()
    assert PeriodicTasks.last_change() == before  # nothing differed: nothing saved
    monkeypatch.setitem(SCHEDULES, DELIVER, ("triggers.tasks.deliver_due", 7))
    migrate()
    assert PeriodicTasks.last_change() > before  # beat's DatabaseScheduler re-reads on this


def test_no_migration_calls_the_schedule_or_group_installers():
    """They would run once, against the code of that day; post_migrate runs on every migrate."""
    root = Path(settings.BASE_DIR)
    for path in sorted(root.glob("*/migrations/0*.py")):
        imports = [line for line in path.read_text().splitlines() if "import " in line]
        assert not [line for line in imports if "schedules" in line or "permissions" in line], path
