"""Writes to onboarding flows: create or update a flow and its ordered steps, keyed by slug.

A flow is saved whole: its steps are replaced in one transaction, and when the steps or the window
change, the flow's :class:`~onboarding.models.FlowProgress` rows are rebuilt from stored events so
funnels and segments never read progress computed under the old definition.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from onboarding.configfile.errors import Problem, join_path
from onboarding.flows.progress import rebuild_flow_progress
from onboarding.models import OnboardingFlow, Step

T = TypeVar("T")
SaveStatus = Literal["created", "updated", "unchanged"]

# Model field → the name used in forms and configuration files.
_STEP_FIELD_NAMES = {"event_name": "event"}
_FLOW_FIELD_NAMES = {"window_seconds": "window"}


@dataclass(frozen=True)
class StepInput:
    name: str
    event: str
    where: Mapping[str, Any] = field(default_factory=dict)
    optional: bool = False
    critical: bool = False


@dataclass(frozen=True)
class Saved(Generic[T]):
    object: T
    status: SaveStatus


def _canonical(value: Any) -> str:
    """JSON with sorted keys: tells ``true`` from ``1`` from ``1.0``, unlike ``==``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _steps_signature(steps: Sequence[StepInput]) -> str:
    return _canonical([[s.name, s.event, dict(s.where), s.optional, s.critical] for s in steps])


def _stored_steps(flow: OnboardingFlow) -> list[StepInput]:
    return [
        StepInput(s.name, s.event_name, s.where or {}, s.optional, s.critical)
        for s in flow.steps.order_by("position")
    ]


def flow_problems(
    *, slug: str, name: str, window_seconds: int, steps: Sequence[StepInput]
) -> list[Problem]:
    """Everything wrong with these values, with paths such as ``steps[2].event``."""
    problems: list[Problem] = []
    flow = OnboardingFlow(slug=slug, name=name, window_seconds=window_seconds)
    try:
        flow.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        for name_, messages in error.message_dict.items():
            problems += [Problem(_FLOW_FIELD_NAMES.get(name_, name_), m) for m in messages]
    if not steps:
        problems.append(Problem("steps", "must have at least one step"))
    for index, step in enumerate(steps):
        if not isinstance(step.where, Mapping):
            problems.append(Problem(f"steps[{index}].where", "must be a mapping"))
            continue
        row = Step(
            position=index + 1,
            name=step.name,
            event_name=step.event,
            where=dict(step.where),
            optional=step.optional,
            critical=step.critical,
        )
        try:
            row.full_clean(exclude=["flow"], validate_unique=False, validate_constraints=False)
        except ValidationError as error:
            for name_, messages in error.message_dict.items():
                path = join_path(f"steps[{index}]", _STEP_FIELD_NAMES.get(name_, name_))
                problems += [Problem(path, m) for m in messages]
    return problems


def flow_status(
    *,
    slug: str,
    name: str,
    window_seconds: int,
    steps: Sequence[StepInput],
    archived: bool | None = None,
) -> SaveStatus:
    """What :func:`flow_save` would do with these values, without writing anything."""
    flow = OnboardingFlow.objects.filter(slug=slug).first()
    if flow is None:
        return "created"
    same = (
        flow.name == name
        and flow.window_seconds == window_seconds
        and _steps_signature(_stored_steps(flow)) == _steps_signature(steps)
        and not archive_changes(flow, archived)
    )
    return "unchanged" if same else "updated"


@transaction.atomic
def flow_save(
    *,
    slug: str,
    name: str,
    window_seconds: int,
    steps: Sequence[StepInput],
    rebuild_progress: bool = True,
    archived: bool | None = None,
) -> Saved[OnboardingFlow]:
    """Create or update the flow ``slug`` with exactly these steps; unchanged values write nothing.

    ``archived`` (configuration files) archives or restores it; None leaves that as it is. The
    dashboard archives through ``triggers.services.lifecycle``, which checks where it is used.

    When the steps or the window change, progress is rebuilt here, in the caller's transaction.
    That is a scan of every entrant's step events: fine for the demo and for imports, but for big
    data it should become a Celery task (taking the flow id, enqueued with
    ``transaction.on_commit``) with funnels falling back to raw events until it finishes.
    """
    problems = flow_problems(slug=slug, name=name, window_seconds=window_seconds, steps=steps)
    if problems:
        raise ValidationError([str(problem) for problem in problems])
    flow = OnboardingFlow.objects.select_for_update().filter(slug=slug).first()
    if flow is None:
        flow = OnboardingFlow(slug=slug, name=name, window_seconds=window_seconds)
        archive_changes(flow, archived)
        flow.full_clean()
        flow.save()
        _replace_steps(flow, steps)
        if rebuild_progress:
            rebuild_flow_progress(flow)
        return Saved(flow, "created")

    definition_changed = flow.window_seconds != window_seconds or _steps_signature(
        _stored_steps(flow)
    ) != _steps_signature(steps)
    archiving = archive_changes(flow, archived)
    if flow.name == name and not definition_changed and not archiving:
        return Saved(flow, "unchanged")
    flow.name = name
    flow.window_seconds = window_seconds
    flow.full_clean()
    flow.save()
    if definition_changed:
        _replace_steps(flow, steps)
        if rebuild_progress:
            rebuild_flow_progress(flow)
    return Saved(flow, "updated")


def archive_changes(obj: Any, archived: bool | None) -> bool:
    """Set ``obj.archived_at`` for ``archived`` (None: leave it); whether that changes it."""
    if archived is None or (obj.archived_at is not None) == archived:
        return False
    obj.archived_at = timezone.now() if archived else None
    return True


def _replace_steps(flow: OnboardingFlow, steps: Sequence[StepInput]) -> None:
    flow.steps.all().delete()
    Step.objects.bulk_create(
        Step(
            flow=flow,
            position=position,
            name=step.name,
            event_name=step.event,
            where=dict(step.where),
            optional=step.optional,
            critical=step.critical,
        )
        for position, step in enumerate(steps, start=1)
    )
