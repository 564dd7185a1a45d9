"""Backtest: replay one rule over stored events on a virtual clock (DESIGN §4.6).

Read-only. The question answered is "what would the live engine have done, had this rule been
active and ticked every 30 s from ``since`` to ``until``, with the events arriving at their
``received_at``?" — detection (:mod:`.idle` for idle spells, :mod:`.detection` for the other
kinds), then enrollment exactly as
``triggers.engine.evaluate`` decides it (segment, re-entry, one occurrence per person per tick),
then the follow-ups' due times (``follow_up_due_at``), then an estimate of delivery with the
pipeline's checks in its order (consent → address → exit → caps → quiet hours → render).

Approximations, stated in every result (``approximations``):
- segment membership is evaluated now, not at each tick;
- templates are rendered with people's current traits, consent and addresses are current;
- the global cap counts what live rules actually sent in the period plus this rule's simulated
  sends; live rules' own sends are taken as they happened (this rule would have changed them);
- a running experiment's arms are not simulated: everyone gets the rule's follow-ups;
- re-entry only sees the simulated enrollments (not enrollments a saved rule really made);
- for a rule with ``unless_clicked_within``, clicks are not modelled (:data:`NO_CLICKS`).
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import groupby
from types import SimpleNamespace
from typing import Any

import billiard
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from onboarding.models import FlowProgress, Person, Segment
from onboarding.segments import members_queryset
from triggers.channels import channel_for
from triggers.delivery.checks import CAPPED_STATUSES
from triggers.engine.occurrences import Occurrence
from triggers.engine.spells import IdleSpec
from triggers.engine.timing import follow_up_due_at, quiet_until
from triggers.models import Enrollment, Message, MessageTemplate, Rule, RuleStatus
from triggers.rendering import ENVIRONMENT, HTML_ENVIRONMENT, TemplateProblem, person_context
from triggers.rules.exits import exit_flow, exit_reason
from triggers.rules.spec import FollowUp, RuleSpec, parse_rule
from triggers.workspace import policy

from . import idle
from .detection import detect_history
from .history import Replay, StepHistory, TickGrid, flow_spec, for_people

logger = logging.getLogger(__name__)

ATTRIBUTION = timedelta(days=7)
PEOPLE_PER_BATCH = 20000
APPROXIMATIONS = (
    "segment membership is evaluated now, not at each tick",
    "templates are rendered with each person's current traits; consent and addresses are current",
    "the global cap counts what live rules really sent in the period plus this rule's sends",
    "a running experiment's arms are not simulated: everyone gets the rule's follow-ups",
    "re-entry sees only the simulated enrollments, not ones a saved rule really made",
)


# Added to a result's approximations when a follow-up reacts to a click: the backtest has no
# clicks to replay, so it neither skips such follow-ups nor waits for the click window.
NO_CLICKS = (
    "clicks are not modelled: a follow-up with 'skip if the previous one was clicked within' is"
    " counted as if nobody clicked, at its own due time, so its sends are an upper bound"
)


class BacktestError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Entry:
    """One occurrence that would have entered, and what became of it: each follow-up's outcome
    (step, channel, outcome, when it was decided) and whether the person progressed anyway."""

    person_id: int
    external_id: str
    occurrence: str
    at: datetime
    follow_ups: list[tuple[int, str, str, datetime]] = field(default_factory=list)
    # "yes" or "no" (progressed in the flow within the attribution window), "open" (not yet,
    # and the window is still open), "" (the rule has no flow: nothing to progress in).
    progressed: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "external_id": self.external_id,
            "occurrence": self.occurrence,
            "at": self.at.isoformat(),
            "follow_ups": [
                {"step": step + 1, "channel": channel, "outcome": outcome, "at": at.isoformat()}
                for step, channel, outcome, at in sorted(self.follow_ups)
            ],
            "progressed": self.progressed,
        }


@dataclass
class BacktestResult:
    rule: str | None
    kind: str
    since: datetime
    until: datetime
    now: datetime
    ticks: int
    entries: list[Entry] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    scheduled_per_day: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    sent_per_day: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    # day → (channel, outcome) → follow-ups decided that day (the day of the decision: a deferred
    # follow-up counts on the day quiet hours released it)
    outcomes_per_day: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    outcomes: Counter = field(default_factory=Counter)
    deferred: int = 0
    render_problems: Counter = field(default_factory=Counter)
    overlap_people: int = 0
    overlap_rules: dict[str, int] = field(default_factory=dict)
    progressed_anyway: int = 0
    attribution_open: int = 0
    # Of the occurrences whose attribution window is over: those who progressed anyway.
    progressed_anyway_settled: int = 0
    attribution_days: int = ATTRIBUTION.days
    approximations: tuple[str, ...] = APPROXIMATIONS
    seconds: float = 0.0

    @property
    def entered(self) -> int:
        return len(self.entries)

    @property
    def people(self) -> int:
        return len({e.person_id for e in self.entries})

    @property
    def scheduled(self) -> int:
        return sum(sum(c.values()) for c in self.scheduled_per_day.values())

    def as_dict(self, *, entries_limit: int | None = 1000) -> dict[str, Any]:
        entries = self.entries if entries_limit is None else self.entries[:entries_limit]
        return {
            "rule": self.rule,
            "kind": self.kind,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "now": self.now.isoformat(),
            "ticks": self.ticks,
            "entered": self.entered,
            "people": self.people,
            "entries": [e.as_dict() for e in entries],
            "entries_truncated": len(entries) < len(self.entries),
            "skipped": dict(self.skipped),
            "scheduled": self.scheduled,
            "scheduled_per_day": _days(self.scheduled_per_day),
            "sent_per_day": _days(self.sent_per_day),
            "outcomes_per_day": {
                day: _by_channel(counts) for day, counts in sorted(self.outcomes_per_day.items())
            },
            "outcomes": dict(self.outcomes),
            "deferred": self.deferred,
            "render_problems": dict(self.render_problems.most_common(10)),
            "overlap": {"people": self.overlap_people, "rules": self.overlap_rules},
            "progressed_anyway": {
                "occurrences": self.progressed_anyway,
                "settled": self.progressed_anyway_settled,
                "window_open": self.attribution_open,
                "window_days": self.attribution_days,
            },
            "approximations": list(self.approximations),
            "seconds": round(self.seconds, 3),
        }


def _days(per_day: dict[str, Counter]) -> dict[str, dict[str, int]]:
    return {day: dict(sorted(c.items())) for day, c in sorted(per_day.items())}


def _by_channel(counts: Counter) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (channel, outcome), n in sorted(counts.items()):
        out.setdefault(channel, {})[outcome] = n
    return out


# --- enrollment (mirrors evaluate._enroll) ---------------------------------------------------


@dataclass(slots=True)
class _Enrolled:
    occurrence: Occurrence
    tick: datetime


def _enroll_person(
    spec: RuleSpec, found: list[tuple[datetime, Occurrence]], member: bool, skipped: Counter
) -> list[_Enrolled]:
    """One person's occurrences, tick by tick, decided as ``evaluate._enroll`` decides them."""
    every = timedelta(seconds=spec.reentry_every or 0)
    keys: set[str] = set()
    late_keys: set[str] = set()
    enrolled: list[_Enrolled] = []
    found.sort(key=lambda pair: (pair[0], pair[1].at, pair[1].key))
    for tick, group in groupby(found, key=lambda pair: pair[0]):
        occurrences = []
        for _, occurrence in group:
            if not occurrence.late:
                occurrences.append(occurrence)
            elif occurrence.key not in late_keys:  # recorded once, never sent
                late_keys.add(occurrence.key)
                skipped["late_data"] += 1
        if not occurrences:
            continue
        if not member:
            skipped["segment"] += len(occurrences)
            continue
        if spec.reentry_once:
            blocked = bool(enrolled)
        else:
            blocked = any(e.occurrence.at > tick - every for e in enrolled)
        accepted = False
        for occurrence in occurrences:
            if blocked or accepted:
                skipped["reentry"] += 1
                continue
            accepted = True
            if occurrence.key not in keys:  # the unique constraint: found again, enrolled once
                keys.add(occurrence.key)
                enrolled.append(_Enrolled(occurrence, tick))
    return enrolled


# --- delivery estimate (mirrors the pipeline's checks, in order) ------------------------------


class _Renderer:
    """Strict Liquid, as ``triggers.rendering.render``, with each template parsed once.

    Whether a render fails depends only on the context's values of the names the template reads
    (templates cannot include others), so outcomes are remembered by those values."""

    def __init__(self, slugs: Iterable[str]) -> None:
        self.templates = {t.slug: t for t in MessageTemplate.objects.filter(slug__in=set(slugs))}
        self.parsed: dict[tuple[str, bool], tuple[Any, tuple[str, ...] | None]] = {}
        self.outcomes: dict[tuple, str | None] = {}
        self.channels: dict[str, Any] = {}

    def channel(self, name: str) -> Any:
        """``channel_for``, once per run and name (it imports the registry on each call)."""
        if name not in self.channels:
            self.channels[name] = channel_for(name)
        return self.channels[name]

    def _parsed(self, key: tuple[str, bool], source: str) -> tuple[Any, tuple[str, ...] | None]:
        if key not in self.parsed:
            environment = HTML_ENVIRONMENT if key[1] else ENVIRONMENT
            template = environment.from_string(source)
            try:
                names: tuple[str, ...] | None = tuple(sorted(template.analyze().globals))
            except Exception:  # no analysis: render every time
                names = None
            self.parsed[key] = (template, names)
        return self.parsed[key]

    def problem(self, slug: str, context: dict[str, Any], html: bool) -> str | None:
        template = self.templates.get(slug)
        if template is None:
            return f"no template {slug!r}"
        for name, source in (("subject", template.subject), ("body", template.body)):
            if not source:
                continue
            key = (f"{slug}:{name}", html)
            remembered = None
            try:
                parsed, names = self._parsed(key, source)
                if names is not None:
                    remembered = (key, _values_key(context, names))
                    if remembered in self.outcomes:
                        if self.outcomes[remembered] is None:
                            continue
                        return self.outcomes[remembered]
                parsed.render(**context)
                if remembered is not None:
                    self.outcomes[remembered] = None
            except Exception as error:  # LiquidError, as rendering.render reports it
                problem = str(
                    TemplateProblem(name, str(error).splitlines()[0] if str(error) else "")
                )
                if remembered is not None:
                    self.outcomes[remembered] = problem
                return problem
        return None


def _values_key(context: dict[str, Any], names: tuple[str, ...]) -> Any:
    """The values of ``names`` in ``context`` as a dictionary key: a tuple of plain values (by
    type too: 1, 1.0 and True render differently), else their JSON text."""
    values = tuple((n in context, type(v := context.get(n)), v) for n in names)
    if all(isinstance(v, _PLAIN) for _, _, v in values):
        return values
    return json.dumps(
        [(present, value) for present, _, value in values], sort_keys=True, default=repr
    )


_PLAIN = (str, int, float, bool, type(None))


@dataclass
class _Send:
    due_at: datetime
    step: int
    follow_up: FollowUp
    enrolled: _Enrolled
    entry: Entry


@dataclass(frozen=True)
class _Policy:
    """What the delivery estimate reads of the rule and the workspace, read once per run."""

    cap_max: int
    period: timedelta
    quiet: Any
    exits: bool
    last: datetime

    @classmethod
    def of(cls, spec: RuleSpec, grid: TickGrid) -> _Policy:
        workspace = policy()
        return cls(
            workspace.global_cap_max,
            timedelta(seconds=workspace.global_cap_period_seconds),
            spec.quiet_hours or workspace.quiet,
            exit_flow(spec) is not None,
            grid.last,
        )


def _day(moment: datetime) -> str:
    """The UTC day of ``moment`` (ISO), remembered per date."""
    day = moment.date()
    text = _DAYS.get(day)
    if text is None:
        text = _DAYS[day] = day.isoformat()
    return text


_DAYS: dict[Any, str] = {}


def _deliver_person(
    spec: RuleSpec,
    person: Any,
    sends: list[_Send],
    live_sent: list[datetime],
    history: StepHistory | None,
    grid: TickGrid,
    renderer: _Renderer,
    result: BacktestResult,
    rules: _Policy | None = None,
) -> None:
    rules = rules or _Policy.of(spec, grid)
    period, quiet, exits, last = rules.period, rules.quiet, rules.exits, rules.last
    own: list[datetime] = []
    consent = person.consent or {}
    for send in sorted(sends, key=lambda s: (s.due_at, s.step)):
        channel = renderer.channel(send.follow_up.channel)
        moment = grid.at_or_after(send.due_at)
        deferred = False
        while True:
            if moment > last:
                outcome = "after_period"
                break
            if consent.get("all") is False or consent.get(channel.name) is False:
                outcome = "suppressed:consent"
                break
            if channel.address(person) is None:
                outcome = "no_address"
                break
            progress = history.progress_at(moment) if history is not None and exits else None
            if progress is not None:
                reason = exit_reason(
                    spec,
                    enrolled_at_step=send.enrolled.occurrence.context.get("furthest_step"),
                    furthest_step=progress.furthest_step,
                    completed=progress.completed_at is not None,
                )
                if reason is not None:
                    outcome = f"cancelled:{reason}"
                    break
            recent = sum(1 for t in live_sent if t > moment - period) + sum(
                1 for t in own if t > moment - period
            )
            if recent >= rules.cap_max:
                outcome = "capped:global"
                break
            if spec.cap_max is not None and spec.cap_per is not None:
                window = timedelta(seconds=spec.cap_per)
                if sum(1 for t in own if t > moment - window) >= spec.cap_max:
                    outcome = "capped:rule"
                    break
            resume = quiet_until(moment, quiet, person.timezone)
            if resume is not None:
                deferred = True
                moment = grid.at_or_after(resume)
                continue
            problem = renderer.problem(
                send.follow_up.template, person_context(person), channel.html
            )
            if problem is not None:
                result.render_problems[problem] += 1
                outcome = "aborted:render"
                break
            outcome = "sent"
            own.append(moment)
            result.sent_per_day[_day(moment)][channel.name] += 1
            break
        result.outcomes[outcome] += 1
        result.outcomes_per_day[_day(moment)][channel.name, outcome] += 1
        send.entry.follow_ups.append((send.step, channel.name, outcome, moment))
        result.deferred += deferred


# --- the run ---------------------------------------------------------------------------------


def _resolve(rule: Rule | str | None, definition: dict | None) -> tuple[Rule | None, RuleSpec]:
    if isinstance(rule, str):
        rule = Rule.objects.filter(slug=rule).select_related("current_version").first()
        if rule is None:
            raise BacktestError("no_rule", "no rule with this slug")
    if definition is None:
        if rule is None or rule.current_version is None:
            raise BacktestError("no_definition", "the rule has no saved version")
        definition = rule.current_version.definition
    spec, problems = parse_rule(definition)
    if spec is None:
        raise BacktestError("invalid_rule", "; ".join(f"{p.path}: {p.message}" for p in problems))
    return rule, spec


def run_backtest(
    *,
    rule: Rule | str | None = None,
    definition: dict | None = None,
    since: datetime,
    until: datetime,
    now: datetime | None = None,
    progress: Any = None,
) -> BacktestResult:
    """Replay one rule (saved, or an unsaved ``definition``) over ``(since, until]``.

    ``progress``, if given, is called with a percentage now and then (for a progress bar).
    """
    started = time.perf_counter()
    now = now or timezone.now()
    if until <= since:
        raise BacktestError("bad_period", "until must be after since")
    rule, spec = _resolve(rule, definition)
    grid = TickGrid(since, until)
    replay = Replay(grid, min(now, grid.last + ATTRIBUTION))
    result = BacktestResult(
        rule=rule.slug if rule else None,
        kind=spec.trigger.kind,
        since=since,
        until=until,
        now=now,
        ticks=grid.count,
    )
    if any(f.unless_clicked_within for f in spec.follow_ups):
        result.approximations = (*result.approximations, NO_CLICKS)
    flow = flow_spec(spec.trigger.flow) if spec.trigger.flow else None
    segment = Segment.objects.filter(slug=spec.segment).first() if spec.segment else None
    wanted = [f.template for f in spec.follow_ups]
    renderer = _Renderer(wanted)

    entered_people: set[int] = set()
    with _no_cycle_collection():
        context = _Context(spec, flow, segment, rule, renderer, replay, now, result, entered_people)
        _run(context, progress)
    result.entries.sort(key=lambda e: (e.at, e.person_id, e.occurrence))
    _overlap(rule, entered_people, since, until, result)
    result.seconds = time.perf_counter() - started
    return result


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Millions of short-lived tuples, none in a cycle: the cycle collector would walk the
    growing heap again and again for nothing (a tenth of the run at scale)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _run(context: _Context, progress: Any) -> None:
    if context.spec.trigger.kind != "inactive_in_flow":
        _detect_and_decide(context, progress)
    elif _in_processes(context):
        _run_idle_in_processes(context, progress)
    else:
        _run_idle(context, progress)


def _run_idle(context: _Context, progress: Any, part: tuple[int, int] | None = None) -> None:
    spec, replay, result = context.spec, context.replay, context.result
    spell = IdleSpec.of(spec.trigger)
    clock = idle.Clock.of(replay.grid, spell.threshold)

    def enroll(person_id: int, spells: list[idle.Spell], member: bool) -> list[_Enrolled]:
        return [
            _Enrolled(occurrence, tick)
            for occurrence, tick in idle.enroll_spells(
                spec, spell, person_id, spells, member, clock, result.skipped
            )
        ]

    for spells in idle.detect_spells(spell, replay, part):
        _decide(context, spells, enroll)
        if progress:
            progress(5 + int(90 * replay.done))


# Idle spells of a flow with at least ``ONRAMP_BACKTEST_PROCESSES_FROM`` people are replayed by
# ``ONRAMP_BACKTEST_PROCESSES`` processes, each for the people whose id is its number modulo their
# count (PostgreSQL, outside a transaction: the processes read through their own connections).
# People are independent in a backtest: every decision (re-entry, caps, progress) is about one
# person.
# What the forked processes inherit (never pickled: a progress callback may be a closure).
_FORKED: tuple[_Context, Any] | None = None


def _processes() -> int:
    return max(1, settings.ONRAMP_BACKTEST_PROCESSES)


def _in_processes(context: _Context) -> bool:
    if _processes() < 2 or not idle.set_based() or connection.in_atomic_block:
        return False
    if context.flow is None:
        return False
    people = FlowProgress.objects.filter(flow_id=context.flow.id).count()
    return people >= settings.ONRAMP_BACKTEST_PROCESSES_FROM


def _run_idle_in_processes(context: _Context, progress: Any) -> None:
    """:func:`_run_idle` in forked processes, one share of the people each; their results are
    added up here (the entries are sorted by the caller)."""
    global _FORKED
    _FORKED = (context, progress)
    processes = _processes()
    connections.close_all()  # each process opens its own
    try:
        # billiard (Celery's multiprocessing): a Celery prefork worker's child is a daemonic
        # process, which the standard library refuses to give children.
        pool = billiard.get_context("fork").Pool(processes)
        try:
            shares = pool.map(_run_share, [(i, processes) for i in range(processes)])
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
    finally:
        _FORKED = None
    for result, people in shares:
        _add(context.result, result)
        context.entered_people.update(people)
    logger.info(
        "backtest: idle spells of flow %s replayed in %d processes", context.flow.id, processes
    )


def _run_share(part: tuple[int, int]) -> tuple[BacktestResult, set[int]]:
    """In a forked process: the backtest of one share of the people, on a fresh result (the
    first share reports progress)."""
    assert _FORKED is not None
    base, progress = _FORKED
    own = replace(
        base,
        result=replace(
            base.result,
            entries=[],
            skipped=Counter(),
            outcomes=Counter(),
            scheduled_per_day=defaultdict(Counter),
            sent_per_day=defaultdict(Counter),
            outcomes_per_day=defaultdict(Counter),
            render_problems=Counter(),
        ),
        entered_people=set(),
    )
    try:
        _run_idle(own, progress if part[0] == 0 else None, part)
    finally:
        connections.close_all()
    return own.result, own.entered_people


def _add(total: BacktestResult, share: BacktestResult) -> None:
    total.entries.extend(share.entries)
    for name in ("skipped", "outcomes", "render_problems"):
        getattr(total, name).update(getattr(share, name))
    for name in ("scheduled_per_day", "sent_per_day", "outcomes_per_day"):
        days = getattr(total, name)
        for day, counts in getattr(share, name).items():
            days[day].update(counts)
    for name in ("deferred", "progressed_anyway", "attribution_open", "progressed_anyway_settled"):
        setattr(total, name, getattr(total, name) + getattr(share, name))


def _detect_and_decide(context: _Context, progress: Any) -> None:
    """Any trigger: the occurrences the detectors find, decided a batch of people at a time."""
    spec, result, replay = context.spec, context.result, context.replay

    def enroll(person_id: int, items: list[tuple[datetime, Occurrence]], member: bool):
        return _enroll_person(spec, items, member, result.skipped)

    found: dict[int, list[tuple[datetime, Occurrence]]] = defaultdict(list)
    for item in detect_history(spec.trigger, replay):
        if item is None:  # a batch of people is complete: decide it, free its memory
            _decide(context, found, enroll)
            found.clear()
            if progress:
                progress(5 + int(90 * replay.done))
            continue
        tick, occurrence = item
        if tick is not None:
            found[occurrence.person_id].append((tick, occurrence))
    _decide(context, found, enroll)


@dataclass
class _Context:
    spec: RuleSpec
    flow: Any
    segment: Segment | None
    rule: Rule | None
    renderer: _Renderer
    replay: Replay
    now: datetime
    result: BacktestResult
    entered_people: set[int]


def _decide(
    c: _Context, found: dict[int, Any], enroll: Callable[[int, Any, bool], list[_Enrolled]]
) -> None:
    """Enroll (``enroll(person, found, member)``), schedule and estimate delivery for these
    people's occurrences."""
    spec, result = c.spec, c.result
    rules = _Policy.of(spec, c.replay.grid)
    people = sorted(found)
    for start in range(0, len(people), PEOPLE_PER_BATCH):
        batch = people[start : start + PEOPLE_PER_BATCH]
        members = _members(c.segment, spec, batch, c.now)
        enrolled = {p: enroll(p, found[p], p in members) for p in batch}
        enrolled = {p: e for p, e in enrolled.items() if e}
        if enrolled:
            c.entered_people.update(enrolled)
            persons = _people(enrolled)
            histories = c.replay.histories(c.flow, enrolled) if c.flow else {}
            live = _live_sends(c.rule, enrolled, result.since, result.until)
            for person_id, items in enrolled.items():
                person = persons[person_id]
                history = histories.get(person_id)
                sends: list[_Send] = []
                for item in items:
                    occurrence = item.occurrence
                    entry = Entry(
                        person_id, person.external_id or "", occurrence.key, occurrence.at
                    )
                    result.entries.append(entry)
                    for step, follow_up in enumerate(spec.follow_ups):
                        due = follow_up_due_at(occurrence.at, follow_up, person.timezone)
                        result.scheduled_per_day[_day(due)][follow_up.channel] += 1
                        sends.append(_Send(due, step, follow_up, item, entry))
                    entry.progressed = _attribute(occurrence, history, c.now, result)
                _deliver_person(
                    spec,
                    person,
                    sends,
                    live.get(person_id, []),
                    history,
                    c.replay.grid,
                    c.renderer,
                    result,
                    rules,
                )
        c.replay.forget(batch)


def _members(segment: Segment | None, spec: RuleSpec, people: list[int], now: datetime) -> set[int]:
    if not spec.segment:
        return set(people)
    if segment is None:
        return set()
    return set(members_queryset(segment, now).filter(pk__in=people).values_list("pk", flat=True))


def _people(person_ids: Iterable[int]) -> dict[int, Any]:
    """The person fields the delivery estimate reads, as plain rows (no model conversions:
    JSON is decoded once, by the driver or here)."""
    wanted = set(person_ids)
    fields = ("pk", "external_id", "email", "phone", "timezone", "traits", "consent")
    query = for_people(Person.objects.all(), "pk", sorted(wanted)).values_list(*fields)
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return {
        row[0]: SimpleNamespace(
            pk=row[0],
            external_id=row[1],
            email=row[2],
            phone=row[3],
            timezone=row[4],
            traits=_json(row[5]),
            consent=_json(row[6]),
        )
        for row in rows
        if row[0] in wanted
    }


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _live_sends(
    rule: Rule | None, people: Iterable[int], since: datetime, until: datetime
) -> dict[int, list[datetime]]:
    """What live rules really sent these people (the global cap counts them)."""
    period = timedelta(seconds=policy().global_cap_period_seconds)
    wanted = set(people)
    rows = for_people(Message.objects.all(), "person_id", sorted(wanted)).filter(
        status__in=CAPPED_STATUSES,
        sent_at__gt=since - period,
        sent_at__lte=until,
    )
    if rule is not None:
        rows = rows.exclude(rule=rule)
    out: dict[int, list[datetime]] = defaultdict(list)
    for person_id, sent_at in rows.values_list("person_id", "sent_at"):
        if person_id in wanted:
            out[person_id].append(sent_at)
    return out


def _attribute(
    occurrence: Occurrence, history: StepHistory | None, now: datetime, result: BacktestResult
) -> str:
    """Did the person progress within the attribution window anyway (no message was sent)?
    "yes", "no", "open" (not yet, window still open), "" (no flow history to tell)."""
    if history is None:
        return ""
    end = occurrence.at + ATTRIBUTION
    still_open = end > now
    if still_open:
        result.attribution_open += 1
    before = occurrence.context.get("furthest_step")
    if before is None:
        at_start = history.progress_at(occurrence.at)
        before = at_start.furthest_step if at_start else 0
    after = history.progress_at(min(end, now))
    if after is not None and (after.completed_at is not None or after.furthest_step > before):
        result.progressed_anyway += 1
        if not still_open:
            result.progressed_anyway_settled += 1
        return "yes"
    return "open" if still_open else "no"


def _overlap(
    rule: Rule | None, people: set[int], since: datetime, until: datetime, result: BacktestResult
) -> None:
    """People this rule entered whom active live rules also enrolled in the period."""
    if not people:
        return
    live = Enrollment.objects.filter(
        rule__status=RuleStatus.ACTIVE, enrolled_at__gt=since, enrolled_at__lte=until
    )
    if rule is not None:
        live = live.exclude(rule=rule)
    overlapping: set[int] = set()
    per_rule: Counter = Counter()
    ids = sorted(people)
    if not live.exists():
        ids = []
    for start in range(0, len(ids), PEOPLE_PER_BATCH):
        batch = for_people(live, "person_id", ids[start : start + PEOPLE_PER_BATCH])
        pairs = set(batch.values_list("person_id", "rule__slug").distinct())
        pairs = {(person_id, slug) for person_id, slug in pairs if person_id in people}
        overlapping.update(person_id for person_id, _ in pairs)
        per_rule.update(slug for _, slug in pairs)
    result.overlap_people = len(overlapping)
    result.overlap_rules = dict(per_rule.most_common())
