"""Writes to experiments: save (a new phase when a running one changes), start, stop, ship."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from onboarding.configfile.durations import DurationError, parse_duration
from onboarding.models import OnboardingFlow
from triggers.models import Experiment, ExperimentStatus, Rule, RuleStatus, Variant
from triggers.rules.spec import parse_follow_ups

from .audit import audit
from .rules import DatabaseCatalog, rule_save, rule_set_status
from .usage import lock_named


def experiment_validate(
    *, rule: Rule | None, variants: list[dict[str, Any]], metric: dict[str, Any]
) -> list[tuple[str, str]]:
    """Problems as (path, message); empty when the experiment can run."""
    problems: list[tuple[str, str]] = []
    if rule is None:
        problems.append(("rule", "no rule with that slug"))
    if not isinstance(variants, list) or len(variants) < 2:
        problems.append(("variants", "at least two arms (e.g. a variant and a holdout)"))
        variants = variants if isinstance(variants, list) else []
    names = set()
    holdouts = 0
    catalog = DatabaseCatalog()
    for index, variant in enumerate(variants):
        path = f"variants[{index}]"
        if not isinstance(variant, dict):
            problems.append((path, "must be a mapping with name and weight"))
            continue
        unknown = set(variant) - {"name", "weight", "holdout", "follow_ups"}
        for key in sorted(unknown):
            problems.append((f"{path}.{key}", "is not a field of a variant"))
        name = variant.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            problems.append((f"{path}.name", "required, at most 64 characters"))
        elif name in names:
            problems.append((f"{path}.name", f"{name!r} is used twice"))
        names.add(name)
        weight = variant.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight <= 0:
            problems.append((f"{path}.weight", "must be a positive integer"))
        holdout = variant.get("holdout", False)
        if not isinstance(holdout, bool):
            problems.append((f"{path}.holdout", "must be true or false"))
        holdouts += bool(holdout)
        if variant.get("follow_ups"):
            if holdout:
                problems.append((f"{path}.follow_ups", "a holdout sends nothing"))
            else:
                _, found = parse_follow_ups(
                    variant["follow_ups"], catalog, path=f"{path}.follow_ups"
                )
                problems.extend((p.path, p.message) for p in found)
    if holdouts > 1:
        problems.append(("variants", "at most one holdout arm"))
    if not isinstance(metric, dict):
        problems.append(("metric", "must be {flow: <slug>, completed_within: <duration>}"))
        return problems
    flow = metric.get("flow")
    if not isinstance(flow, str) or not OnboardingFlow.objects.filter(slug=flow).exists():
        problems.append(("metric.flow", f"no flow with slug {flow!r}"))
    elif ("flow", flow) in catalog.archived:  # the catalog above: archived ones refused
        problems.append(("metric.flow", f"flow {flow!r} is archived: restore it or choose another"))
    try:
        if parse_duration(metric.get("completed_within")) <= 0:
            problems.append(("metric.completed_within", "must be longer than 0s"))
    except DurationError as error:
        problems.append(("metric.completed_within", str(error)))
    if metric.get("reengaged_within") is not None:
        try:
            parse_duration(metric["reengaged_within"])
        except DurationError as error:
            problems.append(("metric.reengaged_within", str(error)))
    for key in sorted(set(metric) - {"flow", "completed_within", "reengaged_within"}):
        problems.append((f"metric.{key}", "is not a field of the metric"))
    return problems


def _raise(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise ValidationError({path or "__all__": [message] for path, message in problems})


def _variant_state(experiment: Experiment) -> list[dict[str, Any]]:
    return [
        {"name": v.name, "weight": v.weight, "holdout": v.holdout, "follow_ups": v.follow_ups}
        for v in experiment.variants.order_by("position")
    ]


@transaction.atomic
def experiment_save(
    *,
    slug: str,
    rule_slug: str,
    variants: list[dict[str, Any]],
    metric: dict[str, Any],
    planned_users_per_arm: int | None = None,
    actor: Any = None,
) -> tuple[Experiment, bool]:
    """Create or update an experiment. Changing the arms of a running one starts a new phase with a
    new seed; people already assigned keep their arm and are analysed in their own phase."""
    arms = variants if isinstance(variants, list) else []
    lock_named(
        flows=[metric.get("flow")] if isinstance(metric, dict) else [],
        templates=[
            item.get("template")
            for variant in arms
            if isinstance(variant, dict) and isinstance(variant.get("follow_ups"), list)
            for item in variant["follow_ups"]
            if isinstance(item, dict)
        ],
    )
    rule = Rule.objects.filter(slug=rule_slug).first()
    _raise(experiment_validate(rule=rule, variants=variants, metric=metric))
    normalized = [
        {
            "name": v["name"],
            "weight": v["weight"],
            "holdout": bool(v.get("holdout", False)),
            "follow_ups": v.get("follow_ups") or [],
        }
        for v in variants
    ]
    experiment = Experiment.objects.select_for_update().filter(slug=slug).first()
    created = experiment is None
    if experiment is None:
        experiment = Experiment(slug=slug, rule=rule, seed=secrets.token_hex(8))
    elif experiment.rule_id != rule.pk:
        raise ValidationError({"rule": ["an experiment cannot move to another rule"]})
    before = (
        None if created else {"variants": _variant_state(experiment), "metric": experiment.metric}
    )
    after = {"variants": normalized, "metric": metric}
    if before == after and experiment.planned_users_per_arm == planned_users_per_arm:
        return experiment, False
    if (
        not created
        and experiment.status == ExperimentStatus.RUNNING
        and before["variants"] != normalized
    ):
        experiment.phase += 1
        experiment.seed = secrets.token_hex(8)
    experiment.metric = metric
    experiment.planned_users_per_arm = planned_users_per_arm
    experiment.full_clean(exclude=["rule", "shipped_variant"])
    experiment.save()
    if before is None or before["variants"] != normalized:
        existing = {v.name: v for v in experiment.variants.all()}
        for position, data in enumerate(normalized):
            variant = existing.pop(data["name"], None) or Variant(
                experiment=experiment, name=data["name"]
            )
            variant.position, variant.weight = position, data["weight"]
            variant.holdout, variant.follow_ups = data["holdout"], data["follow_ups"]
            variant.save()
        # Arms removed from the design keep their rows while people are assigned to them.
        for stale in existing.values():
            if not stale.assignments.exists():
                stale.delete()
    audit(
        actor=actor,
        action="create" if created else "update",
        obj=experiment,
        changes={
            "phase": experiment.phase,
            **({} if created else {"before": before, "after": after}),
        },
    )
    return experiment, True


@transaction.atomic
def experiment_set_status(*, experiment: Experiment, status: str, actor: Any = None) -> Experiment:
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    if status == experiment.status:
        return experiment
    if status not in ExperimentStatus.values:
        raise ValidationError({"status": [f"must be one of {', '.join(ExperimentStatus.values)}"]})
    if status == ExperimentStatus.RUNNING:
        if experiment.status == ExperimentStatus.STOPPED and experiment.shipped_variant_id:
            raise ValidationError(
                {"status": ["a shipped experiment cannot run again; copy it to test again"]}
            )
        other = Experiment.objects.filter(rule=experiment.rule, status=ExperimentStatus.RUNNING)
        if other.exclude(pk=experiment.pk).exists():
            raise ValidationError({"status": ["this rule already runs another experiment"]})
        if experiment.status == ExperimentStatus.STOPPED:
            # Starting again is a new phase with a new seed: people assigned before keep their
            # arm and are analysed in their own phase; the new phase starts counting from zero.
            experiment.phase += 1
            experiment.seed = secrets.token_hex(8)
            experiment.stopped_at = None
        experiment.started_at = experiment.started_at or timezone.now()
    if status == ExperimentStatus.STOPPED:
        experiment.stopped_at = timezone.now()
    before = experiment.status
    experiment.status = status
    experiment.save()
    changes: dict[str, Any] = {"status": [before, status]}
    if before == ExperimentStatus.STOPPED:
        changes["phase"] = experiment.phase
    audit(actor=actor, action=f"status:{status}", obj=experiment, changes=changes)
    return experiment


@transaction.atomic
def experiment_ship(*, experiment: Experiment, variant_name: str, actor: Any = None) -> Experiment:
    """Make the rule use one arm's follow-ups for everyone (a new rule version), or, for the
    holdout, pause the rule (stop sending); stops the test."""
    experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
    variant = experiment.variants.filter(name=variant_name).first()
    if variant is None:
        raise ValidationError({"variant": [f"no arm named {variant_name!r}"]})
    if experiment.status == ExperimentStatus.RUNNING:
        experiment_set_status(experiment=experiment, status=ExperimentStatus.STOPPED, actor=actor)
        experiment.refresh_from_db()
    rule = experiment.rule
    if variant.holdout:
        # "Stop sending": nothing beat sending nothing, so the rule stops (paused, not archived:
        # its history and definition stay, and it can be resumed).
        rule_set_status(rule=rule, status=RuleStatus.PAUSED, actor=actor)
    elif variant.follow_ups:
        definition = {**rule.current_version.definition, "follow_ups": variant.follow_ups}
        rule_save(
            slug=rule.slug,
            name=rule.name,
            definition=definition,
            priority=rule.priority,
            actor=actor,
        )
    experiment.shipped_variant = variant
    experiment.save(update_fields=["shipped_variant", "updated_at"])
    audit(actor=actor, action="ship", obj=experiment, changes={"variant": variant.name})
    return experiment
