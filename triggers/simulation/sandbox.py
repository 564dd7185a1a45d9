"""The sandbox (DESIGN §4.6): a test send to the marketer, a preview, and "simulate a person".

``simulate_person`` is the live engine by construction: it runs the real ingestion
(``ingest_events`` with ``received_at``), the real ``evaluate_rule`` and the real per-message
delivery pipeline (``deliver_message``) on a virtual clock, inside a transaction that is always
rolled back. The rules are evaluated as copies in shadow mode, so every check runs and the rendered
text is recorded, and no channel is ever called.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.utils import timezone

from onboarding.models import Person, Source
from onboarding.tracking.ingest import ingest_events
from onboarding.tracking.parsing import parse_event
from triggers.channels import channel_for
from triggers.channels.email import compose
from triggers.delivery.pipeline import deliver_message
from triggers.engine.evaluate import TickReport, evaluate_rule
from triggers.models import DecisionLog, Message, MessageTemplate, Rule, RuleState
from triggers.models.messages import PENDING_STATUSES
from triggers.rendering import Rendered, person_context, render
from triggers.services.audit import audit
from triggers.services.rules import rule_save, rule_set_status

TICK = timedelta(seconds=30)
SAMPLE_TRAITS = {"first_name": "Sam", "last_name": "Sample", "plan": "pro", "company": "Acme"}


class SandboxError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def preview(template: MessageTemplate, person: Any) -> Rendered:
    """Render ``template`` for any person (strict: a missing variable raises TemplateProblem)."""
    return render(
        template.subject,
        template.body,
        person_context(person),
        html=channel_for(template.channel).html,
    )


def _sample_person(to_email: str = "", to_phone: str = "") -> SimpleNamespace:
    return SimpleNamespace(
        pk=0,
        external_id="sample",
        email=to_email,
        phone=to_phone,
        timezone="",
        traits=dict(SAMPLE_TRAITS),
    )


TEST_SEND_UNSUBSCRIBE = "#unsubscribe-is-disabled-in-test-sends"


def test_send(
    *,
    template: MessageTemplate,
    to_email: str = "",
    to_phone: str = "",
    person: Person | None = None,
    actor: Any,
) -> Rendered:
    """Render ``template`` for ``person`` (or a sample person) and send it to the marketer.

    Email goes through Django's mail backend; SMS through the SMS channel, when it is configured.
    No ``Message`` row, no cap and no ledger of a real person is touched; the send is audited.
    """
    context_person = person or _sample_person(to_email, to_phone)
    rendered = render(template.subject, template.body, person_context(context_person))
    if to_email:
        subject = f"[Test] {rendered.subject or template.slug}"
        headers = {"X-Onramp-Test-Send": template.slug}
        if template.channel == "email":
            # Built like a real send (same text, HTML, styles and footer); only the links differ:
            # no click tracking, no pixel, and an unsubscribe link that unsubscribes nobody.
            mail = compose(
                subject=subject,
                text=rendered.body,
                to=to_email,
                unsubscribe=TEST_SEND_UNSUBSCRIBE,
                link=lambda target: target,
                pixel=None,
                headers=headers,
            )
        else:  # another channel's text, shown to the marketer by email
            mail = EmailMultiAlternatives(
                subject=subject,
                body=rendered.body,
                from_email=settings.DEFAULT_FROM_EMAIL,
                to=[to_email],
                headers=headers,
            )
        mail.send()
        destination = to_email
    elif to_phone:
        if not (settings.ONRAMP_SMS_ACCOUNT_SID and settings.ONRAMP_SMS_FROM):
            raise SandboxError("sms_not_configured", "no SMS provider is configured")
        unsaved = Message(channel="sms", body=rendered.body, subject="")
        channel_for("sms").send(unsaved, SimpleNamespace(pk=0, phone=to_phone))
        destination = to_phone
    else:
        raise SandboxError("no_destination", "give an email address or a phone number")
    audit(
        actor=actor,
        action="template.test_send",
        obj=template,
        changes={"to": destination, "person": person.pk if person else None},
    )
    return rendered


# --- simulate a person -----------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedDecision:
    at: datetime
    rule: str
    outcome: str
    reason: str = ""
    channel: str = ""
    subject: str = ""
    body: str = ""


@dataclass
class PersonSimulation:
    start: datetime
    end: datetime
    ticks: int
    decisions: list[SimulatedDecision] = field(default_factory=list)

    @property
    def fired(self) -> list[SimulatedDecision]:
        return [d for d in self.decisions if d.outcome == "enrolled"]

    @property
    def would_send(self) -> list[SimulatedDecision]:
        return [d for d in self.decisions if d.outcome == "shadow"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "ticks": self.ticks,
            "decisions": [{**d.__dict__, "at": d.at.isoformat()} for d in self.decisions],
        }


def _copy(index: int, item: Rule | dict, start: datetime) -> tuple[Rule, str]:
    """An active shadow copy of a saved rule (or of a definition), watermark at ``start``."""
    if isinstance(item, Rule):
        label, definition = item.slug, item.current_version.definition
    else:
        label, definition = f"definition-{index + 1}", item
    rule, _ = rule_save(
        slug=f"sandbox-{uuid.uuid4().hex[:12]}",
        name=f"Sandbox {label}",
        definition=definition,
        shadow=True,
    )
    rule_set_status(rule=rule, status="active")
    RuleState.objects.update_or_create(rule=rule, defaults={"checked_until": start})
    return rule, label


def simulate_person(
    rules: list[Rule | dict],
    script: list[tuple[float, str, dict[str, Any]]],
    *,
    traits: dict[str, Any] | None = None,
    start: datetime | None = None,
    after_seconds: int = 3600,
) -> PersonSimulation:
    """Play ``script`` — (offset in seconds, event name, properties) — for a synthetic person.

    Ticks every 30 s of virtual time from ``start`` until ``after_seconds`` past the last event.
    At each tick: the events due by then are ingested (``received_at`` = their time), each rule
    is evaluated, then the person's due messages go through the delivery pipeline. Everything
    runs in a transaction that is rolled back: the database is left as it was.
    """
    start = start or timezone.now()
    script = sorted(script, key=lambda item: item[0])
    end = start + timedelta(seconds=(script[-1][0] if script else 0) + after_seconds)
    user = f"sandbox-{uuid.uuid4().hex[:12]}"
    simulation = PersonSimulation(start=start, end=end, ticks=0)
    with transaction.atomic():
        try:
            _run(simulation, rules, script, traits or {}, user)
        finally:
            transaction.set_rollback(True)
    return simulation


def _run(simulation, rules, script, traits, user) -> None:
    start, end = simulation.start, simulation.end
    source = Source.objects.create(
        name=f"sandbox {user}",
        write_key_hash=hashlib.sha256(user.encode()).hexdigest(),
        write_key_prefix=user[:12],
    )
    copies = dict(_copy(i, item, start) for i, item in enumerate(rules))
    pending = [(start, "identify", "", dict(traits))] + [
        (start + timedelta(seconds=offset), "track", name, dict(properties or {}))
        for offset, name, properties in script
    ]
    counter = 0
    moment = start
    while moment <= end:
        batch = []
        while pending and pending[0][0] <= moment:
            at, kind, name, data = pending.pop(0)
            counter += 1
            payload: dict[str, Any] = {
                "type": kind,
                "userId": user,
                "timestamp": at.isoformat(),
                "messageId": f"{user}-{counter}",
            }
            if kind == "identify":
                payload["traits"] = data
            else:
                payload.update(event=name, properties=data)
            batch.append(
                (
                    at,
                    parse_event(
                        payload,
                        "",
                        event_type=None,
                        received_at=at,
                        max_event_bytes=32 * 1024,
                        max_future=timedelta(days=1),
                    ),
                )
            )
        for at, event in batch:
            ingest_events(source=source, events=[event], received_at=at, endpoint="sandbox")
        report = TickReport(now=moment, dry_run=False)
        for rule in copies:
            evaluate_rule(
                Rule.objects.select_related("current_version").get(pk=rule.pk), moment, report
            )
        person = Person.objects.filter(external_id=user).first()
        if person is not None:
            due = Message.objects.filter(
                person=person, status__in=PENDING_STATUSES, due_at__lte=moment
            ).order_by("-rule__priority", "due_at", "pk")
            for pk in due.values_list("pk", flat=True):
                deliver_message(pk, now=moment)
        simulation.ticks += 1
        moment += TICK
    person = Person.objects.filter(external_id=user).first()
    if person is None:
        return
    labels = {rule.pk: label for rule, label in copies.items()}
    for log in (
        DecisionLog.objects.filter(person=person).select_related("message").order_by("at", "pk")
    ):
        message = log.message
        simulation.decisions.append(
            SimulatedDecision(
                at=log.at,
                rule=labels.get(log.rule_id, str(log.rule_id)),
                outcome=log.outcome,
                reason=log.reason,
                channel=message.channel if message else "",
                subject=message.subject if message else "",
                body=message.body if message else "",
            )
        )
