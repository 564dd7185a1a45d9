"""The ``templates:``, ``rules:`` and ``experiments:`` sections of the configuration file (DESIGN §3.4).

Registered into :mod:`onboarding.configfile` from :meth:`triggers.apps.TriggersConfig.ready`, so
``onboarding`` never imports ``triggers``. Validation uses the same checks as the services
(Liquid at save time, :func:`~triggers.rules.spec.parse_rule`) with every path prefixed by the
item's place in the file (``rules[2].trigger.minutes: must be a positive integer``); a rule may
name flows, segments and templates defined earlier in the same file. Applying goes through
:func:`~triggers.services.templates.template_save` and :func:`~triggers.services.rules.rule_save`,
so versions and the audit log are the same as for an edit in the dashboard (actor: ``import``).
Experiments go through :func:`~triggers.services.experiments.experiment_save` and
:func:`~triggers.services.experiments.experiment_set_status`: an unchanged experiment is left
alone (no new phase), and changed arms of a running one start a new phase as in the dashboard.
"""

from __future__ import annotations

from triggers.configfile.experiments import ExperimentsSection
from triggers.configfile.rules import RulesSection
from triggers.configfile.templates import TemplatesSection

__all__ = ["ExperimentsSection", "RulesSection", "TemplatesSection", "register"]


def register() -> None:
    """Add the templates, rules and experiments sections to the configuration file (after
    segments; experiments name rules)."""
    from onboarding.configfile.sections import register_section

    register_section(TemplatesSection())
    register_section(RulesSection())
    register_section(ExperimentsSection())
