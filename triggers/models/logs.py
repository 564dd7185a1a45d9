from django.conf import settings
from django.db import models

from onboarding.models import Person


class Heartbeat(models.Model):
    """The last time a scheduled task ran in a worker (read by ``/healthz``)."""

    name = models.CharField(max_length=100, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at:%Y-%m-%d %H:%M:%S}"


class DecisionLog(models.Model):
    """Why a person did or did not get something from a rule: one row per evaluation outcome."""

    at = models.DateTimeField(db_index=True)
    # PROTECT: merges move these rows (services/merges.py), erasure deletes them first
    # (receivers.py); any other deletion of a person fails instead of dropping history. Its
    # index is the (person, at) one below.
    person = models.ForeignKey(Person, on_delete=models.PROTECT, related_name="+", db_index=False)
    # No database constraint on the rule and its version, which the enrollment carries with its
    # own (a tick writes a decision per person due): rules and versions are never deleted
    # by the application (rules are archived), and a deletion through the ORM still cascades
    # here (``on_delete`` is Django's). See docs/reliability.md, "What the database
    # checks".
    rule = models.ForeignKey(
        "triggers.Rule", on_delete=models.CASCADE, related_name="decisions", db_constraint=False
    )
    rule_version = models.ForeignKey(
        "triggers.RuleVersion",
        on_delete=models.CASCADE,
        null=True,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    enrollment = models.ForeignKey(
        "triggers.Enrollment", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    message = models.ForeignKey(
        "triggers.Message", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # enrolled, skipped, exited, cancelled, scheduled, sent, suppressed, deferred, failed, review
    outcome = models.CharField(max_length=16)
    # segment, reentry, exit, paused, archived, caps, consent, quiet_hours, render, dry_run, …
    reason = models.CharField(max_length=32, blank=True, default="")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["person", "at"], name="decision_person_at")]

    def __str__(self) -> str:
        return f"{self.outcome} {self.reason}".strip()


class AuditLog(models.Model):
    """Who changed what and when, for rules, templates, experiments and review actions."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_label = models.CharField(max_length=150, blank=True, default="")
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]

    def __str__(self) -> str:
        return f"{self.actor_label or 'system'} {self.action} {self.object_type}:{self.object_id}"
