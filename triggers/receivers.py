"""Per-person rows of ``triggers`` follow a person's merge, GDPR export and erasure
(onboarding.signals)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.dispatch import receiver

from onboarding.models import Person
from onboarding.signals import people_merged, person_erasing, person_exporting
from triggers.models import (
    Assignment,
    AuditLog,
    BacktestRun,
    DecisionLog,
    Enrollment,
    Message,
    ReviewItem,
)
from triggers.services.audit import audit
from triggers.services.merges import person_history_merge


@receiver(people_merged, dispatch_uid="triggers.merge_people")
def merge_people(sender: Any, *, into: int, merged: list[int], **kwargs: Any) -> None:
    """Move enrollments, messages, decisions and assignments to the survivor (DESIGN §4.5)."""
    person_history_merge(into=into, merged=merged)


@receiver(person_exporting, dispatch_uid="triggers.export_person")
def export_person(sender: Any, *, person: Person, **kwargs: Any) -> dict[str, list[dict]]:
    messages = Message.objects.filter(person=person).order_by("created_at", "id")
    return {
        "enrollments": list(
            Enrollment.objects.filter(person=person)
            .order_by("enrolled_at", "id")
            .values("id", "rule__slug", "occurrence_key", "status", "enrolled_at", "context")
        ),
        "messages": list(
            messages.values(
                "id",
                "rule__slug",
                "channel",
                "step",
                "status",
                "reason",
                "subject",
                "body",
                "due_at",
                "created_at",
                "sent_at",
                "opened_at",
                "clicked_at",
                "seen_at",
                "dismissed_at",
            )
        ),
        "review_items": list(
            ReviewItem.objects.filter(message__person=person)
            .order_by("created_at", "id")
            .values("message_id", "reason", "detail", "status", "created_at", "resolved_at")
        ),
        "experiment_assignments": list(
            Assignment.objects.filter(person=person)
            .order_by("id")
            .values("experiment__rule__slug", "variant__name")
        ),
        "decisions": list(
            DecisionLog.objects.filter(person=person)
            .order_by("at", "id")
            .values("at", "rule__slug", "outcome", "reason", "detail")
        ),
        "backtest_entries": [
            {"backtest": run_id, **entry} for run_id, entry in _backtest_entries_of(person)
        ],
        "audit_entries": list(
            _audit_entries_of(person)
            .order_by("at", "id")
            .values("at", "actor_label", "action", "object_type", "object_id", "changes")
        ),
    }


def _audit_entries_of(person: Person):
    """Audit rows about the person's review items (support's notes may name them), and test
    sends rendered with the person's data."""
    items = ReviewItem.objects.filter(message__person=person).values_list("pk", flat=True)
    return AuditLog.objects.filter(
        Q(object_type=ReviewItem._meta.label_lower, object_id__in=[str(pk) for pk in items])
        | Q(action="template.test_send", changes__person=person.pk)
    )


def _scrub_audit_entries(person: Person) -> int:
    """Keep who did what to which object, drop what the entries say about the person."""
    scrubbed = 0
    for entry in _audit_entries_of(person):
        # A test send keeps its destination (a marketer's own address), not the person.
        test_send = entry.action == "template.test_send"
        entry.changes = {"to": entry.changes.get("to")} if test_send else {}
        entry.save(update_fields=["changes"])
        scrubbed += 1
    return scrubbed


def _saved_backtests():
    """Saved backtest reports that list people (a few dozen rows: each is one marketer's run)."""
    return BacktestRun.objects.exclude(result=None).only("id", "result").order_by("id")


def _backtest_entries_of(person: Person) -> list[tuple[int, dict]]:
    """The entries naming ``person`` in saved backtest reports (who would have entered, when)."""
    return [
        (run.pk, entry)
        for run in _saved_backtests()
        for entry in (run.result or {}).get("entries", [])
        if entry.get("person_id") == person.pk
    ]


def _scrub_backtests(person: Person) -> int:
    """Remove ``person`` from the entry lists of saved backtest reports; return entries removed.

    The report's counts (entered, sends per day…) stay as they were: they are aggregates that
    name nobody, and a report is a record of what the rule would have done at the time.
    """
    removed = 0
    for run in _saved_backtests():
        entries = (run.result or {}).get("entries", [])
        kept = [entry for entry in entries if entry.get("person_id") != person.pk]
        if len(kept) != len(entries):
            removed += len(entries) - len(kept)
            run.result = {**run.result, "entries": kept}
            run.save(update_fields=["result"])
    return removed


@receiver(person_erasing, dispatch_uid="triggers.erase_person")
def erase_person(
    sender: Any, *, person: Person, actor: Any = None, **kwargs: Any
) -> dict[str, int]:
    """Delete the person's rows here, children first, and audit the erasure."""
    deleted: dict[str, int] = {}
    scrubbed_audit = _scrub_audit_entries(person)  # before the review items that select them
    if scrubbed_audit:
        deleted["triggers.AuditLog entries scrubbed"] = scrubbed_audit
    for queryset in (
        ReviewItem.objects.filter(message__person=person),
        DecisionLog.objects.filter(person=person),
        Message.objects.filter(person=person),
        Enrollment.objects.filter(person=person),
        Assignment.objects.filter(person=person),
    ):
        _, per_model = queryset.delete()
        for label, count in per_model.items():
            deleted[label] = deleted.get(label, 0) + count
    scrubbed = _scrub_backtests(person)
    if scrubbed:
        deleted["triggers.BacktestRun entries"] = scrubbed
    audit(actor=actor, action="person.erase", obj=person, changes={"deleted": deleted})
    return deleted
