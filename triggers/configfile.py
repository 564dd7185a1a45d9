"""The ``templates:``, ``rules:`` and ``experiments:`` sections of the configuration file (DESIGN §3.4).

Registered into :mod:`onboarding.configfile` from :meth:`triggers.apps.TriggersConfig.ready`, so
``onboarding`` never imports ``triggers``. Validation uses the same checks as the services
(Liquid at save time, :func:`~triggers.rules.spec.parse_rule`) with every path prefixed by the
item's place in the file (``rules[2].trigger.minutes: must be a positive integer``); a rule may
name flows, segments and templates defined earlier in the same file. Applying goes through
:func:`~triggers.services.templates.template_save` and :func:`~triggers.services.rules.rule_save`,
so versions and the audit log are the same as for an edit in the dashboard (actor: ``import``).
Experiments go through :func:`~triggers.services.experiments.experiment_save` and
:func:`~triggers.services.experiments.experiment_set_status`: an unchanged experiment is left
alone (no new phase), and changed arms of a running one start a new phase as in the dashboard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError

from onboarding.configfile.durations import DurationError, format_duration, parse_duration
from onboarding.configfile.errors import Problem, join_path
from onboarding.configfile.sections import ImportContext, Section, Spec
from onboarding.configfile.yamlio import Inline, Literal
from onboarding.services.flows import SaveStatus
from triggers.models import Experiment, ExperimentStatus, MessageTemplate, Rule
from triggers.rules.spec import CHANNELS, STATUSES, parse_follow_ups, parse_rule
from triggers.services.experiments import (
    experiment_save,
    experiment_set_status,
    experiment_validate,
)
from triggers.services.rules import DatabaseCatalog, rule_save
from triggers.services.templates import template_save, template_validate

IMPORT_ACTOR = "import"  # the audit log's actor label for changes made by ``onramp import``

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


def _under(path: str, problems: list[Problem]) -> list[Problem]:
    return [Problem(join_path(path, p.path) if p.path else path, p.message) for p in problems]


class _AnyChannel(str):
    """The channel of a template defined in the file with an invalid channel of its own.

    It matches every follow-up, so that one mistake is reported once (at the template), not again
    at each rule that uses the template.
    """

    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False


class ImportCatalog:
    """The validator's view of flows, segments and templates as they will be once the file is
    applied: the database, overlaid with what the file defines (even where that is invalid, so a
    mistake is reported where it is, not again where it is used)."""

    # A flow in the file whose steps are invalid: its step count is unknown, so any step number
    # passes here; the flow's own problems are reported.
    UNKNOWN_STEPS = 10**6

    def __init__(self, context: ImportContext) -> None:
        self.database = DatabaseCatalog()
        self.context = context

    def _file(self, key: str) -> dict[str, dict[str, Any]]:
        return self.context.defined.get(key, {})

    def flow_steps(self, flow_slug: str) -> int | None:
        if flow_slug in self._file("flows"):
            return self.context.flows.get(flow_slug) or self.UNKNOWN_STEPS
        return self.database.flow_steps(flow_slug)

    def flow_window(self, flow_slug: str) -> int | None:
        values = self._file("flows").get(flow_slug)
        if values is not None:
            return values.get("window_seconds")
        return self.database.flow_window(flow_slug)

    def template_channel(self, template_slug: str) -> str | None:
        values = self._file("templates").get(template_slug)
        if values is None:
            return self.database.template_channel(template_slug)
        channel = values.get("channel")
        return channel if channel in CHANNELS else _AnyChannel(channel or "")

    def has_segment(self, segment_slug: str) -> bool:
        return segment_slug in self._file("segments") or self.database.has_segment(segment_slug)


class TemplatesSection(Section):
    key = "templates"
    label = "template"
    item_keys = ("slug", "channel", "subject", "body")

    def validate_item(self, item: Mapping, path: str, context: ImportContext) -> dict[str, Any]:
        channel = item.get("channel")
        if channel is None:
            context.fail(join_path(path, "channel"), "required")
        elif channel not in CHANNELS:
            context.fail(join_path(path, "channel"), f"must be one of {', '.join(CHANNELS)}")
        texts: dict[str, str] = {}
        for field in ("subject", "body"):
            value = item.get(field)
            if value is None:
                if field == "body":
                    context.fail(join_path(path, field), "required")
                elif channel == "email":
                    context.fail(join_path(path, field), "required for an email template")
            elif not isinstance(value, str):
                context.fail(join_path(path, field), "must be a string")
            else:
                texts[field] = value
        subject, body = texts.get("subject", ""), texts.get("body", "")
        slug = item.get("slug")
        errors: dict[str, list[str]] = {}
        try:
            template_validate(
                channel=channel if channel in CHANNELS else "", subject=subject, body=body
            )
        except ValidationError as error:
            errors = error.message_dict
        # Model-level checks (slug format, subject length) for what is not reported already.
        template = MessageTemplate(
            slug=slug if isinstance(slug, str) else "placeholder",
            channel=channel if channel in CHANNELS else "email",
            subject=subject,
            body=body or "placeholder",
        )
        try:
            template.full_clean(validate_unique=False, validate_constraints=False)
        except ValidationError as error:
            for field, messages in error.message_dict.items():
                errors.setdefault(field, []).extend(messages)
        for field, messages in errors.items():
            if field in ("subject", "body") and field not in texts:
                continue  # reported above: missing or not a string
            for message in dict.fromkeys(messages):
                context.fail(join_path(path, field), message)
        return {"slug": slug, "channel": channel, "subject": subject, "body": body}

    def status(self, spec: Spec, context: ImportContext) -> SaveStatus:
        values = spec.values
        template = MessageTemplate.objects.filter(slug=spec.slug).first()
        if template is None:
            return "created"
        same = (template.channel, template.subject, template.body) == (
            values["channel"],
            values["subject"],
            values["body"],
        )
        return "unchanged" if same else "updated"

    def apply(self, spec: Spec, context: ImportContext) -> SaveStatus:
        status = self.status(spec, context)
        if status != "unchanged":
            template_save(**spec.values, actor=IMPORT_ACTOR)
        return status

    def export(self) -> list[dict[str, Any]]:
        templates = []
        for template in MessageTemplate.objects.order_by("slug"):
            data: dict[str, Any] = {"slug": template.slug, "channel": template.channel}
            if template.subject:
                data["subject"] = template.subject
            data["body"] = Literal(template.body)
            templates.append(data)
        return templates


class RulesSection(Section):
    key = "rules"
    label = "rule"
    item_keys = RULE_KEYS

    def validate(self, items: Any, context: ImportContext) -> list[Spec]:
        context.state[self.key] = ImportCatalog(context)
        return super().validate(items, context)

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
        spec, problems = parse_rule(definition, context.state[self.key])
        context.problems += _under(path, problems)
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


EXPERIMENT_KEYS = ("slug", "rule", "status", "variants", "metric", "planned_users_per_arm")
VARIANT_KEYS = ("name", "weight", "follow_ups", "holdout")
METRIC_KEYS = ("flow", "completed_within", "reengaged_within")


def _canonical_metric(metric: Mapping) -> dict[str, Any]:
    """Durations in their canonical spelling (``336h`` → ``14d``), keys in export order."""
    out: dict[str, Any] = {"flow": metric.get("flow")}
    for key in ("completed_within", "reengaged_within"):
        if metric.get(key) is not None:
            out[key] = format_duration(parse_duration(metric[key]))
    return out


def _canonical_variant(variant: Mapping, follow_ups: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": variant["name"], "weight": variant["weight"]}
    if follow_ups:
        out["follow_ups"] = follow_ups
    if variant.get("holdout"):
        out["holdout"] = True
    return out


class ExperimentsSection(Section):
    key = "experiments"
    label = "experiment"
    item_keys = EXPERIMENT_KEYS

    def validate(self, items: Any, context: ImportContext) -> list[Spec]:
        context.state.setdefault(RulesSection.key, ImportCatalog(context))
        context.state[self.key] = {}  # rule slug → path of the experiment the file runs on it
        return super().validate(items, context)

    def validate_item(self, item: Mapping, path: str, context: ImportContext) -> dict[str, Any]:
        catalog: ImportCatalog = context.state[RulesSection.key]
        slug = item.get("slug")
        existing = (
            Experiment.objects.select_related("rule").filter(slug=slug).first()
            if isinstance(slug, str)
            else None
        )
        if isinstance(slug, str):
            try:
                Experiment(slug=slug, seed="x").clean_fields(
                    exclude=[f.name for f in Experiment._meta.fields if f.name != "slug"]
                )
            except ValidationError as error:
                for message in error.message_dict.get("slug", []):
                    context.fail(join_path(path, "slug"), message)

        rule_slug = item.get("rule")
        rule_known = isinstance(rule_slug, str) and (
            rule_slug in context.defined.get("rules", {})
            or Rule.objects.filter(slug=rule_slug).exists()
        )
        if rule_slug is None:
            context.fail(join_path(path, "rule"), "required")
        elif not rule_known:
            context.fail(join_path(path, "rule"), f"no rule with slug {rule_slug!r}")
        elif existing is not None and existing.rule.slug != rule_slug:
            context.fail(
                join_path(path, "rule"),
                f"an experiment cannot move to another rule (it tests {existing.rule.slug!r})",
            )

        status = item.get("status", ExperimentStatus.DRAFT)
        if status not in ExperimentStatus.values:
            context.fail(
                join_path(path, "status"), f"must be one of {', '.join(ExperimentStatus.values)}"
            )
        elif status == ExperimentStatus.RUNNING:
            self._check_running(path, rule_slug, existing, context)

        planned = item.get("planned_users_per_arm")
        if planned is not None and (
            isinstance(planned, bool) or not isinstance(planned, int) or planned <= 0
        ):
            context.fail(join_path(path, "planned_users_per_arm"), "must be a positive integer")

        variants, follow_ups = self._variants(item.get("variants"), path, catalog, context)
        metric = item.get("metric")
        metric_check = metric
        if isinstance(metric, Mapping) and metric.get("flow") in context.flows:
            # A flow defined in this file is not in the database yet.
            metric_check = {**metric, "flow": None}
        problems = experiment_validate(
            rule=Rule(slug="placeholder"),
            variants=[
                {k: v for k, v in variant.items() if k != "follow_ups"} for variant in variants
            ]
            if isinstance(variants, list)
            else variants,
            metric=dict(metric_check) if isinstance(metric_check, Mapping) else metric_check,
        )
        for problem_path, message in problems:
            if problem_path == "metric.flow" and metric_check is not metric:
                continue
            context.fail(join_path(path, problem_path), message)

        values: dict[str, Any] = {
            "slug": slug,
            "rule_slug": rule_slug,
            "status": status,
            "planned_users_per_arm": planned,
            "variants": None,
            "metric": None,
        }
        try:
            values["metric"] = _canonical_metric(metric)  # type: ignore[arg-type]
            values["variants"] = [
                _canonical_variant(v, f) for v, f in zip(variants, follow_ups, strict=True)
            ]
        except (AttributeError, DurationError, KeyError, TypeError):
            pass  # reported above; the spec is dropped
        return values

    def _variants(
        self, data: Any, path: str, catalog: ImportCatalog, context: ImportContext
    ) -> tuple[Any, list[list[dict[str, Any]]]]:
        """The variants as written, and each one's canonical follow-ups (checked here against
        the templates as they will be once the file is applied)."""
        if not isinstance(data, list):
            return data, []
        follow_ups: list[list[dict[str, Any]]] = []
        for index, variant in enumerate(data):
            variant_path = join_path(join_path(path, "variants"), index)
            sequence = variant.get("follow_ups") if isinstance(variant, Mapping) else None
            if not sequence:
                follow_ups.append([])
                continue
            if variant.get("holdout"):
                context.fail(join_path(variant_path, "follow_ups"), "a holdout sends nothing")
                follow_ups.append([])
                continue
            parsed, problems = parse_follow_ups(
                sequence, catalog, path=join_path(variant_path, "follow_ups")
            )
            context.problems += problems
            follow_ups.append([f.to_definition() for f in parsed])
        return data, follow_ups

    def _check_running(
        self, path: str, rule_slug: Any, existing: Experiment | None, context: ImportContext
    ) -> None:
        running_here: dict[str, str] = context.state[self.key]
        if not isinstance(rule_slug, str):
            return
        if rule_slug in running_here:
            context.fail(
                join_path(path, "status"),
                f"rule {rule_slug!r} already runs {running_here[rule_slug]} in this file",
            )
            return
        running_here[rule_slug] = path
        if existing is not None and existing.status == ExperimentStatus.STOPPED:
            context.fail(
                join_path(path, "status"), "a stopped experiment cannot run again; copy it"
            )
        others = Experiment.objects.filter(
            rule__slug=rule_slug, status=ExperimentStatus.RUNNING
        ).exclude(slug=existing.slug if existing else None)
        stopped_earlier = {
            slug
            for slug, values in context.defined.get(self.key, {}).items()
            if values.get("status") != ExperimentStatus.RUNNING
        }
        for other in others:
            if other.slug not in stopped_earlier:
                context.fail(
                    join_path(path, "status"),
                    f"rule {rule_slug!r} already runs experiment {other.slug!r} "
                    "(stop it earlier in the file)",
                )

    def status(self, spec: Spec, context: ImportContext) -> SaveStatus:
        values = spec.values
        experiment = Experiment.objects.filter(slug=spec.slug).first()
        if experiment is None:
            return "created"
        variants, metric = _stored(experiment)
        same = (experiment.status, experiment.planned_users_per_arm, metric, variants) == (
            values["status"],
            values["planned_users_per_arm"],
            values["metric"],
            values["variants"],
        )
        return "unchanged" if same else "updated"

    def apply(self, spec: Spec, context: ImportContext) -> SaveStatus:
        status = self.status(spec, context)
        if status == "unchanged":
            return status
        values = spec.values
        experiment, _ = experiment_save(
            slug=values["slug"],
            rule_slug=values["rule_slug"],
            variants=values["variants"],
            metric=values["metric"],
            planned_users_per_arm=values["planned_users_per_arm"],
            actor=IMPORT_ACTOR,
        )
        if experiment.status != values["status"]:
            experiment_set_status(
                experiment=experiment, status=values["status"], actor=IMPORT_ACTOR
            )
        return status

    def export(self) -> list[dict[str, Any]]:
        experiments = []
        for experiment in Experiment.objects.select_related("rule").order_by("slug"):
            variants, metric = _stored(experiment)
            for variant in variants:
                if "follow_ups" in variant:
                    variant["follow_ups"] = [Inline(f) for f in variant["follow_ups"]]
            item: dict[str, Any] = {
                "slug": experiment.slug,
                "rule": experiment.rule.slug,
                "status": experiment.status,
                "variants": [Inline(v) for v in variants],
                "metric": Inline(metric),
            }
            if experiment.planned_users_per_arm is not None:
                item["planned_users_per_arm"] = experiment.planned_users_per_arm
            experiments.append(item)
        return experiments


def _stored(experiment: Experiment) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """An experiment's variants and metric in the file's canonical form (durations such as
    ``72h`` written ``3d``), whichever way they were saved; as stored where they do not parse,
    so that import reports them."""
    variants = []
    for variant in experiment.variants.order_by("position"):
        follow_ups, problems = parse_follow_ups(variant.follow_ups or [])
        canonical = (
            list(variant.follow_ups) if problems else [f.to_definition() for f in follow_ups]
        )
        data = {"name": variant.name, "weight": variant.weight, "holdout": variant.holdout}
        variants.append(_canonical_variant(data, canonical))
    try:
        metric = _canonical_metric(experiment.metric or {})
    except DurationError:
        metric = dict(experiment.metric or {})
    return variants, metric


def register() -> None:
    """Add the templates, rules and experiments sections to the configuration file (after
    segments; experiments name rules)."""
    from onboarding.configfile.sections import register_section

    register_section(TemplatesSection())
    register_section(RulesSection())
    register_section(ExperimentsSection())
