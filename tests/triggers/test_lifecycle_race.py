"""A rule saved while its template is being archived never ends up naming an archived template
(PostgreSQL: the save waits for the archive's row lock, then sees the decision). Without the lock
in ``rule_save`` the save slips in between the usage check and the archive, and this fails."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from tests.conftest import run_at_once
from triggers.models import MessageTemplate, Rule
from triggers.services import lifecycle, usage
from triggers.services.rules import RuleInvalid, rule_save

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEFINITION = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "step": 2, "minutes": 30},
    "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
}


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        # pg_locks, not pg_stat_activity: the latter is a snapshot for the whole transaction.
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        return cursor.fetchone()[0] > 0


@pytest.mark.usefixtures("flow", "templates")
@pytest.mark.parametrize("status", ["draft", "active"])
def test_a_rule_saved_during_an_archive_waits_and_is_refused(monkeypatch, status):
    archiving, saved = threading.Event(), threading.Event()
    checked = usage.usage_of

    def usage_then_let_the_save_try(obj):
        """Inside the archive's transaction, after the usage check: the save runs now."""
        found = checked(obj)
        archiving.set()
        deadline = time.monotonic() + 10
        while not saved.is_set() and not _someone_waits_for_a_lock():
            assert time.monotonic() < deadline, "the save neither finished nor waited"
            time.sleep(0.01)
        return found

    monkeypatch.setattr(lifecycle, "usage_of", usage_then_let_the_save_try)
    outcome: dict[str, object] = {}

    def work(index: int) -> None:
        if index == 0:
            lifecycle.archive(obj=MessageTemplate.objects.get(slug="reminder"))
            return
        archiving.wait(timeout=10)
        try:
            rule_save(slug="late", name="Late", definition=DEFINITION, status=status)
        except RuleInvalid as error:
            outcome["refused"] = str(error)
        finally:
            saved.set()

    assert run_at_once(work, 2) == []
    assert MessageTemplate.objects.get(slug="reminder").archived_at is not None
    assert not Rule.objects.filter(slug="late").exists()
    assert "template 'reminder' is archived" in str(outcome["refused"])
