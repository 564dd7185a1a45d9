"""A/B tests of a rule's follow-ups (DESIGN §4.7): experiments, variants, assignments."""

from django.db import models
from django.db.models import Q

from onboarding.models import Person
from onboarding.models.flows import slug_validator

from .rules import Rule


class ExperimentStatus(models.TextChoices):
    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"


class Experiment(models.Model):
    slug = models.SlugField(max_length=64, unique=True, validators=[slug_validator])
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="experiments")
    status = models.CharField(
        max_length=8, choices=ExperimentStatus.choices, default=ExperimentStatus.DRAFT
    )
    # Primary metric: {"flow": slug, "completed_within": seconds}; secondary re-engagement window.
    metric = models.JSONField(default=dict)
    # Assignment hashes (seed, person); a new phase (an edit while running) draws a new seed.
    seed = models.CharField(max_length=32)
    phase = models.PositiveSmallIntegerField(default=1)
    planned_users_per_arm = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    shipped_variant = models.ForeignKey(
        "Variant", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        # Starting, stopping and shipping is the experiment owner's (dashboard/permissions.py);
        # change_experiment edits the definition only.
        permissions = [("run_experiment", "Can start, stop and ship experiments")]
        constraints = [
            # At most one running experiment per rule: enrollments are split one way only.
            models.UniqueConstraint(
                fields=["rule"],
                condition=Q(status="running"),
                name="experiment_one_running_per_rule",
            ),
        ]

    def __str__(self) -> str:
        return self.slug


class Variant(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=64)
    position = models.PositiveSmallIntegerField()
    weight = models.PositiveIntegerField()
    holdout = models.BooleanField(default=False)
    # Overrides the rule's follow-ups (same shape); empty means "the rule's own sequence".
    follow_ups = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["experiment", "position"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "name"], name="variant_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class Assignment(models.Model):
    """A person's arm, fixed at first eligibility: later weight changes never move them."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="assignments")
    # PROTECT: merges move these rows (services/merges.py), erasure deletes them first
    # (receivers.py); any other deletion of a person fails instead of dropping history.
    person = models.ForeignKey(Person, on_delete=models.PROTECT, related_name="assignments")
    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="assignments")
    phase = models.PositiveSmallIntegerField()
    assigned_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "person"], name="assignment_unique_person"
            ),
        ]
        indexes = [models.Index(fields=["experiment", "phase", "variant"], name="assignment_arm")]

    def __str__(self) -> str:
        return f"{self.person_id} → {self.variant_id}"
