"""flow_save / segment_save: keyword-only, validated, atomic, and rebuilding progress on change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from onboarding.models import Event, FlowProgress, OnboardingFlow, Person, Segment, Source, Step
from onboarding.services.flows import StepInput, flow_save, flow_status
from onboarding.services.segments import segment_save

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
STEPS = [StepInput("Signed up", "Signed Up"), StepInput("Verified", "Email Verified")]


@pytest.fixture
def journey(db) -> Person:
    source = Source.objects.create(name="app", write_key_hash="h" * 64, write_key_prefix="p")
    who = Person.objects.create(external_id="ann", first_seen=T0, last_seen=T0)
    for n, (name, at) in enumerate(
        [
            ("Signed Up", T0),
            ("Email Verified", T0 + timedelta(hours=2)),
            ("Done", T0 + timedelta(hours=3)),
        ]
    ):
        Event.objects.create(
            source=source, person=who, type="track", name=name, timestamp=at, received_at=at,
            message_id=str(n),
        )  # fmt: skip
    return who


def save(**changes):
    values = {"slug": "activation", "name": "Activation", "window_seconds": 86400, "steps": STEPS}
    return flow_save(**{**values, **changes})


def test_create_builds_progress(journey):
    saved = save()
    assert saved.status == "created"
    assert [s.event_name for s in saved.object.steps.all()] == ["Signed Up", "Email Verified"]
    assert FlowProgress.objects.get().furthest_step == 2


def test_unchanged_writes_nothing(journey):
    flow = save().object
    before = OnboardingFlow.objects.get().updated_at
    step_ids = list(Step.objects.values_list("pk", flat=True))
    assert flow_status(slug="activation", name="Activation", window_seconds=86400, steps=STEPS) == (
        "unchanged"
    )
    assert save().status == "unchanged"
    flow.refresh_from_db()
    assert flow.updated_at == before
    assert list(Step.objects.values_list("pk", flat=True)) == step_ids


def test_changing_steps_replaces_them_and_rebuilds(journey):
    save()
    saved = save(steps=[*STEPS, StepInput("Done", "Done", critical=True)])
    assert saved.status == "updated"
    assert Step.objects.count() == 3
    progress = FlowProgress.objects.get()
    assert (progress.furthest_step, progress.completed_at) == (3, T0 + timedelta(hours=3))


def test_changing_the_window_rebuilds(journey):
    save()
    assert save(window_seconds=3600).status == "updated"
    assert FlowProgress.objects.get().furthest_step == 1


def test_renaming_keeps_steps_and_progress(journey):
    save()
    step_ids = list(Step.objects.values_list("pk", flat=True))
    progress_id = FlowProgress.objects.get().pk
    assert save(name="Activation v2").status == "updated"
    assert list(Step.objects.values_list("pk", flat=True)) == step_ids
    assert FlowProgress.objects.get().pk == progress_id


def test_where_types_are_told_apart(journey):
    save(steps=[StepInput("Signed up", "Signed Up", {"x": 1})])
    assert save(steps=[StepInput("Signed up", "Signed Up", {"x": True})]).status == "updated"


def test_invalid_values_raise_with_paths(db):
    with pytest.raises(ValidationError) as error:
        save(slug="Not A Slug", window_seconds=0, steps=[StepInput("", "Signed Up")])
    messages = "\n".join(error.value.messages)
    assert "slug:" in messages
    assert "window:" in messages
    assert "steps[0].name:" in messages
    with pytest.raises(ValidationError, match="at least one step"):
        save(steps=[])
    assert not OnboardingFlow.objects.exists()


def test_services_are_keyword_only(db):
    with pytest.raises(TypeError):
        flow_save("activation", "Activation", 60, STEPS)  # type: ignore[misc]
    with pytest.raises(TypeError):
        segment_save("s", "S", {})  # type: ignore[misc]


def test_segment_save_normalizes_and_is_idempotent(db):
    definition = {
        "match": "any",
        "conditions": [{"event": "Signed Up", "within": "24h", "count": {"op": "gte", "value": 1}}],
    }
    saved = segment_save(slug="recent", name="Recent", definition=definition)
    assert saved.status == "created"
    assert saved.object.definition == {
        "match": "any",
        "conditions": [{"event": "Signed Up", "within": "1d"}],
    }
    updated_at = Segment.objects.get().updated_at
    assert segment_save(slug="recent", name="Recent", definition=definition).status == "unchanged"
    assert Segment.objects.get().updated_at == updated_at


def test_segment_save_reports_paths(db):
    with pytest.raises(ValidationError) as error:
        segment_save(
            slug="x",
            name="X",
            definition={"conditions": [{"flow": "nope", "state": "entered"}]},
        )
    assert error.value.messages == ["conditions[0].flow: unknown flow 'nope'"]
