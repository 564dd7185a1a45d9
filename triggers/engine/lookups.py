"""What every rule of a tick would read alike, read once per tick (:class:`TickLookups`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from triggers.models import Experiment, ExperimentStatus, Rule, RuleState
from triggers.rules.exits import exit_flow
from triggers.rules.spec import RuleSpec, parse_rule

from .detectors import idle_spells, inactive_sessions, session_times
from .exiting import exit_candidates
from .occurrences import Occurrence
from .spells import IdleSpec


@dataclass
class TickLookups:
    """What every rule of a tick would read alike, read once per tick instead of once per rule:
    which rules have a running experiment, template ids by slug (filled as rules need them), each
    rule's parsed definition; and for all the rules of a flow at once, the idle spells of the
    ``inactive_in_flow`` rules, the sessions of the ``inactive_sessions`` rules and the exit
    check's candidates (:meth:`prepare`). Without it (a
    rule evaluated on its own), each rule reads them itself."""

    experiment_rules: set[int]
    templates: dict[str, int] = field(default_factory=dict)
    specs: dict[int, tuple[RuleSpec | None, list]] = field(default_factory=dict)
    # Per rule: the watermark its occurrences were detected from, and the occurrences.
    detected: dict[int, tuple[datetime, list[Occurrence]]] = field(default_factory=dict)
    # Per rule: the watermark, the people whose progress moved since, the exit candidates.
    exits: dict[int, tuple[datetime, dict[int, tuple[int, bool]], list[tuple]]] = field(
        default_factory=dict
    )

    @classmethod
    def read(cls) -> TickLookups:
        running = Experiment.objects.filter(status=ExperimentStatus.RUNNING)
        return cls(experiment_rules=set(running.values_list("rule_id", flat=True)))

    def spec(self, rule: Rule) -> tuple[RuleSpec | None, list]:
        """The rule's current definition, parsed once per tick (spec, problems)."""
        if rule.pk not in self.specs:
            self.specs[rule.pk] = parse_rule(rule.current_version.definition)
        return self.specs[rule.pk]

    def prepare(
        self, rules: list[Rule], now: datetime, watermarks: dict[int, datetime | None] | None = None
    ) -> None:
        """Read ahead, for all the rules of a flow at once (one query per flow and watermark
        instead of one per rule), what their ticks would read: the idle spells of the
        ``inactive_in_flow`` rules (:func:`.detectors.idle_spells`), and the exit check's
        candidates (:func:`.exiting.exit_candidates`). Read before the rules are claimed: a rule uses
        them only if its watermark, once claimed, is still the one they were read from (another
        tick may have moved it), else it reads on its own. ``watermarks`` (by rule id), when the
        rules are claimed already, saves reading them."""
        specs = {rule.pk: spec for rule in rules if (spec := self.spec(rule)[0]) is not None}
        idle = {pk for pk, spec in specs.items() if spec.trigger.kind == "inactive_in_flow"}
        sessions = {pk for pk, spec in specs.items() if spec.trigger.kind == "inactive_sessions"}
        exiting = {pk for pk, spec in specs.items() if exit_flow(spec) is not None}
        if len(idle) < 2 and len(exiting) < 2 and len(sessions) < 2:
            return
        if watermarks is None:
            watermarks = dict(
                RuleState.objects.filter(rule_id__in=idle | exiting | sessions).values_list(
                    "rule_id", "checked_until"
                )
            )
        groups: dict[tuple[str, datetime], list[int]] = defaultdict(list)
        for rule_id, since in watermarks.items():
            if rule_id not in idle and rule_id not in exiting and rule_id not in sessions:
                continue
            if since is not None and since < now:
                groups[(specs[rule_id].trigger.flow or "", since)].append(rule_id)
        for (flow, since), rule_ids in groups.items():
            detecting = [rule_id for rule_id in rule_ids if rule_id in idle]
            if len(detecting) >= 2:
                found = idle_spells(
                    flow, [IdleSpec.of(specs[r].trigger) for r in detecting], since, now
                )
                for rule_id, occurrences in zip(detecting, found, strict=True):
                    self.detected[rule_id] = (since, occurrences)
            counting = [rule_id for rule_id in rule_ids if rule_id in sessions]
            if len(counting) >= 2:
                read = session_times(flow, since, now)
                for rule_id in counting:
                    found = list(inactive_sessions(specs[rule_id].trigger, since, now, read))
                    self.detected[rule_id] = (since, found)
            checking = [rule_id for rule_id in rule_ids if rule_id in exiting]
            if len(checking) >= 2:
                moved, candidates = exit_candidates(checking, exit_flow(specs[checking[0]]), since)
                for rule_id in checking:
                    self.exits[rule_id] = (since, moved, candidates.get(rule_id, []))

    def occurrences(self, rule: Rule, since: datetime) -> list[Occurrence] | None:
        """The rule's occurrences detected for the tick, if detected from ``since``."""
        detected = self.detected.get(rule.pk)
        return detected[1] if detected is not None and detected[0] == since else None

    def exit_candidates(self, rule: Rule, since: datetime) -> tuple[dict, list] | None:
        """The exit check's people moved and candidates read for the rule, if from ``since``."""
        read = self.exits.get(rule.pk)
        return read[1:] if read is not None and read[0] == since else None
