"""Rules (mutable head), rule versions (immutable definitions) and enrollments."""

from django.conf import settings
from django.db import models

from onboarding.models import Person
from onboarding.models.flows import slug_validator


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    IN_APP = "in_app", "In-app message"
    SMS = "sms", "SMS"
    WEBHOOK = "webhook", "Webhook"


class RuleStatus(models.TextChoices):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"


class Rule(models.Model):
    """A trigger rule. Its behaviour is the ``current_version``; editing creates a new version."""

    slug = models.SlugField(max_length=64, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=8, choices=RuleStatus.choices, default=RuleStatus.DRAFT)
    priority = models.IntegerField(default=0, help_text="Higher wins when rules compete.")
    shadow = models.BooleanField(
        default=False,
        help_text="Evaluate and record every decision, but send nothing (to try a rule safely).",
    )
    current_version = models.ForeignKey(
        "RuleVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "name"]
        indexes = [models.Index(fields=["status"], name="rule_status")]

    def __str__(self) -> str:
        return self.name


class RuleVersion(models.Model):
    """An immutable definition of a rule, in the configuration-file shape (DESIGN §3.4)."""

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["rule", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "number"], name="ruleversion_unique_number"),
        ]

    def __str__(self) -> str:
        return f"{self.rule} v{self.number}"


class RuleState(models.Model):
    """Evaluation bookkeeping per rule: how far detection has looked (its watermark).

    A tick claims the row with ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two beats or
    overlapping ticks never evaluate the same rule at once.
    """

    rule = models.OneToOneField(Rule, on_delete=models.CASCADE, related_name="state")
    checked_until = models.DateTimeField(null=True, blank=True)
    last_tick_at = models.DateTimeField(null=True, blank=True)
    last_tick_seconds = models.FloatField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.rule_id} checked until {self.checked_until}"


class EnrollmentStatus(models.TextChoices):
    ACTIVE = "active"
    EXITED = "exited"
    FINISHED = "finished"


class EnrollmentQuerySet(models.QuerySet):
    def exit(self, reason: str, now) -> int:
        """End these enrollments that are still active (an exit, an unsubscribe); how many."""
        return self.filter(status=EnrollmentStatus.ACTIVE).update(
            status=EnrollmentStatus.EXITED, exited_at=now, exit_reason=reason
        )


class Enrollment(models.Model):
    """A person entering a rule once for one occurrence (an idle spell, an event, a streak…)."""

    # Indexed by the unique (rule, person, occurrence) below; versions are never deleted (their
    # rule is archived, not deleted), so nothing looks enrollments up by version.
    rule = models.ForeignKey(
        Rule, on_delete=models.CASCADE, related_name="enrollments", db_index=False
    )
    rule_version = models.ForeignKey(
        RuleVersion, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    # PROTECT: merges move these rows (services/merges.py), erasure deletes them first
    # (receivers.py); any other deletion of a person fails instead of dropping history.
    person = models.ForeignKey(Person, on_delete=models.PROTECT, related_name="enrollments")
    occurrence_key = models.CharField(max_length=128)
    enrolled_at = models.DateTimeField()
    # What the person had reached when enrolled, for "exit when progressed".
    context = models.JSONField(default=dict, blank=True)
    # The experiment arm this enrollment was given (None outside experiments).
    variant = models.ForeignKey(
        "triggers.Variant", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(
        max_length=8, choices=EnrollmentStatus.choices, default=EnrollmentStatus.ACTIVE
    )
    exited_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=32, blank=True, default="")

    objects = EnrollmentQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "person", "occurrence_key"], name="enrollment_unique_occurrence"
            ),
        ]
        indexes = [
            models.Index(fields=["rule", "person", "enrolled_at"], name="enrollment_rule_person"),
            models.Index(fields=["status", "rule"], name="enrollment_status"),
        ]

    def __str__(self) -> str:
        return f"{self.person} in {self.rule} ({self.occurrence_key})"
