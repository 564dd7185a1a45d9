"""Why do people stop at step k: what is over- or under-represented among those who stopped there,
against those who passed (issue 20, part 1).

Who is judged: the funnel query's **settled** entrants (entry + window ≤ now, DESIGN §4.2) who
reached step k − 1. Those whose furthest step is k − 1 *stopped*; those who reached k *passed*.
People still inside their window are left out, so that "not yet" never reads as "stopped".

What is compared, per person (each a yes/no feature):
- **events done before the step**: the names of the person's ``track`` events, the flow's own
  step events excepted, over an equal exposure for both groups: from entry for the typical time it
  takes to pass the step (the median from entry to step k among those who passed), and for those
  who passed only before their first step-k event;
- **entry properties**: each ``property = value`` of the entry event (the step-1 event that made
  them an entrant);
- **traits**: each ``trait = value`` of the person now.

Only scalar values are features; a property or trait with more than :data:`MAX_VALUES` distinct
values among the people judged (ids, emails, names) is left out, and a feature must be shared by
at least ``min_support`` people and missing in at least one. At most :data:`MAX_FEATURES`, the
most common, are tested. Each gets an odds ratio of stopping with a 95 % interval and Fisher's exact
p-value, adjusted with Holm across every feature tested (:mod:`.association`). Over
:data:`MAX_PEOPLE` settled people, a deterministic sample by person id is judged, and the result
says so.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from django.utils.text import slugify

from dashboard.formatting import duration_label
from onboarding.flows.chain import where_matches
from onboarding.models import Event, Person, Segment
from onboarding.services.segments import segment_problems, segment_save
from triggers.stats import holm

from .association import fisher_exact, odds_ratio
from .people import settled_sample
from .query import FunnelQuery, StepDef
from .runner import steps_up_to

FeatureKind = Literal["event", "entry", "trait"]
ALPHA = 0.05
MAX_PEOPLE = 10_000
MAX_FEATURES = 150
MAX_VALUES = 50
MAX_VALUE_LENGTH = 100
CHUNK = 1_000
KIND_LABELS = {"event": "did", "entry": "entry property", "trait": "trait"}


@dataclass(frozen=True, slots=True)
class Feature:
    kind: FeatureKind
    key: str
    value: str | None = None  # None for an event name

    @property
    def label(self) -> str:
        if self.kind == "event":
            return f"did {self.key}"
        return f"{self.key} = {self.value}"

    def segment_condition(self, entry_event: str) -> dict[str, Any]:
        """The segment condition (DESIGN §4.3) of the people who have this feature."""
        if self.kind == "event":
            return {"event": self.key}
        if self.kind == "entry":
            return {"event": entry_event, "where": {self.key: self.value}}
        return {"trait": self.key, "op": "eq", "value": self.value}


@dataclass(frozen=True, slots=True)
class Association:
    feature: Feature
    stopped_with: int
    stopped: int
    passed_with: int
    passed: int
    odds_ratio: float
    low: float
    high: float
    p_value: float
    p_adjusted: float

    @property
    def share_stopped(self) -> float:
        return self.stopped_with / self.stopped if self.stopped else 0.0

    @property
    def share_passed(self) -> float:
        return self.passed_with / self.passed if self.passed else 0.0

    @property
    def significant(self) -> bool:
        return self.p_adjusted < ALPHA

    @property
    def over(self) -> bool:
        """Over-represented among those who stopped (odds ratio above 1)."""
        return self.odds_ratio > 1


@dataclass(frozen=True)
class Explanation:
    step: StepDef
    previous: StepDef
    stopped: int
    passed: int
    settled: int  # settled people who reached the step before, before any sampling
    min_support: int
    tested: int
    rows: list[Association] = field(default_factory=list)
    horizon: timedelta = timedelta(0)  # how long after entry events were looked at

    @property
    def sampled(self) -> bool:
        return self.settled > self.stopped + self.passed

    @property
    def significant(self) -> list[Association]:
        return [row for row in self.rows if row.significant]

    @property
    def horizon_label(self) -> str:
        return duration_label(self.horizon.total_seconds())


@dataclass(slots=True)
class _Judged:
    person_id: int
    entered_at: datetime
    stopped: bool
    features: set[Feature] = field(default_factory=set)


def default_min_support(people: int) -> int:
    """At least 10 people, and 1 % of those judged."""
    return max(10, math.ceil(people * 0.01))


def explain_step(
    query: FunnelQuery, step: int, *, min_support: int | None = None, max_people: int = MAX_PEOPLE
) -> Explanation:
    """What sets apart the settled entrants who stopped before step ``step`` (≥ 2)."""
    steps = steps_up_to(query, step)
    settled, sample = settled_sample(query, step=step - 1, limit=max_people)
    judged = [
        _Judged(person_id, entered_at, furthest == step - 1)
        for person_id, entered_at, furthest in sample
    ]
    done: dict[int, list[tuple[str, datetime]]] = {}
    reached_target: dict[int, datetime] = {}
    for start in range(0, len(judged), CHUNK):
        chunk = judged[start : start + CHUNK]
        _collect_features(query, steps, step, chunk, done, reached_target)
    horizon = _event_features(judged, done, reached_target, query.window)
    stopped = sum(1 for person in judged if person.stopped)
    passed = len(judged) - stopped
    support = min_support if min_support is not None else default_min_support(len(judged))
    rows = _associations(judged, stopped, passed, support)
    return Explanation(
        step=steps[step - 1],
        previous=steps[step - 2],
        stopped=stopped,
        passed=passed,
        settled=settled,
        min_support=support,
        tested=len(rows),
        rows=rows,
        horizon=horizon,
    )


def _event_features(
    people: list[_Judged],
    done: dict[int, list[tuple[str, datetime]]],
    reached_target: dict[int, datetime],
    window: timedelta,
) -> timedelta:
    """Add the events each person did to their features, over an equal exposure; return it.

    Both groups are observed for the typical time it takes to pass the step: the median time from
    entry to the step among those who passed (the whole window when nobody passed); those who
    passed, only before the step. Watching whoever stopped to the end of their window instead
    would make them look as if they did more of everything that comes late (a later login, say).
    """
    gaps = sorted(
        at - person.entered_at for person in people if (at := reached_target.get(person.person_id))
    )
    horizon = gaps[(len(gaps) - 1) // 2] if gaps else window
    for person in people:
        until = person.entered_at + horizon
        cutoff = reached_target.get(person.person_id)
        if cutoff is not None:
            until = min(until, cutoff)
        person.features.update(
            Feature("event", name) for name, at in done.get(person.person_id, ()) if at < until
        )
    return horizon


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str) and str(value) != "":
        return str(value)[:MAX_VALUE_LENGTH]
    return None


def _collect_features(
    query: FunnelQuery,
    steps: list[StepDef],
    step: int,
    people: list[_Judged],
    done: dict[int, list[tuple[str, datetime]]],
    reached_target: dict[int, datetime],
) -> None:
    """Add each person's entry properties and traits to their features; gather the events they
    did (``done``) and when those who passed first did step ``step`` (``reached_target``)."""
    entry_step, target = steps[0], steps[step - 1]
    step_events = {s.event for s in steps}
    by_id = {person.person_id: person for person in people}
    window = query.window
    events = (
        Event.objects.filter(
            person_id__in=list(by_id),
            timestamp__gte=min(p.entered_at for p in people),
            timestamp__lte=max(p.entered_at for p in people) + window,
        )
        .order_by("timestamp", "id")
        .values_list("person_id", "type", "name", "timestamp", "properties")
    )
    for person_id, kind, name, at, properties in events.iterator(chunk_size=5000):
        person = by_id[person_id]
        if not person.entered_at <= at <= person.entered_at + window:
            continue
        properties = properties if isinstance(properties, dict) else {}
        if (
            at == person.entered_at
            and name == entry_step.event
            and where_matches(entry_step.where, properties)
        ):
            for key, value in properties.items():
                text = _scalar(value)
                if text is not None:
                    person.features.add(Feature("entry", str(key), text))
        if (
            not person.stopped
            and person_id not in reached_target
            and name == target.event
            and where_matches(target.where, properties)
        ):
            reached_target[person_id] = at
        if kind == "track" and name and name not in step_events:
            done.setdefault(person_id, []).append((name, at))
    for person_id, traits in Person.objects.filter(id__in=list(by_id)).values_list("id", "traits"):
        for key, value in (traits or {}).items():
            text = _scalar(value)
            if text is not None:
                by_id[person_id].features.add(Feature("trait", str(key), text))


def _associations(
    people: list[_Judged], stopped: int, passed: int, min_support: int
) -> list[Association]:
    if not stopped or not passed:
        return []
    with_feature: Counter[Feature] = Counter()
    stopped_with: Counter[Feature] = Counter()
    for person in people:
        with_feature.update(person.features)
        if person.stopped:
            stopped_with.update(person.features)
    values_per_key: Counter[tuple[str, str]] = Counter(
        (feature.kind, feature.key) for feature in with_feature if feature.value is not None
    )
    total = stopped + passed
    candidates = [
        feature
        for feature, count in with_feature.items()
        if min_support <= count < total
        and (feature.value is None or values_per_key[(feature.kind, feature.key)] <= MAX_VALUES)
    ]
    candidates.sort(key=lambda f: (-with_feature[f], f.kind, f.key, f.value or ""))
    candidates = candidates[:MAX_FEATURES]
    tables = []
    for feature in candidates:
        a = stopped_with[feature]
        b = with_feature[feature] - a
        tables.append((feature, a, b, stopped - a, passed - b))
    p_values = [fisher_exact(a, b, c, d) for _, a, b, c, d in tables]
    adjusted = holm(p_values)
    rows = []
    for (feature, a, b, c, d), p, p_adj in zip(tables, p_values, adjusted, strict=True):
        ratio = odds_ratio(a, b, c, d)
        rows.append(
            Association(
                feature=feature,
                stopped_with=a,
                stopped=stopped,
                passed_with=b,
                passed=passed,
                odds_ratio=ratio.estimate,
                low=ratio.low,
                high=ratio.high,
                p_value=p,
                p_adjusted=p_adj if p_adj is not None else 1.0,
            )
        )
    rows.sort(key=lambda r: (r.p_adjusted, -abs(math.log(r.odds_ratio)), r.feature.label))
    return rows


def segment_from_feature(flow_name: str, entry_event: str, feature: Feature) -> Segment:
    """The saved segment of the people who have ``feature`` (one click from the explanation).

    A segment with the same definition is reused; a new one is named after the feature and the
    flow, with a free slug."""
    definition = {"match": "all", "conditions": [feature.segment_condition(entry_event)]}
    normalized, _ = segment_problems(slug="placeholder", name="placeholder", definition=definition)
    for segment in Segment.objects.all():
        if segment.definition == normalized:
            return segment
    name = f"{feature.label} ({KIND_LABELS[feature.kind]}, {flow_name})"[:100]
    base = slugify(f"{feature.label}")[:40].strip("-") or "segment"
    slug, n = base, 1
    while Segment.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return segment_save(slug=slug, name=name, definition=definition).object


# --- from friction to a rule ---------------------------------------------------------------------

MIN_PASSED_FOR_A_GAP = 20
IDLE_MINUTES = 30


@dataclass(frozen=True)
class Action:
    """The rule that acts on a step: its trigger as the rule editor's fields, and why."""

    params: dict[str, str]
    reason: str


def _round_up_minutes(seconds: float) -> int:
    """A readable duration in minutes, rounded up: 7 → 10, 47 → 50, 130 → 180 (hours above 2 h)."""
    minutes = max(10, math.ceil(seconds / 60))
    if minutes <= 120:
        return math.ceil(minutes / 10) * 10
    return math.ceil(minutes / 60) * 60


def act_on_step(
    flow_slug: str,
    steps: list[StepDef],
    step: int,
    *,
    median_gap_seconds: float | None,
    passed: int,
    window_seconds: int,
) -> Action:
    """The trigger that matches "people stop before step ``step``".

    Where the step has a typical gap (at least :data:`MIN_PASSED_FOR_A_GAP` people passed it, and
    twice their median time from the step before is well inside the window), "step skipped": did
    step k − 1 and not step k within twice that median. Otherwise "inactive at this step" for
    :data:`IDLE_MINUTES` minutes."""
    target, previous = steps[step - 1], steps[step - 2]
    name = f"Stalled before {target.name}"
    if median_gap_seconds is not None and passed >= MIN_PASSED_FOR_A_GAP:
        within = _round_up_minutes(2 * median_gap_seconds)
        if within * 60 <= window_seconds // 2:
            words = f"{within // 60} h" if within % 60 == 0 and within >= 120 else f"{within} min"
            return Action(
                {
                    "name": name,
                    "kind": "step_abandoned",
                    "flow": flow_slug,
                    "did": str(step - 1),
                    "missing": str(step),
                    "within": f"{within // 60}h"
                    if within % 60 == 0 and within >= 120
                    else f"{within}m",
                },
                f"People who pass take {duration_label(median_gap_seconds)} (median) from "
                f"{previous.name} to {target.name}: the rule fires when someone did "
                f"{previous.name} and not {target.name} within {words}, twice that.",
            )
    return Action(
        {
            "name": name,
            "kind": "inactive_in_flow",
            "flow": flow_slug,
            "step": str(step),
            "minutes": str(IDLE_MINUTES),
        },
        f"No typical time from {previous.name} to {target.name} yet (fewer than "
        f"{MIN_PASSED_FOR_A_GAP} passed): the rule fires when someone at this step does nothing "
        f"for {IDLE_MINUTES} minutes.",
    )
