"""Onboarding flows (ordered steps), per-person progress through them, and segments."""

from __future__ import annotations

import itertools

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from .events import Person
from .fields import OffsetsField

# The entry event's properties carried on progress rows, typed, for breakdowns without reading
# the events (DESIGN §5). A breakdown by any other property reads the entry events instead.
BREAKDOWN_PROPERTIES = ("source", "device", "plan")

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


# Steps 2..TYPED_STEPS have an integer column each (``offset_k``); later steps of longer flows
# share one array (``offsets_after``, null for shorter flows). Measured on 300 k rows: medians
# over typed columns took 0.3–0.5 s against 0.7–1.0 s over a bigint[] per row (the subscripts),
# and the table is half the size.
TYPED_STEPS = 8
OFFSET_FIELDS = (*(f"offset_{k}" for k in range(2, TYPED_STEPS + 1)), "offsets_after")


def offset_columns(offsets: list[int]) -> dict[str, object]:
    """Step offsets ``[0, t2, t3, …]`` (microseconds from entry) as the model's columns."""
    values: dict[str, object] = {
        f"offset_{k}": offsets[k - 1] if k <= len(offsets) else None
        for k in range(2, TYPED_STEPS + 1)
    }
    values["offsets_after"] = list(offsets[TYPED_STEPS:]) or None
    return values


def offsets_of(row: dict) -> list[int]:
    """The step offsets ``[0, t2, …]`` from a mapping holding :data:`OFFSET_FIELDS`."""
    offsets = [0]
    for k in range(2, TYPED_STEPS + 1):
        value = row[f"offset_{k}"]
        if value is None:
            return offsets
        offsets.append(value)
    return offsets + list(row["offsets_after"] or [])


class EntryOutcome(models.Model):
    """Where one entry into a flow led, in the narrow typed shape funnels scan (DESIGN §5).

    ``offset_k`` is the time of the chosen step k minus the entry's, in microseconds (null when
    step k was not reached): exact, integer, and read without parsing JSON; ``step_offsets`` is
    the list ``[0, offset_2, …]`` as far as reached. ``entry_<property>`` is the entry event's
    property of that name as breakdown text (strings as they are, other JSON as JSON text; null
    when absent or null), for the keys in :data:`BREAKDOWN_PROPERTIES`.
    """

    flow = models.ForeignKey(OnboardingFlow, on_delete=models.CASCADE, related_name="+")
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="+")
    entered_at = models.DateTimeField()
    entry_event_id = models.BigIntegerField()
    furthest_step = models.PositiveSmallIntegerField()
    offset_2 = models.BigIntegerField(null=True, blank=True)
    offset_3 = models.BigIntegerField(null=True, blank=True)
    offset_4 = models.BigIntegerField(null=True, blank=True)
    offset_5 = models.BigIntegerField(null=True, blank=True)
    offset_6 = models.BigIntegerField(null=True, blank=True)
    offset_7 = models.BigIntegerField(null=True, blank=True)
    offset_8 = models.BigIntegerField(null=True, blank=True)
    offsets_after = OffsetsField(null=True, blank=True, help_text="Offsets of steps 9, 10, …")
    reached_at = models.DateTimeField(help_text="Time of the furthest step reached.")
    # Null is "absent or JSON null" (the person's trait applies); "" is a value of its own.
    entry_source = models.TextField(null=True, blank=True)  # noqa: DJ001
    entry_device = models.TextField(null=True, blank=True)  # noqa: DJ001
    entry_plan = models.TextField(null=True, blank=True)  # noqa: DJ001

    class Meta:
        abstract = True

    @property
    def step_offsets(self) -> list[int]:
        return offsets_of({name: getattr(self, name) for name in OFFSET_FIELDS})

    @property
    def gaps_seconds(self) -> list[float]:
        """Seconds between consecutive chosen steps: [step1→2, step2→3, …], as far as reached."""
        return offsets_to_gaps(self.step_offsets)


def offsets_to_gaps(offsets: list[int] | None) -> list[float]:
    """Step offsets (microseconds from entry) as seconds between consecutive steps; exactly the
    floats ``timedelta.total_seconds()`` gives for the same two times."""
    offsets = offsets or []
    return [(b - a) / 1e6 for a, b in itertools.pairwise(offsets)]


class FlowProgress(EntryOutcome):
    """A person's way through a flow, from their first entry, maintained as events arrive.

    Computed with exactly the funnel rules of DESIGN §4.2 over the person's stored events, so a
    funnel over entrants whose first entry falls in the date range is a scan of this narrow table.
    ``latest_entry_at`` later than ``entered_at`` marks people who entered again; their later
    entries have :class:`FlowReentry` rows.
    """

    flow = models.ForeignKey(OnboardingFlow, on_delete=models.CASCADE, related_name="progress")
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="flow_progress")
    latest_entry_at = models.DateTimeField()
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
            # People who entered again after their first entry.
            models.Index(
                fields=["flow", "latest_entry_at"],
                condition=models.Q(latest_entry_at__gt=models.F("entered_at")),
                name="flowprogress_reentry",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.person_id} at step {self.furthest_step} of {self.flow_id}"


class FlowReentry(EntryOutcome):
    """A later entry of a person who entered the flow before (DESIGN §4.2: a funnel whose range
    starts after someone's first entry judges them from their earliest entry inside the range).

    One row per UTC day after the day of the first entry on which the person has a step-1 event:
    the day's earliest one, walked as an entry. A range starts at 00:00 UTC, so its entry for such
    a person is always one of these. Maintained with :class:`FlowProgress`, from the same events.
    """

    first_entered_at = models.DateTimeField(help_text="The person's first entry (their progress).")

    class Meta:
        verbose_name_plural = "flow re-entries"
        indexes = [
            models.Index(fields=["flow", "entered_at"], name="flowreentry_entered"),
            models.Index(fields=["flow", "person"], name="flowreentry_person"),
        ]

    def __str__(self) -> str:
        return f"{self.person_id} again at {self.entered_at:%Y-%m-%d} in {self.flow_id}"


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
