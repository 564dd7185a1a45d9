"""Message templates and the message ledger (the outbox: one row per intended send)."""

from django.db import models

from onboarding.models import Person
from onboarding.models.flows import slug_validator

from .rules import Channel, Enrollment, Rule, RuleVersion


class MessageTemplate(models.Model):
    """A Liquid template written by marketers; validated when saved, rendered strictly."""

    slug = models.SlugField(max_length=64, unique=True, validators=[slug_validator])
    channel = models.CharField(max_length=8, choices=Channel.choices)
    subject = models.CharField(max_length=300, blank=True, default="")
    body = models.TextField()
    # Archived: hidden from lists and pickers, still readable, restorable (issue 15 item 8).
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class MessageStatus(models.TextChoices):
    SCHEDULED = "scheduled"
    DEFERRED = "deferred"
    SENDING = "sending"
    SENT = "sent"
    SUPPRESSED = "suppressed"
    FAILED = "failed"
    UNKNOWN = "unknown"
    NEEDS_REVIEW = "needs_review"
    CANCELLED = "cancelled"


PENDING_STATUSES = (MessageStatus.SCHEDULED, MessageStatus.DEFERRED)
# Not final: due, or being sent (the operations page's backlog counts both).
LIVE_STATUSES = (*PENDING_STATUSES, MessageStatus.SENDING)


class Message(models.Model):
    """One intended follow-up. Unique per (rule version, person, occurrence, step)."""

    idempotency_key = models.CharField(max_length=64, unique=True)
    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="messages")
    # No database constraint on the rule and its version, which the enrollment carries with its
    # own (a tick writes a follow-up per person due): rules and versions are never deleted by the
    # application, and ``on_delete`` still applies through the ORM. See docs/reliability.md,
    # "What the database checks".
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    rule_version = models.ForeignKey(
        RuleVersion, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    # PROTECT: merges move these rows (services/merges.py), erasure deletes them first
    # (receivers.py); any other deletion of a person fails instead of dropping history.
    # No index of its own: ``message_person_sent`` (person, sent_at) serves every lookup by person.
    person = models.ForeignKey(
        Person, on_delete=models.PROTECT, related_name="messages", db_index=False
    )
    step = models.PositiveSmallIntegerField(help_text="0-based position in the follow-up sequence.")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    template = models.ForeignKey(MessageTemplate, on_delete=models.PROTECT, related_name="+")
    due_at = models.DateTimeField()
    status = models.CharField(
        max_length=12, choices=MessageStatus.choices, default=MessageStatus.SCHEDULED
    )
    reason = models.CharField(max_length=64, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    # Set, and committed, right before this attempt's provider call (email, SMS, webhook); cleared
    # at each claim. A "sending" row whose lease expires without it was never handed to its
    # provider and is claimed again; with it, an email or SMS may have left: "unknown", review.
    handed_at = models.DateTimeField(null=True, blank=True)
    provider_id = models.CharField(max_length=255, blank=True, default="")
    subject = models.TextField(blank=True, default="")
    body = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # Sent by support staff from the review queue: the stored subject/body are sent as they are,
    # caps and quiet hours do not apply (a person decided), consent still does.
    manual = models.BooleanField(default=False)
    # A message created by falling back from another channel, or by a support resend.
    fallback_of = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="fallbacks",
        db_index=False,  # message_fallback_of: only the few rows that have one
    )
    # Outcomes reported by the recipient side (pixel, redirect, widget).
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    seen_at = models.DateTimeField(null=True, blank=True)
    dismissed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Every row version a delivery writes (the claim, the hand-over marks, "sent") goes into
        # each index that holds it, so the status indexes are partial: a final row (sent,
        # suppressed, …: almost all of them) is in none of them (docs/benchmarks.md, "Delivery").
        indexes = [
            models.Index(
                fields=["status", "due_at"],
                name="message_due",
                condition=models.Q(status__in=LIVE_STATUSES),
            ),
            models.Index(fields=["person", "sent_at"], name="message_person_sent"),
            models.Index(
                fields=["status", "next_attempt_at"],
                name="message_retry",
                condition=models.Q(status__in=PENDING_STATUSES, next_attempt_at__isnull=False),
            ),
            models.Index(
                fields=["status", "lease_until"],
                name="message_lease",
                condition=models.Q(status=MessageStatus.SENDING),
            ),
            models.Index(
                fields=["fallback_of"],
                name="message_fallback_of",
                condition=models.Q(fallback_of__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        """Named by the person's userId or email (``Person.__str__``), never a row number."""
        return (
            f"{self.get_channel_display()} to {self.person}, step {self.step + 1} ({self.status})"
        )

    def successor(
        self, *, idempotency_key: str, channel: str, template: MessageTemplate, **fields
    ) -> "Message":
        """The message that stands in for this one (a fallback, support staff's resend): same
        enrollment, rule version, person and step, created once per ``idempotency_key``."""
        message, _ = Message.objects.get_or_create(
            idempotency_key=idempotency_key,
            defaults={
                "enrollment_id": self.enrollment_id,
                "rule_id": self.rule_id,
                "rule_version_id": self.rule_version_id,
                "person_id": self.person_id,
                "step": self.step,
                "channel": channel,
                "template": template,
                "fallback_of": self,
                **fields,
            },
        )
        return message


class ReviewStatus(models.TextChoices):
    OPEN = "open"
    RESENT = "resent"
    SWITCHED = "switched"
    DISMISSED = "dismissed"


class ReviewItem(models.Model):
    """A follow-up that could not be delivered automatically, for support staff to resolve."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="review")
    reason = models.CharField(max_length=64)
    detail = models.TextField(blank=True, default="")
    status = models.CharField(
        max_length=10, choices=ReviewStatus.choices, default=ReviewStatus.OPEN
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        "auth.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"], name="review_open")]

    def __str__(self) -> str:
        message = self.message
        return f"{message.get_channel_display()} to {message.person}: {self.reason}"
