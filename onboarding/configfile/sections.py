"""One section per object kind of the configuration file, each with its own validate/plan/apply/export.

A section turns its list in the file into specs (recording every problem with its path), tells
what applying a spec would do (created/updated/unchanged) without writing, applies it through the
kind's service, and exports the objects in the database. The registry holds the sections in
dependency order (segments name flows, rules name templates); this module registers flows and
segments, and apps that build on ``onboarding`` register their own sections from their
``AppConfig.ready()`` with :func:`register_section` (``onboarding`` imports no other app).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from onboarding.models import OnboardingFlow, Segment
from onboarding.segments import normalize_definition
from onboarding.segments.parse import flow_step_counts
from onboarding.services.flows import (
    SaveStatus,
    StepInput,
    flow_problems,
    flow_save,
    flow_status,
)
from onboarding.services.segments import segment_problems, segment_save, segment_status

from .durations import DurationError, format_duration, parse_duration
from .errors import Problem, ProblemsError, join_path
from .yamlio import Inline


@dataclass
class ImportContext:
    """Shared by the sections of one import: problems so far, and what later sections may name."""

    problems: list[Problem] = field(default_factory=list)
    # Flow slug → number of steps, as the flows will be once the file is applied.
    flows: dict[str, int] = field(default_factory=dict)
    # Section key → slug → the values validated so far for every item of that section in the
    # file (also items with problems, so later sections can tell "defined, but invalid" from
    # "unknown" and report one mistake once).
    defined: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # What a section keeps for the length of one import (sections are shared singletons).
    state: dict[str, Any] = field(default_factory=dict)

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))


@dataclass(frozen=True)
class Spec:
    slug: str
    path: str
    values: dict[str, Any]


class Section(ABC):
    key: str  # the top-level key in the file
    label: str  # singular, for reports: "flow"
    item_keys: tuple[str, ...]  # the keys an item may have, in export order

    def validate(self, items: Any, context: ImportContext) -> list[Spec]:
        """Specs for the valid items; every problem goes to ``context``."""
        if items is None:
            return []
        if not isinstance(items, list):
            context.fail(self.key, "must be a list")
            return []
        specs: list[Spec] = []
        first_path: dict[str, str] = {}
        for index, item in enumerate(items):
            path = join_path(self.key, index)
            if not isinstance(item, Mapping):
                context.fail(path, "must be a mapping")
                continue
            for key in item:
                if key not in self.item_keys:
                    context.fail(join_path(path, str(key)), "unknown key")
            slug = item.get("slug")
            if not isinstance(slug, str) or not slug:
                context.fail(
                    join_path(path, "slug"), "required" if slug is None else "must be a string"
                )
            elif slug in first_path:
                context.fail(
                    join_path(path, "slug"), f"duplicate slug {slug!r} (also {first_path[slug]})"
                )
            else:
                first_path[slug] = path
            before = len(context.problems)
            values = self.validate_item(item, path, context)
            if isinstance(slug, str) and slug:
                context.defined.setdefault(self.key, {}).setdefault(slug, values)
            if len(context.problems) == before and isinstance(slug, str):
                specs.append(Spec(slug, path, values))
        return specs

    @abstractmethod
    def validate_item(self, item: Mapping, path: str, context: ImportContext) -> dict[str, Any]:
        """The service arguments for ``item`` (problems recorded in ``context``)."""

    @abstractmethod
    def status(self, spec: Spec, context: ImportContext) -> SaveStatus: ...

    @abstractmethod
    def apply(self, spec: Spec, context: ImportContext) -> SaveStatus: ...

    @abstractmethod
    def export(self) -> list[dict[str, Any]]: ...


def _text(item: Mapping, key: str, path: str, context: ImportContext) -> str:
    value = item.get(key)
    if value is None:
        context.fail(join_path(path, key), "required")
    elif not isinstance(value, str) or not value.strip():
        context.fail(join_path(path, key), "must be a non-empty string")
    else:
        return value
    return ""


def _flag(item: Mapping, key: str, path: str, context: ImportContext) -> bool:
    value = item.get(key, False)
    if not isinstance(value, bool):
        context.fail(join_path(path, key), "must be true or false")
        return False
    return value


def _prefixed(path: str, problems: list[Problem]) -> list[Problem]:
    return [Problem(join_path(path, p.path) if p.path else path, p.message) for p in problems]


class FlowsSection(Section):
    key = "flows"
    label = "flow"
    item_keys = ("slug", "name", "window", "steps", "archived")
    step_keys = ("name", "event", "where", "optional", "critical")

    def validate_item(self, item: Mapping, path: str, context: ImportContext) -> dict[str, Any]:
        name = _text(item, "name", path, context)
        window = 7 * 86400
        window_ok = True
        if "window" in item:
            try:
                window = parse_duration(item["window"])
            except DurationError as error:
                context.fail(join_path(path, "window"), str(error))
                window_ok = False
            else:
                if window <= 0:
                    context.fail(join_path(path, "window"), "must be a positive duration")
                    window_ok = False
        raw_steps = item.get("steps")
        steps = self._steps(raw_steps, join_path(path, "steps"), context)
        slug = item.get("slug")
        if isinstance(slug, str):
            # Known to segments even when its steps are invalid, so errors do not cascade;
            # 0 steps means "unknown count" to the segment parser.
            context.flows[slug] = len(raw_steps) if isinstance(raw_steps, list) else 0
        values = {
            "slug": slug,
            "name": name,
            "window_seconds": window,
            "steps": steps,
            "archived": _flag(item, "archived", path, context),
        }
        if isinstance(slug, str):
            # Model-level checks (slug format, lengths) for what is not reported already.
            problems = flow_problems(
                slug=slug,
                name=name or "placeholder",
                window_seconds=window if window_ok else 1,
                steps=steps or [StepInput("placeholder", "placeholder")],
            )
            if not steps:
                problems = [p for p in problems if not p.path.startswith("steps")]
            context.problems += _prefixed(path, problems)
        return values

    def _steps(self, data: Any, path: str, context: ImportContext) -> list[StepInput]:
        if data is None:
            context.fail(path, "required")
            return []
        if not isinstance(data, list) or not data:
            context.fail(path, "must be a non-empty list of steps")
            return []
        steps: list[StepInput] = []
        for index, raw in enumerate(data):
            step_path = join_path(path, index)
            if not isinstance(raw, Mapping):
                context.fail(step_path, "must be a mapping with name and event")
                continue
            before = len(context.problems)
            for key in raw:
                if key not in self.step_keys:
                    context.fail(join_path(step_path, str(key)), "unknown key")
            name = _text(raw, "name", step_path, context)
            event = _text(raw, "event", step_path, context)
            where = raw.get("where") or {}
            if not isinstance(where, Mapping):
                context.fail(join_path(step_path, "where"), "must be a mapping of property: value")
                where = {}
            for key, value in where.items():
                if not isinstance(key, str) or not (
                    value is None or isinstance(value, str | int | float | bool)
                ):
                    context.fail(
                        join_path(join_path(step_path, "where"), str(key)),
                        "must be a property name with a string, number, boolean or null",
                    )
            optional = _flag(raw, "optional", step_path, context)
            critical = _flag(raw, "critical", step_path, context)
            if len(context.problems) == before:
                steps.append(StepInput(name, event, dict(where), optional, critical))
        return steps if len(steps) == len(data) else []

    def status(self, spec: Spec, context: ImportContext) -> SaveStatus:
        return flow_status(**spec.values)

    def apply(self, spec: Spec, context: ImportContext) -> SaveStatus:
        return flow_save(**spec.values).status

    def export(self) -> list[dict[str, Any]]:
        flows = []
        for flow in OnboardingFlow.objects.order_by("slug").prefetch_related("steps"):
            steps = []
            for step in sorted(flow.steps.all(), key=lambda s: s.position):
                data = Inline(name=step.name, event=step.event_name)
                if step.where:
                    data["where"] = step.where
                if step.optional:
                    data["optional"] = True
                if step.critical:
                    data["critical"] = True
                steps.append(data)
            flows.append(
                {
                    "slug": flow.slug,
                    "name": flow.name,
                    "window": format_duration(flow.window_seconds),
                    "steps": steps,
                    # Written only when archived, so files without it stay as they are.
                    **({"archived": True} if flow.archived_at else {}),
                }
            )
        return flows


class SegmentsSection(Section):
    key = "segments"
    label = "segment"
    item_keys = ("slug", "name", "match", "conditions", "archived")

    def validate_item(self, item: Mapping, path: str, context: ImportContext) -> dict[str, Any]:
        name = _text(item, "name", path, context)
        definition = {key: item[key] for key in ("match", "conditions") if key in item}
        slug = item.get("slug")
        _, problems = segment_problems(
            slug=slug if isinstance(slug, str) else "placeholder",
            name=name or "placeholder",
            definition=definition,
            flows=context.flows,
        )
        context.problems += _prefixed(path, problems)
        archived = _flag(item, "archived", path, context)
        return {"slug": slug, "name": name, "definition": definition, "archived": archived}

    def status(self, spec: Spec, context: ImportContext) -> SaveStatus:
        return segment_status(**spec.values, flows=context.flows)

    def apply(self, spec: Spec, context: ImportContext) -> SaveStatus:
        return segment_save(**spec.values, flows=context.flows).status

    def export(self) -> list[dict[str, Any]]:
        segments = []
        flows = flow_step_counts()
        for segment in Segment.objects.order_by("slug"):
            try:
                definition = normalize_definition(segment.definition, flows=flows)
            except ProblemsError:
                definition = segment.definition  # exported as stored; import will report it
            conditions = definition.get("conditions", [])
            segments.append(
                {
                    "slug": segment.slug,
                    "name": segment.name,
                    "match": definition.get("match", "all"),
                    "conditions": [Inline(c) if isinstance(c, dict) else c for c in conditions],
                    **({"archived": True} if segment.archived_at else {}),
                }
            )
        return segments


# Every kind DESIGN §3.4 names, in file order; a kind no section is registered for is refused
# clearly ("not supported by this version yet") rather than ignored.
DOCUMENT_KINDS = ("flows", "segments", "templates", "rules", "experiments")

_REGISTRY: list[Section] = [FlowsSection(), SegmentsSection()]


def register_section(section: Section) -> None:
    """Add ``section`` after those registered so far (it may name their objects).

    Called from an app's ``AppConfig.ready()``; registering the same key again replaces the
    section in place (tests and autoreload may run ``ready()`` twice).
    """
    for index, existing in enumerate(_REGISTRY):
        if existing.key == section.key:
            _REGISTRY[index] = section
            return
    _REGISTRY.append(section)


def registered_sections() -> tuple[Section, ...]:
    """The sections, in dependency order: validated, applied and exported in this order."""
    return tuple(_REGISTRY)


def not_yet_supported() -> tuple[str, ...]:
    """Kinds DESIGN §3.4 names that no registered section imports yet."""
    known = {section.key for section in _REGISTRY}
    return tuple(kind for kind in DOCUMENT_KINDS if kind not in known)
