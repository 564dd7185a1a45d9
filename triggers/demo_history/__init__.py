"""The demo's trigger history: what the demo rules would have done over the seeded 30 days.

``manage.py seed_demo`` stores 30 days of journeys, but live rules only look forward, so a fresh
demo would show no trigger activity at all. This module gives it a history made by Onramp's own
machinery rather than invented rows:

1. **Who enrolled, and when** (:mod:`.enroll`): the backtest
   (:func:`~triggers.simulation.backtest.run_backtest`, the live engine's decisions replayed over
   the stored events) of each demo rule; its entries go through the engine's own enrollment
   (:func:`~triggers.engine.evaluate.enroll_occurrences`) at the tick that would have found them,
   so re-entry, the experiment's arms (a running demo experiment holds 20 % of the 2-minute pause
   nudge's people out), follow-ups, idempotency keys and the decision log are the engine's.
2. **Delivery** (:mod:`.delivery`): every follow-up due before now, across all rules in time
   order, through the pipeline's checks in its order (consent → address → exit → frequency caps
   → quiet hours → render), judged as they stood *then*: flow progress at that moment (from the
   person's per-step times), sends counted from the ledger written so far. Consent, caps, quiet
   hours and rendering are the pipeline's own functions (:mod:`triggers.delivery.checks`); only
   the exit check is its own, because it reads progress as of the send, not as of now. Sends are
   recorded at their due time; nothing is handed to a provider. Follow-ups due later stay
   scheduled for the worker.
3. **Responses** (:mod:`.responses`), seeded per message, that follow the person's real
   activity: an in-app message is seen when the person next came back, and is then clicked or
   dismissed now and then; an email is opened now and then and clicked only by people who came
   back within two days (the click comes just before their next event). Recorded with the
   delivery pipeline's own :func:`~triggers.services.outcomes.message_record_outcome`.

Runs once: a rule that already has enrollments has a history (live or from an earlier seed), so
a second run changes nothing. Deterministic for the same events and seed.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from triggers.models import Enrollment, Rule, RuleState

from .delivery import HistoryDelivery
from .enroll import DEMO_EXPERIMENT, DEMO_EXPERIMENT_RULE, HISTORY, demo_experiment, enroll
from .responses import record_responses

__all__ = ["DEMO_EXPERIMENT", "DEMO_EXPERIMENT_RULE", "HistoryReport", "install_demo_history"]


@dataclass
class HistoryReport:
    enrolled: int = 0
    outcomes: Counter = field(default_factory=Counter)
    responses: Counter = field(default_factory=Counter)
    already: bool = False
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.already:
            return "Demo trigger history: already present."
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()))
        responses = ", ".join(f"{n} {k}" for k, n in sorted(self.responses.items()))
        return (
            f"Demo trigger history (backtest of the last {HISTORY.days} days): "
            f"{self.enrolled} enrollments; follow-ups: {outcomes or 'none'}; "
            f"responses: {responses or 'none'} ({self.seconds:.1f} s)."
        )


def install_demo_history(
    *, rule_slugs: list[str], seed: int = 42, now: datetime | None = None
) -> HistoryReport:
    """Materialise the last 30 days of the demo rules' history, once (see the module docstring)."""
    started = time.perf_counter()
    now = now or timezone.now()
    rules = list(
        Rule.objects.filter(slug__in=rule_slugs, current_version__isnull=False)
        .select_related("current_version")
        .order_by("-priority", "pk")
    )
    report = HistoryReport()
    if not rules or Enrollment.objects.filter(rule__in=rules).exists():
        report.already = True
        return report
    since = now - HISTORY
    with transaction.atomic():
        experiment_rule = next((r for r in rules if r.slug == DEMO_EXPERIMENT_RULE), None)
        if experiment_rule is not None:
            demo_experiment(experiment_rule, since, seed)
        report.enrolled = enroll(rules, since, now, now)
        report.outcomes = HistoryDelivery(rules, since, now).run()
        report.responses = record_responses(rules, seed, now)
        # The live engine carries on where the history ends.
        for rule in rules:
            RuleState.objects.update_or_create(rule=rule, defaults={"checked_until": now})
    report.seconds = time.perf_counter() - started
    return report
