"""Per-person rows of ``triggers`` follow a person's GDPR export and erasure (onboarding.signals)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from onboarding.models import Person
from onboarding.signals import person_erasing, person_exporting
from triggers.models import Assignment, DecisionLog, Enrollment, Message, ReviewItem
from triggers.services.audit import audit


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
    }


@receiver(person_erasing, dispatch_uid="triggers.erase_person")
def erase_person(
    sender: Any, *, person: Person, actor: Any = None, **kwargs: Any
) -> dict[str, int]:
    """Delete the person's rows here, children first, and audit the erasure."""
    deleted: dict[str, int] = {}
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
    audit(actor=actor, action="person.erase", obj=person, changes={"deleted": deleted})
    return deleted
