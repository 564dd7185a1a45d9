"""Where a flow, a segment or a message template is used: the one answer the lifecycle asks.

Rules, segments and experiments name flows, segments and templates by slug inside JSON (a rule's
current version, a segment's conditions, an experiment's metric and arms), so no foreign key
protects them; the delivery ledger and flow progress do hold foreign keys. Each reference is a
:class:`Place`:

- **live** (``live=True``): something that runs or can be started names it: a rule that is not
  archived, a segment that is not archived, an experiment that is not stopped. Archiving or
  deleting is refused while a live place exists (an archived object can be named by nothing
  that could still send or be activated).
- **history** (``live=False``): records that must stay readable: an archived rule or segment, a
  stopped experiment's results, messages in the delivery ledger, people's progress through a flow
  (its funnel and KPI history). Deleting is refused while history exists; archiving is offered.

Only the current version of a rule counts: older versions are immutable history reached through
the rule, and the messages they sent are counted through the ledger. Segments cannot name other
segments (DESIGN §4.3 has no such condition), so a segment is only used by rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse

from onboarding.models import FlowProgress, OnboardingFlow, Segment
from onboarding.segments import flows_named_by
from triggers.models import Experiment, ExperimentStatus, Message, MessageTemplate, Rule, RuleStatus


@dataclass(frozen=True)
class Place:
    kind: str  # "rule", "segment", "experiment", "funnel", "ledger"
    name: str  # what the place is called on its own page
    url: str  # its page; "" when there is none on the dashboard
    detail: str = ""  # how it uses the object: "trigger", "follow-up 2", "arm one-week"…
    live: bool = True
    slug: str = ""  # the rule's, segment's or experiment's slug


@dataclass(frozen=True)
class Usage:
    places: tuple[Place, ...]

    @property
    def live(self) -> tuple[Place, ...]:
        return tuple(place for place in self.places if place.live)

    @property
    def history(self) -> tuple[Place, ...]:
        return tuple(place for place in self.places if not place.live)

    @property
    def can_archive(self) -> bool:
        return not self.live

    @property
    def can_delete(self) -> bool:
        return not self.places


def usage_of(obj: OnboardingFlow | Segment | MessageTemplate) -> Usage:
    """Every place that names ``obj``, live places first."""
    if isinstance(obj, OnboardingFlow):
        places = list(_flow_places(obj))
    elif isinstance(obj, Segment):
        places = list(_segment_places(obj))
    elif isinstance(obj, MessageTemplate):
        places = list(_template_places(obj))
    else:
        raise TypeError(f"no usage for {type(obj).__name__}")
    places.sort(key=lambda place: not place.live)
    return Usage(tuple(places))


# Counting stops here: "10,000+ messages" says enough, and the page never scans a whole ledger.
COUNT_CAP = 10_000


def _count(queryset: QuerySet, singular: str, plural: str) -> str:
    """ "3 messages", "10,000+ messages", or "" for none (at most COUNT_CAP + 1 rows read)."""
    found = queryset[: COUNT_CAP + 1].count()
    if not found:
        return ""
    if found > COUNT_CAP:
        return f"{COUNT_CAP:,}+ {plural}"
    return f"{found:,} {singular if found == 1 else plural}"


# --- what each kind of place names ----------------------------------------------------------------


def _rule_place(rule: Rule, detail: str) -> Place:
    live = rule.status != RuleStatus.ARCHIVED
    return Place(
        "rule",
        rule.name,
        reverse("triggers:rule_edit", args=[rule.slug]),
        f"{detail} ({rule.status})",
        live,
        rule.slug,
    )


def _experiment_place(experiment: Experiment, detail: str) -> Place:
    return Place(
        "experiment",
        experiment.slug,
        reverse("triggers:experiment_results", args=[experiment.slug]),
        f"{detail} ({experiment.status})",
        experiment.status != ExperimentStatus.STOPPED,
        experiment.slug,
    )


def _rules() -> Iterator[tuple[Rule, dict[str, Any]]]:
    for rule in Rule.objects.select_related("current_version").order_by("name"):
        if rule.current_version is not None and isinstance(rule.current_version.definition, dict):
            yield rule, rule.current_version.definition


def _templates_of(follow_ups: Any) -> Iterator[tuple[int, str]]:
    """(1-based position, template slug) of each follow-up in a list of them."""
    for position, item in enumerate(follow_ups if isinstance(follow_ups, list) else [], 1):
        if isinstance(item, dict) and isinstance(item.get("template"), str):
            yield position, item["template"]


def lock_named(
    *, flows: Iterable[Any] = (), segments: Iterable[Any] = (), templates: Iterable[Any] = ()
) -> None:
    """Lock the rows of the flows, segments and templates a definition about to be saved names.

    :mod:`.lifecycle` locks the object it archives or deletes while it checks where it is used;
    a save that names the object waits here until that is decided, and then validates against
    what was decided (an archived object is refused), instead of slipping in between. Rows are
    locked in one order (flows, segments, templates, by slug) so two saves cannot deadlock.
    """
    for model, slugs in (
        (OnboardingFlow, flows),
        (Segment, segments),
        (MessageTemplate, templates),
    ):
        wanted = sorted({slug for slug in slugs if isinstance(slug, str)})
        if wanted:
            list(model.objects.select_for_update().filter(slug__in=wanted).order_by("slug"))


def rule_references(definition: Any) -> dict[str, set[str]]:
    """The flow, segment and template slugs a rule definition names (as written, unvalidated)."""
    definition = definition if isinstance(definition, dict) else {}
    trigger = definition.get("trigger")
    fallback = definition.get("fallback")
    templates = {slug for _, slug in _templates_of(definition.get("follow_ups"))}
    if isinstance(fallback, dict):
        templates.add(fallback.get("template"))
    return {
        "flows": {trigger.get("flow")} if isinstance(trigger, dict) else set(),
        "segments": {definition.get("segment")},
        "templates": templates,
    }


def _flow_places(flow: OnboardingFlow) -> Iterator[Place]:
    for rule, definition in _rules():
        trigger = definition.get("trigger")
        if isinstance(trigger, dict) and trigger.get("flow") == flow.slug:
            yield _rule_place(rule, "trigger")
    for segment in Segment.objects.order_by("name"):
        if flow.slug in flows_named_by(segment.definition):
            yield Place(
                "segment",
                segment.name,
                reverse("dashboard:segment_edit", args=[segment.slug]),
                "condition" + (" (archived)" if segment.archived_at else ""),
                segment.archived_at is None,
                segment.slug,
            )
    for experiment in Experiment.objects.order_by("slug"):
        if isinstance(experiment.metric, dict) and experiment.metric.get("flow") == flow.slug:
            yield _experiment_place(experiment, "primary metric")
    entrants = _count(FlowProgress.objects.filter(flow=flow), "person", "people")
    if entrants:
        yield Place(
            "funnel",
            f"{entrants} entered this flow",
            reverse("dashboard:funnel", args=[flow.slug]),
            "their progress, funnel and KPI history",
            live=False,
        )


def _segment_places(segment: Segment) -> Iterator[Place]:
    for rule, definition in _rules():
        if definition.get("segment") == segment.slug:
            yield _rule_place(rule, "segment filter")


def _template_places(template: MessageTemplate) -> Iterator[Place]:
    for rule, definition in _rules():
        for position, slug in _templates_of(definition.get("follow_ups")):
            if slug == template.slug:
                yield _rule_place(rule, f"follow-up {position}")
        fallback = definition.get("fallback")
        if isinstance(fallback, dict) and fallback.get("template") == template.slug:
            yield _rule_place(rule, "channel fallback")
    for experiment in Experiment.objects.prefetch_related("variants").order_by("slug"):
        for variant in experiment.variants.all():
            if any(slug == template.slug for _, slug in _templates_of(variant.follow_ups)):
                yield _experiment_place(experiment, f"arm {variant.name}")
    messages = _count(Message.objects.filter(template=template), "message", "messages")
    if messages:
        yield Place(
            "ledger",
            f"{messages} in the delivery ledger",
            "",
            "sent, scheduled or reviewed messages keep their template",
            live=False,
        )
