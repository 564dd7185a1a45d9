"""Reads for the rule editor's caps panel: which limits apply to a rule, and what a 14-day backtest
says the rule would have done: whom it reaches per week, what caps would have suppressed and let
through, and how many progressed anyway without a message (DESIGN §4.5, §4.6; issue 15 item 2,
issue 20 part 2).

The estimate is a :class:`~triggers.models.BacktestRun` of the form's definition over the last
:data:`ESTIMATE_DAYS` days, queued like "Test against history" and polled by the panel: on the
demo (500 people, 6,833 events) the replay takes 0.1–0.2 s, but the benchmark's 10 M events take
about 90 s for 7 days (docs/benchmarks.md), too long for a request. Fourteen days, so that the
occurrences of the first week have had their 7 days to progress anyway (``ATTRIBUTION``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dashboard.formatting import minutes_words, share
from onboarding.configfile.durations import DurationError, parse_duration
from triggers.models import BacktestRun, BacktestStatus, Rule
from triggers.stats import wilson_interval
from triggers.workspace import Policy, parse_quiet_hours, policy

ESTIMATE_DAYS = 14
CAPPED_OUTCOMES = ("capped:global", "capped:rule")
NAMED_RULES = 3


def period_words(seconds: int) -> str:
    """``604800`` → "7 days", ``86400`` → "1 day", ``5400`` → "90 min"."""
    return minutes_words(max(1, seconds // 60))


@dataclass(frozen=True)
class CapsInForce:
    """The limits a rule's follow-ups meet, in words, each saying where it comes from."""

    global_cap: str
    rule_cap: str  # "" without one
    quiet_hours: str  # "" for none
    quiet_source: str  # "this rule", "Settings" or ""


def _words_of_duration(text: Any) -> str:
    try:
        return period_words(parse_duration(str(text)))
    except (DurationError, ValueError, TypeError):
        return str(text or "?")


def caps_in_force(definition: dict[str, Any], workspace: Policy | None = None) -> CapsInForce:
    """What applies to ``definition`` (as typed, even before it is valid) under the policy."""
    workspace = workspace or policy()
    global_cap = (
        f"at most {workspace.global_cap_max} follow-ups per"
        f" {period_words(workspace.global_cap_period_seconds)} per person, across rules and"
        " channels"
    )
    cap = definition.get("cap") or {}
    rule_cap = ""
    if cap.get("max") and cap.get("per"):
        rule_cap = f"at most {cap['max']} per {_words_of_duration(cap['per'])} from this rule"
    quiet = definition.get("quiet_hours") or {}
    if quiet.get("start") and quiet.get("end"):
        quiet_hours, source = f"{quiet['start']}–{quiet['end']}", "this rule"
    elif workspace.quiet_hours:
        start, end = parse_quiet_hours(workspace.quiet_hours) or (None, None)
        quiet_hours, source = f"{start:%H:%M}–{end:%H:%M}", "Settings"
    else:
        quiet_hours, source = "", ""
    return CapsInForce(global_cap, rule_cap, quiet_hours, source)


@dataclass(frozen=True)
class CapsEstimate:
    """A finished run's answer: of ``scheduled`` follow-ups, ``suppressed`` were capped."""

    scheduled: int
    suppressed: int
    by_global: int
    by_rule: int
    deferred: int
    entered: int
    days: int
    global_cap: str
    rules: list[tuple[str, int]] = field(default_factory=list)  # (rule name, people in common)
    people: int = 0
    progressed_anyway: int = 0  # of the settled occurrences: progressed within 7 days, no message
    attribution_open: int = 0  # occurrences whose 7 days are not over yet
    attribution_days: int = 7

    @property
    def per_week(self) -> int:
        """People the rule would reach in a week, at the period's pace."""
        return round(self.people * 7 / self.days)

    @property
    def let_through(self) -> int:
        return self.scheduled - self.suppressed

    @property
    def anyway_judged(self) -> int:
        """Occurrences whose attribution window is over: those "progressed anyway" is known for."""
        return max(0, self.entered - self.attribution_open)

    @property
    def anyway_rate(self) -> str:
        if not self.anyway_judged:
            return "–"
        return share(self.progressed_anyway / self.anyway_judged)

    @property
    def anyway_interval(self) -> str:
        interval = wilson_interval(self.progressed_anyway, self.anyway_judged)
        if interval is None:
            return ""
        return f"{share(interval[0])}–{share(interval[1])}"

    @property
    def share(self) -> str:
        if not self.scheduled:
            return "–"
        return f"{round(100 * self.suppressed / self.scheduled)} %"


def caps_estimate(run: BacktestRun) -> CapsEstimate | None:
    """The estimate of a finished run, or None while it is queued, running or failed."""
    if run.status != BacktestStatus.DONE or not run.result:
        return None
    report = run.result
    outcomes = report.get("outcomes") or {}
    overlap = (report.get("overlap") or {}).get("rules") or {}
    anyway = report.get("progressed_anyway") or {}
    top = sorted(overlap.items(), key=lambda item: (-item[1], item[0]))[:NAMED_RULES]
    names = dict(
        Rule.objects.filter(slug__in=[slug for slug, _ in top]).values_list("slug", "name")
    )
    workspace = policy()
    return CapsEstimate(
        scheduled=int(report.get("scheduled") or 0),
        suppressed=sum(int(outcomes.get(name) or 0) for name in CAPPED_OUTCOMES),
        by_global=int(outcomes.get("capped:global") or 0),
        by_rule=int(outcomes.get("capped:rule") or 0),
        deferred=int(report.get("deferred") or 0),
        entered=int(report.get("entered") or 0),
        days=max(1, round((run.until - run.since).total_seconds() / 86400)),
        global_cap=(
            f"{workspace.global_cap_max} per {period_words(workspace.global_cap_period_seconds)}"
        ),
        rules=[(names.get(slug, slug), count) for slug, count in top],
        people=int(report.get("people") or 0),
        progressed_anyway=int(anyway.get("settled") or 0),
        attribution_open=int(anyway.get("window_open") or 0),
        attribution_days=int(anyway.get("window_days") or 7),
    )
