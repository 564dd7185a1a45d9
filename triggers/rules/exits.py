"""The exit rule (DESIGN §4.4): when a person's enrollment in a rule ends, and why.

A rule whose trigger names a flow lets people out by their progress in it: with ``exit_when:
completed`` when they complete the flow, with ``progressed`` (the default for such triggers) also
when they reach a step beyond the one they were at when they enrolled (``furthest_step`` in the
enrollment's context). ``never``, and every trigger without a flow, lets no one out this way.
Unsubscribing ends every enrollment of the person at once (``person_unsubscribe``).

Their pending follow-ups are then cancelled. The tick does it for the people whose progress moved
(``triggers.engine.evaluate``), the delivery pipeline checks again at send time
(``triggers.delivery.checks.ExitCheck``) and the backtest judges past moments: all three ask
:func:`exit_reason` (``tests/triggers/test_exits.py`` runs the same cases through the first two).
The demo's history asks when the rule first applied, from :func:`exit_flow` and the same reasons.
"""

from __future__ import annotations

from triggers.rules.spec import RuleSpec

COMPLETED = "completed"
PROGRESSED = "progressed"


def exit_flow(spec: RuleSpec) -> str | None:
    """The flow whose progress can end an enrollment in this rule; None when nothing can."""
    if spec.exit_when == "never":
        return None
    return spec.trigger.flow or None


def exit_reason(
    spec: RuleSpec, *, enrolled_at_step: int | None, furthest_step: int, completed: bool
) -> str | None:
    """Why an enrollment made at ``enrolled_at_step`` ends, given the person's progress in the
    rule's flow now (``furthest_step``, ``completed``); None when it goes on."""
    if exit_flow(spec) is None:
        return None
    if completed:
        return COMPLETED
    if (
        spec.exit_when == PROGRESSED
        and enrolled_at_step is not None
        and furthest_step > enrolled_at_step
    ):
        return PROGRESSED
    return None
