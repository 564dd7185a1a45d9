"""The idle-spell specification (``triggers.engine.spells.IdleSpec``) that the live detector and
the backtest's executor both read: what it makes of a trigger, and the occurrence of a spell."""

from __future__ import annotations

from datetime import timedelta

from triggers.engine.spells import IdleSpec
from triggers.rules.spec import Trigger

from .conftest import T0

M = timedelta(minutes=1)


def test_a_trigger_becomes_a_threshold_and_the_furthest_step_of_its_step():
    anywhere = IdleSpec.of(Trigger("inactive_in_flow", flow="activation", minutes=5))
    assert anywhere == IdleSpec("activation", 5 * M, None)
    at_profile = IdleSpec.of(Trigger("inactive_in_flow", flow="activation", step=3, minutes=30))
    assert at_profile.at_step == 2  # step 3 is the step to do next: two steps done


def test_one_occurrence_per_spell_keyed_by_its_start_and_due_at_its_deadline():
    spec = IdleSpec("activation", 5 * M)
    occurrence = spec.occurrence(7, T0, 1)
    assert (occurrence.person_id, occurrence.key, occurrence.at) == (
        7,
        "idle:20261102T090000.000000",
        T0 + 5 * M,
    )
    assert occurrence.context == {"furthest_step": 1, "last_seen": T0.isoformat()}
    assert not occurrence.late
    assert spec.occurrence(7, T0, 2, late=False, received_at=T0).key == occurrence.key


def test_a_spell_learnt_of_at_or_after_its_deadline_is_late():
    spec = IdleSpec("activation", 5 * M)
    deadline = spec.deadline(T0)
    assert not spec.late(deadline, deadline - timedelta(microseconds=1))
    assert spec.late(deadline, deadline)
    assert spec.late(deadline, None)  # when it arrived is unknown
    late = spec.occurrence(7, T0, 1, late=True, received_at=T0 + 8 * M)
    assert late.late and late.context["received_at"] == (T0 + 8 * M).isoformat()


def test_in_onboarding_only_while_the_window_is_open_after_the_deadline():
    spec = IdleSpec("activation", 5 * M)
    assert spec.window_open(T0 + 6 * M, spec.deadline(T0))
    assert not spec.window_open(T0 + 5 * M, spec.deadline(T0))
