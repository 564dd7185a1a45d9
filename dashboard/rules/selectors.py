"""Reads for the rule pages: the rules list, trigger summaries, version diffs, live matching counts.

Everything here is a query or a pure function of query results; nothing writes. The list runs a
fixed number of queries whatever the number of rules (rules with their state and version, one
grouped count over the decision log, the flows with their steps).
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import yaml
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from dashboard.formatting import duration_label, elapsed
from dashboard.formatting import minutes_words as _minutes
from dashboard.formatting import seconds_words as _seconds_words
from dashboard.kpis.engagement import NONE, Engagement, engagement_by
from onboarding.configfile.durations import format_duration
from onboarding.configfile.errors import ProblemsError
from onboarding.models import FlowProgress, OnboardingFlow, Person, Segment
from onboarding.segments import members_queryset
from triggers.models import DecisionLog, Rule, RuleVersion
from triggers.rules.spec import Trigger
from triggers.services.latency import measured_latency

COUNT_WINDOW = timedelta(days=7)
COUNTED_OUTCOMES = ("enrolled", "sent", "suppressed")
EVALUATE_TASK = "onramp: evaluate trigger rules"
DELIVER_TASK = "onramp: deliver due follow-ups"
DEFAULT_INTERVAL_SECONDS = 30
SAMPLE_SIZE = 10


# --- flows as the editor and the summaries need them -----------------------------------------


@dataclass(frozen=True)
class FlowInfo:
    slug: str
    name: str
    steps: tuple[str, ...]  # step names, position 1 first

    def step_label(self, number: int) -> str:
        name = self.steps[number - 1] if 0 < number <= len(self.steps) else "?"
        return f"{number} · {name}"


def flows_info(*, include_archived: bool = True) -> dict[str, FlowInfo]:
    """Every flow (or every one not archived) with its step names, in two queries."""
    flows = OnboardingFlow.objects.prefetch_related("steps")
    if not include_archived:
        flows = flows.filter(archived_at=None)
    return {
        flow.slug: FlowInfo(
            flow.slug, flow.name, tuple(s.name for s in sorted(flow.steps.all(), key=_position))
        )
        for flow in flows
    }


def _position(step: Any) -> int:
    return step.position


# --- trigger summaries ------------------------------------------------------------------------


def _duration_words(text: str | None) -> str:
    return text or "?"


def _where_words(where: dict[str, Any] | None) -> str:
    if not where:
        return ""
    return " where " + ", ".join(f"{key}={value}" for key, value in where.items())


def trigger_summary(trigger: dict[str, Any], flows: dict[str, FlowInfo]) -> str:
    """The trigger of a definition in words: "Idle 5 min at step 3 of Activation"."""
    kind = trigger.get("kind")
    flow = flows.get(trigger.get("flow") or "")
    flow_name = flow.name if flow else trigger.get("flow") or "?"
    if kind == "inactive_in_flow":
        idle = f"Idle {_minutes(trigger.get('minutes') or 0)}"
        if trigger.get("step"):
            return f"{idle} at step {trigger['step']} of {flow_name}"
        return f"{idle} anywhere in {flow_name}"
    if kind == "step_abandoned":
        return (
            f"Did step {trigger.get('did')} of {flow_name} but not step {trigger.get('missing')}"
            f" within {_duration_words(trigger.get('within'))}"
        )
    if kind == "repeated_event":
        return (
            f"{trigger.get('event')}{_where_words(trigger.get('where'))} {trigger.get('times')}"
            f" times within {_duration_words(trigger.get('within'))}"
        )
    if kind == "inactive_sessions":
        return f"{trigger.get('sessions')} sessions without progress in {flow_name}"
    if kind == "milestone":
        after = f" after completing {flow_name}" if trigger.get("flow") else ""
        return f"{trigger.get('event')}{_where_words(trigger.get('where'))} {trigger.get('times')} times{after}"
    if kind == "event":
        return f"Any {trigger.get('event')} event{_where_words(trigger.get('where'))}"
    return "—"


# --- the rules list -----------------------------------------------------------------------------


@dataclass
class RuleRow:
    rule: Rule
    summary: str
    counts: dict[str, int] = field(default_factory=dict)
    engagement: Engagement = NONE  # clicks and opens of the messages sent in COUNT_WINDOW

    @property
    def state(self) -> Any:
        return getattr(self.rule, "state", None)

    @property
    def last_tick_ago(self) -> str:
        """When the rule was last evaluated, roughly: "just now", "4 min ago", "2 h ago"."""
        at = getattr(self.state, "last_tick_at", None)
        if at is None:
            return ""
        seconds = max(0, int((timezone.now() - at).total_seconds()))
        if seconds < 60:
            return "just now"
        if seconds < 3600:
            return f"{seconds // 60} min ago"
        if seconds < 86400:
            return f"{seconds // 3600} h ago"
        return f"{seconds // 86400} d ago"

    @property
    def tick_duration(self) -> str:
        """How long the last evaluation of this rule took, e.g. "45 ms" or "1.2 s"."""
        return elapsed(getattr(self.state, "last_tick_seconds", None))


def rule_rows(*, now: datetime) -> list[RuleRow]:
    """Every rule with its status, trigger in words, 7-day counts and last evaluation."""
    rules = list(
        Rule.objects.select_related("state", "current_version").order_by("-priority", "name")
    )
    counts: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTED_OUTCOMES, 0))
    rows = (
        DecisionLog.objects.filter(at__gte=now - COUNT_WINDOW, outcome__in=COUNTED_OUTCOMES)
        .order_by()
        .values_list("rule_id", "outcome")
        .annotate(n=Count("id"))
    )
    for rule_id, outcome, n in rows:
        counts[rule_id][outcome] = n
    flows = flows_info() if rules else {}
    engagement = engagement_by("rule_id", since=now - COUNT_WINDOW, until=now) if rules else {}
    out = []
    for rule in rules:
        definition = rule.current_version.definition if rule.current_version else {}
        out.append(
            RuleRow(
                rule=rule,
                summary=trigger_summary(definition.get("trigger") or {}, flows),
                counts=counts[rule.pk],
                engagement=engagement.get(rule.pk, NONE),
            )
        )
    return out


# --- versions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add", "remove", "context", "hunk"
    text: str


@dataclass(frozen=True)
class VersionEntry:
    version: RuleVersion
    author: str
    diff: tuple[DiffLine, ...]  # against the previous version; empty for the first


def definition_yaml(definition: dict[str, Any]) -> str:
    return yaml.safe_dump(definition, sort_keys=False, allow_unicode=True, default_flow_style=False)


def definition_diff(before: dict[str, Any], after: dict[str, Any]) -> tuple[DiffLine, ...]:
    lines = difflib.unified_diff(
        definition_yaml(before).splitlines(),
        definition_yaml(after).splitlines(),
        lineterm="",
        n=1,
    )
    out = []
    for line in list(lines)[2:]:  # skip the ---/+++ file headers
        if line.startswith("@@"):
            out.append(DiffLine("hunk", "⋯"))
        elif line.startswith("+"):
            out.append(DiffLine("add", line[1:]))
        elif line.startswith("-"):
            out.append(DiffLine("remove", line[1:]))
        else:
            out.append(DiffLine("context", line[1:]))
    return tuple(out)


def rule_versions(rule: Rule, *, limit: int = 20) -> list[VersionEntry]:
    """The newest versions first, each with who made it and what changed from the one before."""
    versions = list(rule.versions.select_related("created_by").order_by("-number")[: limit + 1])
    entries = []
    for index, version in enumerate(versions[:limit]):
        previous = versions[index + 1] if index + 1 < len(versions) else None
        entries.append(
            VersionEntry(
                version=version,
                author=version.created_by.get_username() if version.created_by else "system",
                diff=definition_diff(previous.definition, version.definition) if previous else (),
            )
        )
    return entries


# --- live preview: who matches the trigger now, and how fast it is detected ------------------


@dataclass
class Population:
    """People the trigger's population covers now, and how many of them the segment keeps."""

    description: str
    count: int
    due_description: str = ""
    due_count: int | None = None
    segment_name: str = ""
    in_segment: int | None = None
    sample: list[Person] = field(default_factory=list)
    problem: str = ""


def _open_progress(flow_slug: str, now: datetime) -> QuerySet[FlowProgress]:
    return FlowProgress.objects.filter(
        flow__slug=flow_slug, completed_at__isnull=True, window_ends_at__gt=now
    )


def _people_with(progress: QuerySet[FlowProgress]) -> QuerySet[Person]:
    return Person.objects.filter(Exists(progress.filter(person_id=OuterRef("pk"))))


def _behaviour(event: str, where: dict[str, Any], *, times: int = 1, within: int | None = None):
    condition: dict[str, Any] = {"event": event}
    if where:
        condition["where"] = where
    if times > 1:
        condition["count"] = {"op": "gte", "value": times}
    if within:
        condition["within"] = format_duration(within)
    return condition


def _population_queryset(
    trigger: Trigger, flows: dict[str, FlowInfo], now: datetime
) -> tuple[str, QuerySet[Person], str, QuerySet[Person] | None]:
    """(what the population is, its people, what "due now" means, the due subset)."""
    flow = flows.get(trigger.flow or "")
    flow_name = flow.name if flow else trigger.flow
    if trigger.kind == "inactive_in_flow":
        progress = _open_progress(trigger.flow or "", now)
        where = f"in {flow_name}, not completed"
        if trigger.step is not None:
            progress = progress.filter(furthest_step=trigger.step - 1)
            label = flow.step_label(trigger.step) if flow else trigger.step
            where = f"in {flow_name} at step {label}, not completed"
        idle = timedelta(minutes=trigger.minutes or 0)
        due = progress.filter(person__last_event_at__lte=now - idle)
        return (
            f"People {where}",
            _people_with(progress),
            f"of them idle for {_minutes(trigger.minutes or 0)} or more right now",
            _people_with(due),
        )
    if trigger.kind == "step_abandoned":
        progress = _open_progress(trigger.flow or "", now).filter(
            furthest_step__gte=trigger.did or 1, furthest_step__lt=trigger.missing or 1
        )
        return (
            f"People in {flow_name} who did step {trigger.did} but not yet step {trigger.missing}",
            _people_with(progress),
            "",
            None,
        )
    if trigger.kind == "inactive_sessions":
        return (
            f"People in {flow_name}, not completed",
            _people_with(_open_progress(trigger.flow or "", now)),
            "",
            None,
        )
    if trigger.kind == "repeated_event":
        definition = {
            "match": "all",
            "conditions": [
                _behaviour(
                    trigger.event or "",
                    trigger.where,
                    times=trigger.times or 2,
                    within=trigger.within,
                )
            ],
        }
        return (
            f"People with {trigger.event} {trigger.times} times or more in the last"
            f" {format_duration(trigger.within or 0)}",
            members_queryset(definition, now),
            "",
            None,
        )
    if trigger.kind == "milestone":
        conditions = [_behaviour(trigger.event or "", trigger.where, times=trigger.times or 1)]
        after = ""
        if trigger.flow:
            conditions.append({"flow": trigger.flow, "state": "completed"})
            after = f", having completed {flow_name}"
        return (
            f"People with {trigger.event} {trigger.times} times or more{after}",
            members_queryset({"match": "all", "conditions": conditions}, now),
            "",
            None,
        )
    # event: who did it recently, as a sense of volume
    definition = {
        "match": "all",
        "conditions": [_behaviour(trigger.event or "", trigger.where, within=7 * 86400)],
    }
    return (
        f"People with a matching {trigger.event} event in the last 7 days",
        members_queryset(definition, now),
        "",
        None,
    )


def trigger_population(
    trigger: Trigger,
    *,
    segment_slug: str | None,
    now: datetime,
    flows: dict[str, FlowInfo] | None = None,
) -> Population:
    """How many people the trigger covers right now, and how many of them are in the segment."""
    flows = flows if flows is not None else flows_info()
    try:
        description, people, due_description, due = _population_queryset(trigger, flows, now)
    except ProblemsError as error:
        return Population(description="", count=0, problem=str(error))
    population = Population(description=description, count=people.count())
    matched = people
    if segment_slug:
        segment = Segment.objects.filter(slug=segment_slug).first()
        if segment is not None:
            try:
                members = members_queryset(segment, now)
            except ProblemsError as error:
                population.problem = f"The segment cannot be evaluated: {error}"
                return population
            matched = people.filter(pk__in=members.values("pk"))
            population.segment_name = segment.name
            population.in_segment = matched.count()
    if due is not None:
        population.due_description = due_description
        if segment_slug and population.in_segment is not None:
            due = due.filter(pk__in=matched.values("pk"))
        population.due_count = due.count()
    population.sample = list(matched.order_by("-last_seen", "-pk")[:SAMPLE_SIZE])
    return population


def _interval_seconds(task_name: str, default: int) -> tuple[int, bool]:
    """(every N seconds, enabled) of a django-celery-beat task, or the default."""
    try:
        from django_celery_beat.models import PeriodicTask
    except ImportError:  # pragma: no cover - the app is always installed here
        return default, True
    task = PeriodicTask.objects.select_related("interval").filter(name=task_name).first()
    if task is None or task.interval is None:
        return default, True
    unit = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1, "microseconds": 0}
    seconds = task.interval.every * unit.get(task.interval.period, 1)
    return max(seconds, 1), task.enabled


@dataclass(frozen=True)
class Latency:
    text: str
    enabled: bool
    every_seconds: int
    delivery_seconds: int


def detection_latency(trigger: Trigger) -> Latency:
    """How soon after the moment it describes the trigger is noticed, in words."""
    every, enabled = _interval_seconds(EVALUATE_TASK, DEFAULT_INTERVAL_SECONDS)
    delivery, _ = _interval_seconds(DELIVER_TASK, 15)
    tick = _seconds_words(every)
    if trigger.kind == "inactive_in_flow":
        mark = f"the {_minutes(trigger.minutes or 0).replace(' ', '-')} mark"
        moment = f"{mark} (counted from when the person's last event happened)"
    elif trigger.kind == "step_abandoned":
        moment = f"the end of the {format_duration(trigger.within or 0)} after step {trigger.did}"
    elif trigger.kind == "inactive_sessions":
        moment = f"the event that starts session {trigger.sessions} without progress"
    else:
        moment = "the matching event arriving"
    text = f"Detected within {tick} of {moment}: the evaluation runs every {tick}."
    return Latency(text=text, enabled=enabled, every_seconds=every, delivery_seconds=delivery)


def measured_latency_text(rule: Rule, *, now: datetime) -> str:
    """The rule's own latency over the last 7 days (:mod:`triggers.services.latency`), in words."""
    measured = measured_latency(rule, now=now)
    detection, delivery = measured.detection, measured.delivery
    if not detection.n and not delivery.n:
        return "Measured: nothing enrolled or sent in the last 7 days yet."
    parts = []
    if detection.n:
        parts.append(
            f"detected {duration_label(detection.p50)} after the moment at the median, "
            f"{duration_label(detection.p95)} at p95 ({_count(detection.n, 'enrollment')})"
        )
    if delivery.n:
        parts.append(
            f"sent {duration_label(delivery.p50)} after due at the median, "
            f"{duration_label(delivery.p95)} at p95 ({_count(delivery.n, 'follow-up')}, first attempts)"
        )
    return "Measured over the last 7 days: " + "; ".join(parts) + "."


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def template_usage() -> dict[str, list[Rule]]:
    """Template slug → the rules whose current version sends it (follow-up or fallback)."""
    usage: dict[str, list[Rule]] = defaultdict(list)
    for rule in Rule.objects.select_related("current_version").exclude(current_version=None):
        definition = rule.current_version.definition
        slugs = {item.get("template") for item in definition.get("follow_ups") or []}
        slugs.add((definition.get("fallback") or {}).get("template"))
        for slug in slugs - {None}:
            usage[slug].append(rule)
    return usage


def recent_person(query: str = "") -> tuple[Person | None, bool]:
    """The person a template preview renders for: by external id or email, else the most
    recently seen. Returns (person, found) where found is False when a query matched no one."""
    query = query.strip()
    if query:
        person = (
            Person.objects.filter(Q(external_id=query) | Q(email__iexact=query))
            .order_by("-last_seen")
            .first()
        )
        if person is not None:
            return person, True
        return Person.objects.order_by("-last_seen", "-pk").first(), False
    return Person.objects.order_by("-last_seen", "-pk").first(), True
