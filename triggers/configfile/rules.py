"""The ``rules:`` section: a rule's own fields plus its definition (a new RuleVersion when it changed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError

from onboarding.configfile.errors import join_path
from onboarding.configfile.sections import ImportContext, Section, Spec
from onboarding.configfile.yamlio import Inline
from onboarding.models import OnboardingFlow, Segment
from onboarding.services.flows import SaveStatus
from triggers.configfile.common import IMPORT_ACTOR, ImportCatalog, under
from triggers.models import MessageTemplate, Rule
from triggers.rules.spec import STATUSES, parse_rule
from triggers.services.rules import rule_save
from triggers.services.usage import usage_of

# The rule's own fields; every other key of a rule item is its definition (a RuleVersion).
RULE_FIELDS = ("slug", "name", "status", "priority", "shadow")
DEFINITION_KEYS = (
    "trigger",
    "segment",
    "follow_ups",
    "exit_when",
    "reentry",
    "quiet_hours",
    "cap",
    "fallback",
)
# Export order, as in DESIGN §3.4.
RULE_KEYS = (
    "slug",
    "name",
    "status",
    "trigger",
    "segment",
    "follow_ups",
    "exit_when",
    "reentry",
    "priority",
    "shadow",
    "quiet_hours",
    "cap",
    "fallback",
)
_INLINE = ("trigger", "reentry", "quiet_hours", "cap", "fallback")
_PRIORITY_RANGE = (-(2**31), 2**31 - 1)


_ARCHIVABLE = (
    ("flows", "flow", OnboardingFlow),
    ("segments", "segment", Segment),
    ("templates", "template", MessageTemplate),
)


def _check_archiving(context: ImportContext) -> None:
    """A file may archive a flow, segment or template only if nothing live in the database still
    uses it: the dashboard's rule (triggers.services.lifecycle). Rules and segments the file
    defines itself are checked where they are (an active rule naming an archived template, say)."""
    redefined = {
        kind: set(context.defined.get(key, {}))
        for key, kind in (("rules", "rule"), ("segments", "segment"), ("experiments", "experiment"))
    }
    for key, label, model in _ARCHIVABLE:
        for slug, values in context.defined.get(key, {}).items():
            if not values.get("archived"):
                continue
            existing = model.objects.filter(slug=slug, archived_at=None).first()
            if existing is None:
                continue
            for place in usage_of(existing).live:
                if place.slug in redefined.get(place.kind, set()):
                    continue
                context.fail(
                    f"{key}.{slug}.archived",
                    f"{label} {slug!r} is still used by {place.kind} {place.name!r} "
                    f"({place.detail}): change that first",
                )


class RulesSection(Section):
    key = "rules"
    label = "rule"
    item_keys = RULE_KEYS

    def validate(self, items: Any, context: ImportContext) -> list[Spec]:
        context.state[self.key] = ImportCatalog(context)
        specs = super().validate(items, context)
        _check_archiving(context)
        return specs

    def validate_item(self, item: Mapping, path: str, context: ImportContext) -> dict[str, Any]:
        slug = item.get("slug")
        name = item.get("name")
        if name is None:
            context.fail(join_path(path, "name"), "required")
        elif not isinstance(name, str) or not name.strip():
            context.fail(join_path(path, "name"), "must be a non-empty string")
        status = item.get("status")
        if status is None:
            context.fail(join_path(path, "status"), f"required: one of {', '.join(STATUSES)}")
        elif status not in STATUSES:
            context.fail(join_path(path, "status"), f"must be one of {', '.join(STATUSES)}")
        priority = item.get("priority", 0)
        low, high = _PRIORITY_RANGE
        if isinstance(priority, bool) or not isinstance(priority, int):
            context.fail(join_path(path, "priority"), "must be an integer")
            priority = 0
        elif not low <= priority <= high:
            context.fail(join_path(path, "priority"), f"must be between {low} and {high}")
            priority = 0
        shadow = item.get("shadow", False)
        if not isinstance(shadow, bool):
            context.fail(join_path(path, "shadow"), "must be true or false")
            shadow = False
        # Model-level checks (slug format, name length) for what is not reported already.
        rule = Rule(
            slug=slug if isinstance(slug, str) else "placeholder",
            name=name if isinstance(name, str) and name.strip() else "placeholder",
            priority=priority,
        )
        try:
            rule.full_clean(
                exclude=["current_version", "status"],
                validate_unique=False,
                validate_constraints=False,
            )
        except ValidationError as error:
            for field, messages in error.message_dict.items():
                for message in messages:
                    context.fail(join_path(path, field), message)

        definition = {key: item[key] for key in DEFINITION_KEYS if key in item}
        catalog = context.state[self.key]
        catalog.allow_archived = status == "archived"  # an archived rule may name archived ones
        try:
            spec, problems = parse_rule(definition, catalog)
        finally:
            catalog.allow_archived = False
        context.problems += under(path, problems)
        return {
            "slug": slug,
            "name": name,
            "status": status,
            "priority": priority,
            "shadow": shadow,
            "definition": spec.to_definition() if spec is not None else None,
        }

    def status(self, spec: Spec, context: ImportContext) -> SaveStatus:
        values = spec.values
        rule = Rule.objects.select_related("current_version").filter(slug=spec.slug).first()
        if rule is None:
            return "created"
        current = rule.current_version.definition if rule.current_version else None
        same = (rule.name, rule.status, rule.priority, rule.shadow, current) == (
            values["name"],
            values["status"],
            values["priority"],
            values["shadow"],
            values["definition"],
        )
        return "unchanged" if same else "updated"

    def apply(self, spec: Spec, context: ImportContext) -> SaveStatus:
        status = self.status(spec, context)
        if status != "unchanged":
            rule_save(**spec.values, actor=IMPORT_ACTOR)
        return status

    def export(self) -> list[dict[str, Any]]:
        rules = []
        for rule in Rule.objects.select_related("current_version").order_by("slug"):
            definition: dict[str, Any] = {}
            if rule.current_version is not None:
                stored = rule.current_version.definition
                spec, _ = parse_rule(stored)
                # Canonical when it parses; otherwise as stored, and import will report it.
                definition = spec.to_definition() if spec is not None else dict(stored)
            data: dict[str, Any] = {
                "slug": rule.slug,
                "name": rule.name,
                "status": rule.status,
                **definition,
                "priority": rule.priority,
            }
            if rule.shadow:  # written only when on, so files without it stay as they are
                data["shadow"] = True
            for key in _INLINE:
                if isinstance(data.get(key), dict):
                    data[key] = Inline(data[key])
            if isinstance(data.get("follow_ups"), list):
                data["follow_ups"] = [
                    Inline(f) if isinstance(f, dict) else f for f in data["follow_ups"]
                ]
            ordered = {key: data[key] for key in RULE_KEYS if key in data}
            ordered.update({key: value for key, value in data.items() if key not in ordered})
            rules.append(ordered)
        return rules


VARIANT_KEYS = ("name", "weight", "follow_ups", "holdout")
METRIC_KEYS = ("flow", "completed_within", "reengaged_within")
