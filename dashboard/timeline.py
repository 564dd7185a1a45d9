"""One chronological view of a person: events, enrollments, messages and decisions.

It answers "why did (or didn't) this person get this message?": the event that triggered a rule,
the enrollment, every check the delivery made (suppressed by a cap, deferred by quiet hours, sent)
and what the person did next, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from onboarding.models import Event, FlowProgress, Person
from triggers.models import DecisionLog, Enrollment, Message


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # event, enrollment, message, decision
    title: str
    detail: str
    status: str = ""


def person_timeline(person: Person, *, limit: int = 200) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = []
    for event in person.events.order_by("-timestamp", "-id")[:limit]:
        props = ", ".join(f"{k}={v}" for k, v in list((event.properties or {}).items())[:6])
        entries.append(TimelineEntry(event.timestamp, "event", event.name or event.type, props))
    for enrollment in (
        Enrollment.objects.filter(person=person)
        .select_related("rule")
        .order_by("-enrolled_at")[:limit]
    ):
        entries.append(
            TimelineEntry(
                enrollment.enrolled_at,
                "enrollment",
                f"Entered rule “{enrollment.rule.name}”",
                enrollment.occurrence_key,
                enrollment.status,
            )
        )
    for message in (
        Message.objects.filter(person=person).select_related("rule").order_by("-created_at")[:limit]
    ):
        when = message.sent_at or message.due_at
        entries.append(
            TimelineEntry(
                when,
                "message",
                f"{message.get_channel_display()} from “{message.rule.name}” (step {message.step + 1})",
                message.subject or message.body[:120],
                message.status + (f" · {message.reason}" if message.reason else ""),
            )
        )
    for decision in (
        DecisionLog.objects.filter(person=person)
        .select_related("rule")
        .order_by("-at", "-pk")[:limit]
    ):
        entries.append(
            TimelineEntry(
                decision.at,
                "decision",
                f"{decision.outcome.replace('_', ' ').capitalize()} · {decision.rule.name}",
                _detail(decision.detail),
                decision.reason,
            )
        )
    # Newest first; at the same instant, effects above their causes (a message above the decision
    # that sent it, above the enrollment, above the event that triggered it).
    rank = {"event": 0, "enrollment": 1, "decision": 2, "message": 3}
    entries.sort(key=lambda e: (e.at, rank[e.kind]), reverse=True)
    return entries[:limit]


def _detail(detail: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(detail.items()) if k not in ("step",))[:200]


def person_flows(person: Person) -> list[FlowProgress]:
    return list(
        FlowProgress.objects.filter(person=person).select_related("flow").order_by("flow__name")
    )


def find_person(query: str) -> Person | None:
    """A person by exact userId, anonymousId, email or numeric id."""
    query = query.strip()
    if not query:
        return None
    if query.isdigit():
        found = Person.objects.filter(pk=int(query)).first()
        if found:
            return found
    return (
        Person.objects.filter(external_id=query).first()
        or Person.objects.filter(identities__value=query).first()
        or Person.objects.filter(email__iexact=query).first()
    )


def recent_events_count(person: Person) -> int:
    return Event.objects.filter(person=person).count()
