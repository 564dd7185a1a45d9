"""Writes to rules: every definition change is a new immutable version, every change audited."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from onboarding.configfile.errors import Problem
from onboarding.models import OnboardingFlow, Segment
from triggers.models import MessageTemplate, Rule, RuleState, RuleStatus, RuleVersion
from triggers.rules.spec import RuleSpec, parse_rule

from .audit import audit
from .usage import lock_named, rule_references


class DatabaseCatalog:
    """The spec validator's view of flows, templates and segments, from the database.

    Archived ones are offered only with ``allow_archived`` (an archived rule may keep naming
    them); otherwise they answer "no such …" and ``archived`` lets the problem say why.
    """

    def __init__(self, *, allow_archived: bool = False) -> None:
        self.allow_archived = allow_archived
        self.all_archived: set[tuple[str, str]] = set()
        self._flows: dict[str, tuple[int, int]] = {}
        for flow in OnboardingFlow.objects.prefetch_related("steps"):
            self._flows[flow.slug] = (flow.window_seconds, len(flow.steps.all()))
            if flow.archived_at is not None:
                self.all_archived.add(("flow", flow.slug))
        self._templates: dict[str, str] = {}
        for slug, channel, archived_at in MessageTemplate.objects.values_list(
            "slug", "channel", "archived_at"
        ):
            self._templates[slug] = channel
            if archived_at is not None:
                self.all_archived.add(("template", slug))
        self._segments: set[str] = set()
        for slug, archived_at in Segment.objects.values_list("slug", "archived_at"):
            self._segments.add(slug)
            if archived_at is not None:
                self.all_archived.add(("segment", slug))

    @property
    def archived(self) -> set[tuple[str, str]]:
        """(kind, slug) of the archived objects this catalog does not offer."""
        return set() if self.allow_archived else self.all_archived

    def flow_steps(self, flow_slug: str) -> int | None:
        if flow_slug not in self._flows or ("flow", flow_slug) in self.archived:
            return None
        return self._flows[flow_slug][1]

    def flow_window(self, flow_slug: str) -> int | None:
        if flow_slug not in self._flows or ("flow", flow_slug) in self.archived:
            return None
        return self._flows[flow_slug][0]

    def template_channel(self, template_slug: str) -> str | None:
        if ("template", template_slug) in self.archived:
            return None
        return self._templates.get(template_slug)

    def has_segment(self, segment_slug: str) -> bool:
        return segment_slug in self._segments and ("segment", segment_slug) not in self.archived


class RuleInvalid(ValidationError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__([str(p) for p in problems])
        self.problems = problems


def rule_validate(definition: Any, *, allow_archived: bool = False) -> RuleSpec:
    """The rule's spec; an archived rule (``allow_archived``) may name archived objects."""
    spec, problems = parse_rule(definition, DatabaseCatalog(allow_archived=allow_archived))
    if spec is None:
        raise RuleInvalid(problems)
    return spec


@transaction.atomic
def rule_save(
    *,
    slug: str,
    name: str,
    definition: dict[str, Any],
    priority: int = 0,
    status: str | None = None,
    shadow: bool | None = None,
    actor: Any = None,
) -> tuple[Rule, bool]:
    """Create or update a rule. A new version is made only when the definition changes."""
    lock_named(**rule_references(definition))  # not archived or deleted while this is saved
    rule = Rule.objects.select_for_update().filter(slug=slug).first()
    becomes = status or (rule.status if rule is not None else RuleStatus.DRAFT)
    spec = rule_validate(definition, allow_archived=becomes == RuleStatus.ARCHIVED)
    canonical = spec.to_definition()
    created = rule is None
    if rule is None:
        rule = Rule(slug=slug, name=name, priority=priority, status=status or RuleStatus.DRAFT)
        rule.full_clean(exclude=["current_version"])
        rule.save()
    changes: dict[str, Any] = {}
    fields = [("name", name), ("priority", priority)]
    if shadow is not None:
        fields.append(("shadow", shadow))
        if created:
            rule.shadow = shadow
    for field, value in fields:
        if not created and getattr(rule, field) != value:
            changes[field] = [getattr(rule, field), value]
            setattr(rule, field, value)
    current = rule.current_version.definition if rule.current_version else None
    if current != canonical:
        number = (
            rule.versions.order_by("-number").values_list("number", flat=True).first() or 0
        ) + 1
        rule.current_version = RuleVersion.objects.create(
            rule=rule, number=number, definition=canonical, created_by=_user(actor)
        )
        changes["version"] = [number - 1 or None, number]
    if status is not None and status != rule.status and not created:
        changes["status"] = [rule.status, status]
        _apply_status(rule, status)
    if created or changes:
        rule.full_clean()
        rule.save()
        audit(actor=actor, action="create" if created else "update", obj=rule, changes=changes)
    if created and rule.status == RuleStatus.ACTIVE:
        _apply_status(rule, RuleStatus.ACTIVE)
        rule.save()
    return rule, created or bool(changes)


def _user(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) else None


def _apply_status(rule: Rule, status: str) -> None:
    if status not in RuleStatus.values:
        raise ValidationError({"status": [f"must be one of {', '.join(RuleStatus.values)}"]})
    if status == RuleStatus.ACTIVE:
        if rule.current_version is None:
            raise ValidationError({"status": ["a rule needs a saved definition to be activated"]})
        definition = rule.current_version.definition
        lock_named(**rule_references(definition))
        rule_validate(definition)  # the world may have changed since
        # Detection looks forward from activation; pausing and resuming skips the pause.
        RuleState.objects.update_or_create(rule=rule, defaults={"checked_until": timezone.now()})
    rule.status = status


@transaction.atomic
def rule_set_status(*, rule: Rule, status: str, actor: Any = None) -> Rule:
    rule = Rule.objects.select_for_update().get(pk=rule.pk)
    if rule.status == status:
        return rule
    before = rule.status
    _apply_status(rule, status)
    rule.save(update_fields=["status", "updated_at"])
    audit(actor=actor, action=f"status:{status}", obj=rule, changes={"status": [before, status]})
    return rule
