"""The ``experiments:`` section: arms, weights and metric; unchanged experiments are left alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError

from onboarding.configfile.durations import DurationError, format_duration, parse_duration
from onboarding.configfile.errors import join_path
from onboarding.configfile.sections import ImportContext, Section, Spec
from onboarding.configfile.yamlio import Inline
from onboarding.services.flows import SaveStatus
from triggers.configfile.common import IMPORT_ACTOR, ImportCatalog
from triggers.configfile.rules import RulesSection
from triggers.models import Experiment, ExperimentStatus, Rule
from triggers.rules.spec import parse_follow_ups
from triggers.services.experiments import (
    experiment_save,
    experiment_set_status,
    experiment_validate,
)

EXPERIMENT_KEYS = ("slug", "rule", "status", "variants", "metric", "planned_users_per_arm")


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

        catalog.allow_archived = status == ExperimentStatus.STOPPED  # its results stay readable
        try:
            variants, follow_ups = self._variants(item.get("variants"), path, catalog, context)
        finally:
            catalog.allow_archived = False
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
        if (
            existing is not None
            and existing.status == ExperimentStatus.STOPPED
            and existing.shipped_variant_id
        ):
            context.fail(
                join_path(path, "status"),
                "a shipped experiment cannot run again; copy it to test again",
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
