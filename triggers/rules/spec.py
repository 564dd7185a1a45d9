"""A rule's definition, typed and validated (DESIGN §3.4, §4.4).

The same definition dict is what the editor saves, what ``onramp import`` reads and what
``RuleVersion.definition`` stores; :func:`parse_rule` turns it into a :class:`RuleSpec` or reports
every problem with its path (``trigger.minutes: must be a positive integer``), and
:func:`RuleSpec.to_definition` writes it back in canonical form, so a round trip is exact.

Checks that need the database (the flow, its steps, templates, the segment) take a
:class:`Catalog`, so the pure parts stay testable without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time
from typing import Any, Protocol

from onboarding.configfile.durations import DurationError, format_duration, parse_duration
from onboarding.configfile.errors import Problem, join_path

TRIGGER_KINDS = (
    "inactive_in_flow",
    "step_abandoned",
    "repeated_event",
    "inactive_sessions",
    "milestone",
    "event",
)
CHANNELS = ("email", "in_app", "sms", "webhook")
# Channels whose clicks Onramp records: email through the signed click redirect (every link of the
# HTML part), in-app through the widget's "clicked" report. SMS links and webhooks are not tracked.
CLICK_CHANNELS = ("email", "in_app")
EXIT_WHEN = ("progressed", "completed", "never")
STATUSES = ("draft", "active", "paused", "archived")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
MAX_FOLLOW_UPS = 10


class Catalog(Protocol):
    """What validation needs to know about the rest of the configuration."""

    def flow_steps(self, flow_slug: str) -> int | None:
        """Number of steps of the flow, or None if there is no such flow."""

    def flow_window(self, flow_slug: str) -> int | None:
        """The flow's conversion window in seconds."""

    def template_channel(self, template_slug: str) -> str | None:
        """The channel of the template, or None if there is no such template."""

    def has_segment(self, segment_slug: str) -> bool: ...

    # Optional: a catalog may also have ``archived``, a set of (kind, slug) pairs ("flow",
    # "template", "segment") that exist but are archived. It answers "no such …" for them (an
    # archived object cannot be chosen for a rule) and the problem then says it is archived.


def _missing(catalog: Catalog, kind: str, slug: str) -> str:
    """The problem for a slug the catalog does not offer: archived, or no such object."""
    if (kind, slug) in getattr(catalog, "archived", ()):
        return f"{kind} {slug!r} is archived: restore it or choose another"
    return f"no {kind} with slug {slug!r}"


@dataclass(frozen=True)
class Trigger:
    kind: str
    flow: str | None = None
    step: int | None = None
    minutes: int | None = None
    did: int | None = None
    missing: int | None = None
    within: int | None = None
    event: str | None = None
    where: dict[str, Any] = field(default_factory=dict)
    times: int | None = None
    sessions: int | None = None

    def to_definition(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for name in ("flow", "step", "minutes", "did", "missing", "event", "times", "sessions"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.within is not None:
            out["within"] = format_duration(self.within)
        if self.where:
            out["where"] = dict(self.where)
        return out


@dataclass(frozen=True)
class FollowUp:
    channel: str
    template: str
    delay: int = 0
    at: time | None = None
    # Seconds: skip this follow-up if the previous one was clicked within this long of its send
    # (checked by triggers.delivery.checks.ClickBranch). Never on the first follow-up.
    unless_clicked_within: int | None = None

    def to_definition(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "channel": self.channel,
            "template": self.template,
            "delay": format_duration(self.delay),
        }
        if self.at is not None:
            out["at"] = self.at.strftime("%H:%M")
        if self.unless_clicked_within is not None:
            out["unless_clicked_within"] = format_duration(self.unless_clicked_within)
        return out


@dataclass(frozen=True)
class RuleSpec:
    trigger: Trigger
    follow_ups: tuple[FollowUp, ...]
    segment: str | None = None
    exit_when: str = "progressed"
    reentry_once: bool = False
    reentry_every: int | None = None
    quiet_hours: tuple[time, time] | None = None
    cap_max: int | None = None
    cap_per: int | None = None
    fallback: FollowUp | None = None

    def to_definition(self) -> dict[str, Any]:
        out: dict[str, Any] = {"trigger": self.trigger.to_definition()}
        if self.segment:
            out["segment"] = self.segment
        out["follow_ups"] = [f.to_definition() for f in self.follow_ups]
        out["exit_when"] = self.exit_when
        out["reentry"] = (
            "once" if self.reentry_once else {"once_per": format_duration(self.reentry_every or 0)}
        )
        if self.quiet_hours:
            start, end = self.quiet_hours
            out["quiet_hours"] = {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")}
        if self.cap_max is not None and self.cap_per is not None:
            out["cap"] = {"max": self.cap_max, "per": format_duration(self.cap_per)}
        if self.fallback is not None:
            out["fallback"] = {"channel": self.fallback.channel, "template": self.fallback.template}
        return out


class _Reader:
    """Collects problems while reading a dict; every accessor returns None after a problem."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def positive_int(self, data: dict, key: str, path: str, *, required: bool) -> int | None:
        value = data.get(key)
        where = join_path(path, key)
        if value is None:
            if required:
                self.fail(where, "required")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.fail(where, "must be a positive integer")
            return None
        return value

    def text(self, data: dict, key: str, path: str, *, required: bool) -> str | None:
        value = data.get(key)
        where = join_path(path, key)
        if value is None or value == "":
            if required:
                self.fail(where, "required")
            return None
        if not isinstance(value, str) or len(value) > 255:
            self.fail(where, "must be a text of at most 255 characters")
            return None
        return value

    def duration(
        self, data: dict, key: str, path: str, *, required: bool, positive: bool
    ) -> int | None:
        value = data.get(key)
        where = join_path(path, key)
        if value is None:
            if required:
                self.fail(where, "required")
            return None
        try:
            seconds = parse_duration(value)
        except DurationError as error:
            self.fail(where, str(error))
            return None
        if positive and seconds <= 0:
            self.fail(where, "must be longer than 0s")
            return None
        return seconds

    def clock(self, value: Any, where: str) -> time | None:
        if not isinstance(value, str) or not _CLOCK.match(value):
            self.fail(where, "must be a local time HH:MM, e.g. 21:00")
            return None
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))

    def where(self, data: dict, path: str) -> dict[str, Any]:
        value = data.get("where")
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            self.fail(join_path(path, "where"), "must be a mapping of property to value")
            return {}
        return dict(value)


_TRIGGER_FIELDS: dict[str, set[str]] = {
    "inactive_in_flow": {"flow", "step", "minutes"},
    "step_abandoned": {"flow", "did", "missing", "within"},
    "repeated_event": {"event", "where", "times", "within"},
    "inactive_sessions": {"flow", "sessions"},
    "milestone": {"event", "where", "times", "flow"},
    "event": {"event", "where"},
}


def _parse_trigger(r: _Reader, data: Any, catalog: Catalog | None) -> Trigger | None:
    path = "trigger"
    if not isinstance(data, dict):
        r.fail(path, "required: a mapping with a kind")
        return None
    kind = data.get("kind")
    if kind not in TRIGGER_KINDS:
        r.fail(join_path(path, "kind"), f"must be one of {', '.join(TRIGGER_KINDS)}")
        return None
    allowed = _TRIGGER_FIELDS[kind] | {"kind"}
    for key in sorted(set(data) - allowed):
        r.fail(join_path(path, key), f"is not a field of a {kind} trigger")
    before = len(r.problems)
    flow_required = kind in ("inactive_in_flow", "step_abandoned", "inactive_sessions")
    flow = (
        r.text(data, "flow", path, required=flow_required)
        if "flow" in _TRIGGER_FIELDS[kind]
        else None
    )
    trigger = Trigger(
        kind=kind,
        flow=flow,
        step=r.positive_int(data, "step", path, required=False)
        if kind == "inactive_in_flow"
        else None,
        minutes=r.positive_int(data, "minutes", path, required=True)
        if kind == "inactive_in_flow"
        else None,
        did=r.positive_int(data, "did", path, required=True) if kind == "step_abandoned" else None,
        missing=r.positive_int(data, "missing", path, required=True)
        if kind == "step_abandoned"
        else None,
        within=(
            r.duration(data, "within", path, required=True, positive=True)
            if kind in ("step_abandoned", "repeated_event")
            else None
        ),
        event=(
            r.text(data, "event", path, required=True)
            if kind in ("repeated_event", "milestone", "event")
            else None
        ),
        where=r.where(data, path) if "where" in _TRIGGER_FIELDS[kind] else {},
        times=(
            r.positive_int(data, "times", path, required=True)
            if kind in ("repeated_event", "milestone")
            else None
        ),
        sessions=r.positive_int(data, "sessions", path, required=True)
        if kind == "inactive_sessions"
        else None,
    )
    if len(r.problems) > before:
        return None
    if trigger.kind == "inactive_in_flow" and trigger.step is not None and trigger.step < 2:
        r.fail(join_path(path, "step"), "must be 2 or more: the step the person has to do next")
    if trigger.kind == "step_abandoned" and trigger.missing <= trigger.did:  # type: ignore[operator]
        r.fail(join_path(path, "missing"), "must be a later step than did")
    if trigger.kind == "repeated_event" and trigger.times is not None and trigger.times < 2:
        r.fail(join_path(path, "times"), "must be at least 2 (use an event trigger for one)")
    if (
        trigger.kind == "inactive_sessions"
        and trigger.sessions is not None
        and trigger.sessions < 2
    ):
        r.fail(join_path(path, "sessions"), "must be at least 2")
    if catalog is not None and trigger.flow is not None:
        steps = catalog.flow_steps(trigger.flow)
        if steps is None:
            r.fail(join_path(path, "flow"), _missing(catalog, "flow", trigger.flow))
        else:
            for name in ("step", "did", "missing"):
                number = getattr(trigger, name)
                if number is not None and number > steps:
                    r.fail(
                        join_path(path, name),
                        f"the flow has {steps} steps; there is no step {number}",
                    )
            window = catalog.flow_window(trigger.flow) or 0
            idle = (trigger.minutes or 0) * 60 or (trigger.within or 0)
            if idle and window and idle >= window:
                key = "minutes" if trigger.minutes else "within"
                r.fail(
                    join_path(path, key),
                    f"must be shorter than the flow's conversion window ({format_duration(window)}),"
                    " or the rule can never fire",
                )
    return trigger


def _parse_follow_ups(r: _Reader, data: Any, catalog: Catalog | None) -> tuple[FollowUp, ...]:
    path = "follow_ups"
    if not isinstance(data, list) or not data:
        r.fail(path, "required: a list of at least one follow-up")
        return ()
    if len(data) > MAX_FOLLOW_UPS:
        r.fail(path, f"at most {MAX_FOLLOW_UPS} follow-ups")
    follow_ups: list[FollowUp] = []
    previous_delay = 0
    for index, item in enumerate(data):
        where = join_path(path, index)
        if not isinstance(item, dict):
            r.fail(where, "must be a mapping with channel, template and delay")
            continue
        for key in sorted(set(item) - {"channel", "template", "delay", "at", UNLESS_CLICKED}):
            r.fail(join_path(where, key), "is not a field of a follow-up")
        channel = item.get("channel")
        if channel not in CHANNELS:
            r.fail(join_path(where, "channel"), f"must be one of {', '.join(CHANNELS)}")
            channel = None
        template = r.text(item, "template", where, required=True)
        delay = r.duration(item, "delay", where, required=False, positive=False)
        at = r.clock(item["at"], join_path(where, "at")) if item.get("at") is not None else None
        unless_clicked = _unless_clicked(r, item, where, index, data)
        if delay is not None and delay < previous_delay:
            r.fail(
                join_path(where, "delay"),
                f"must not be shorter than the previous follow-up's delay ({format_duration(previous_delay)})",
            )
        previous_delay = max(previous_delay, delay or 0)
        if catalog is not None and template and channel:
            template_channel = catalog.template_channel(template)
            if template_channel is None:
                r.fail(join_path(where, "template"), _missing(catalog, "template", template))
            elif template_channel != channel:
                r.fail(
                    join_path(where, "template"),
                    f"template {template!r} is for {template_channel}, not {channel}",
                )
        if channel and template:
            follow_ups.append(FollowUp(channel, template, delay or 0, at, unless_clicked))
    return tuple(follow_ups)


UNLESS_CLICKED = "unless_clicked_within"


def _unless_clicked(r: _Reader, item: dict, where: str, index: int, data: list) -> int | None:
    """``unless_clicked_within``: a positive duration, not on the first follow-up, and only after
    a follow-up whose clicks are tracked (:data:`CLICK_CHANNELS`)."""
    if item.get(UNLESS_CLICKED) in (None, ""):
        return None
    path = join_path(where, UNLESS_CLICKED)
    if index == 0:
        r.fail(path, "not on the first follow-up: there is no previous follow-up to click")
        return None
    seconds = r.duration(item, UNLESS_CLICKED, where, required=True, positive=True)
    previous = data[index - 1]
    channel = previous.get("channel") if isinstance(previous, dict) else None
    if seconds is not None and channel in CHANNELS and channel not in CLICK_CHANNELS:
        r.fail(
            path,
            f"the previous follow-up is {channel}, whose clicks are not tracked;"
            " only email and in-app clicks are",
        )
        return None
    return seconds


def parse_rule(data: Any, catalog: Catalog | None = None) -> tuple[RuleSpec | None, list[Problem]]:
    """Parse a rule definition (without slug/name/status/priority, which live on the rule)."""
    r = _Reader()
    if not isinstance(data, dict):
        return None, [Problem("", "a rule must be a mapping")]
    known = {
        "trigger",
        "segment",
        "follow_ups",
        "exit_when",
        "reentry",
        "quiet_hours",
        "cap",
        "fallback",
    }
    for key in sorted(set(data) - known):
        r.fail(key, "is not a field of a rule")
    trigger = _parse_trigger(r, data.get("trigger"), catalog)
    follow_ups = _parse_follow_ups(r, data.get("follow_ups"), catalog)

    segment = data.get("segment")
    if segment is not None:
        if not isinstance(segment, str) or not segment:
            r.fail("segment", "must be a segment slug")
            segment = None
        elif catalog is not None and not catalog.has_segment(segment):
            r.fail("segment", _missing(catalog, "segment", segment))

    has_flow = trigger is not None and trigger.flow is not None
    exit_when = data.get("exit_when", "progressed" if has_flow else "never")
    if exit_when not in EXIT_WHEN:
        r.fail("exit_when", f"must be one of {', '.join(EXIT_WHEN)}")
    elif exit_when != "never" and trigger is not None and not has_flow:
        r.fail("exit_when", f"{exit_when!r} needs a trigger with a flow; use 'never'")

    reentry_once, reentry_every = False, None
    reentry = data.get("reentry", "once")
    if reentry == "once":
        reentry_once = True
    elif isinstance(reentry, dict) and set(reentry) == {"once_per"}:
        reentry_every = r.duration(reentry, "once_per", "reentry", required=True, positive=True)
    else:
        r.fail("reentry", "must be 'once' or {once_per: <duration>}")

    quiet_hours = None
    if data.get("quiet_hours") is not None:
        quiet = data["quiet_hours"]
        if not isinstance(quiet, dict) or set(quiet) != {"start", "end"}:
            r.fail("quiet_hours", "must be {start: 'HH:MM', end: 'HH:MM'}")
        else:
            start = r.clock(quiet["start"], "quiet_hours.start")
            end = r.clock(quiet["end"], "quiet_hours.end")
            if start and end:
                if start == end:
                    r.fail("quiet_hours.end", "must differ from start")
                quiet_hours = (start, end)

    cap_max = cap_per = None
    if data.get("cap") is not None:
        cap = data["cap"]
        if not isinstance(cap, dict) or set(cap) != {"max", "per"}:
            r.fail("cap", "must be {max: <count>, per: <duration>}")
        else:
            cap_max = r.positive_int(cap, "max", "cap", required=True)
            cap_per = r.duration(cap, "per", "cap", required=True, positive=True)

    fallback = None
    if data.get("fallback") is not None:
        item = data["fallback"]
        if not isinstance(item, dict) or set(item) != {"channel", "template"}:
            r.fail("fallback", "must be {channel: <channel>, template: <slug>}")
        else:
            channel = item.get("channel")
            template = r.text(item, "template", "fallback", required=True)
            if channel not in CHANNELS:
                r.fail("fallback.channel", f"must be one of {', '.join(CHANNELS)}")
            elif template and catalog is not None:
                template_channel = catalog.template_channel(template)
                if template_channel is None:
                    r.fail("fallback.template", _missing(catalog, "template", template))
                elif template_channel != channel:
                    r.fail(
                        "fallback.template",
                        f"template {template!r} is for {template_channel}, not {channel}",
                    )
            if template and channel in CHANNELS:
                fallback = FollowUp(channel, template)

    if r.problems or trigger is None:
        return None, r.problems
    spec = RuleSpec(
        trigger=trigger,
        follow_ups=follow_ups,
        segment=segment,
        exit_when=exit_when,
        reentry_once=reentry_once,
        reentry_every=reentry_every,
        quiet_hours=quiet_hours,
        cap_max=cap_max,
        cap_per=cap_per,
        fallback=fallback,
    )
    return spec, []


def parse_follow_ups(
    data: Any, catalog: Catalog | None = None, *, path: str = "follow_ups"
) -> tuple[tuple[FollowUp, ...], list[Problem]]:
    """Follow-ups on their own (an experiment variant's sequence), problems under ``path``."""
    r = _Reader()
    follow_ups = _parse_follow_ups(r, data, catalog)
    problems = [
        Problem(
            path + p.path[len("follow_ups") :] if p.path.startswith("follow_ups") else p.path,
            p.message,
        )
        for p in r.problems
    ]
    return follow_ups, problems
