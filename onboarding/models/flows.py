"""Onboarding flows (ordered steps), per-person progress through them, and segments."""

from __future__ import annotations

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from .events import Person

slug_validator = RegexValidator(
    r"^[a-z0-9]+(?:-[a-z0-9]+)*$", "Use lowercase letters, digits and single hyphens."
)


class OnboardingFlow(models.Model):
    slug = models.SlugField(max_length=64, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    window_seconds = models.PositiveIntegerField(
        default=7 * 24 * 3600,
        validators=[MinValueValidator(1)],
        help_text="Conversion window, counted from entry (the first step).",
    )
    # Archived: hidden from lists and pickers, still readable, restorable (issue 15 item 8).
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Step(models.Model):
    """One step of a flow: an event name and an optional property filter (equality)."""

    flow = models.ForeignKey(OnboardingFlow, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(help_text="1-based; step 1 is the entry.")
    name = models.CharField(max_length=200)
    event_name = models.CharField(max_length=255)
    where = models.JSONField(default=dict, blank=True, help_text="Property equality filter.")
    optional = models.BooleanField(default=False)
    critical = models.BooleanField(default=False)

    class Meta:
        ordering = ["flow", "position"]
        constraints = [
            models.UniqueConstraint(fields=["flow", "position"], name="step_unique_position"),
        ]
        indexes = [models.Index(fields=["event_name"], name="step_event_name")]

    def __str__(self) -> str:
        return f"{self.position}. {self.name}"


class FlowProgress(models.Model):
    """A person's way through a flow, from their first entry, maintained as events arrive.

    Computed with exactly the funnel rules of DESIGN §4.2 over the person's stored events, so a
    funnel over entrants whose first entry falls in the date range is a scan of this narrow table.
    ``latest_entry_at`` later than ``entered_at`` marks people who entered again; a funnel whose
    range starts after their first entry evaluates them from raw events.
    """

    flow = models.ForeignKey(OnboardingFlow, on_delete=models.CASCADE, related_name="progress")
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="flow_progress")
    entered_at = models.DateTimeField()
    entry_event_id = models.BigIntegerField()
    latest_entry_at = models.DateTimeField()
    furthest_step = models.PositiveSmallIntegerField()
    # Seconds between consecutive chosen steps: [step1→2, step2→3, …], as far as reached.
    step_seconds = models.JSONField(default=list)
    reached_at = models.DateTimeField(help_text="Time of the furthest step reached.")
    completed_at = models.DateTimeField(null=True, blank=True)
    window_ends_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "flow progress"
        constraints = [
            models.UniqueConstraint(fields=["flow", "person"], name="flowprogress_unique_person"),
        ]
        indexes = [
            models.Index(fields=["flow", "entered_at"], name="flowprogress_entered"),
            models.Index(fields=["flow", "furthest_step", "reached_at"], name="flowprogress_step"),
            # Whose progress changed since a moment (exits of trigger rules follow these).
            models.Index(fields=["flow", "updated_at"], name="flowprogress_updated"),
            # People who entered again after their first entry: the few a funnel whose range
            # starts after their first entry walks from raw events.
            models.Index(
                fields=["flow", "latest_entry_at"],
                condition=models.Q(latest_entry_at__gt=models.F("entered_at")),
                name="flowprogress_reentry",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.person_id} at step {self.furthest_step} of {self.flow_id}"


class Segment(models.Model):
    """A named filter over people (DESIGN §4.3); ``definition`` holds ``match`` and ``conditions``."""

    slug = models.SlugField(max_length=64, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    definition = models.JSONField(default=dict)
    # Archived: hidden from lists and pickers, still readable, restorable (issue 15 item 8).
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
