"""Deterministic assignment to experiment arms (DESIGN §4.7).

A person's position in [0, 1) is a hash of the experiment's seed and their id; the arms own
consecutive ranges in proportion to their weights. The same person gets the same arm in every
process, and the arm is persisted at first eligibility, so later weight changes move nobody.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from triggers.models import Assignment, Experiment, Variant

from .hashing import pick, position

__all__ = ["assign", "pick", "position"]


def assign(experiment: Experiment, person_ids: Iterable[int], now: datetime) -> dict[int, Variant]:
    """The arm of each person, creating assignments for those seen for the first time."""
    people = set(person_ids)
    variants = list(experiment.variants.order_by("position"))
    by_id = {v.pk: v for v in variants}
    existing = dict(
        Assignment.objects.filter(experiment=experiment, person_id__in=people).values_list(
            "person_id", "variant_id"
        )
    )
    new = [
        Assignment(
            experiment=experiment,
            person_id=person_id,
            variant=pick(variants, position(experiment.seed, person_id)),
            phase=experiment.phase,
            assigned_at=now,
        )
        for person_id in sorted(people - set(existing))
    ]
    Assignment.objects.bulk_create(new, ignore_conflicts=True)
    if new:
        existing = dict(
            Assignment.objects.filter(experiment=experiment, person_id__in=people).values_list(
                "person_id", "variant_id"
            )
        )
    return {person_id: by_id[variant_id] for person_id, variant_id in existing.items()}
