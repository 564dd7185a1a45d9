from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    verbose_name = "Triggers and delivery"

    def install_demo(self) -> str:
        """Demo templates and rules, for ``manage.py seed_demo``."""
        from datetime import timedelta

        from django.utils import timezone

        from triggers.demo import install_demo_rules
        from triggers.models import RuleState

        result = install_demo_rules()
        changed = [str(c) for c in result.changes if c.status != "unchanged"]
        # Live rules look forward from activation; the demo's first evaluation also covers the
        # last hour of the seeded history, so people who stalled recently get their nudges.
        RuleState.objects.filter(
            rule__slug__in=[c.slug for c in result.changes if c.kind == "rule"]
        ).update(checked_until=timezone.now() - timedelta(hours=1))
        return ("Demo rules: " + "; ".join(changed) + ".") if changed else ""

    def ready(self) -> None:
        # The templates and rules sections of the configuration file (onboarding cannot import us).
        from triggers import receivers  # noqa: F401  (GDPR export and erasure of a person)
        from triggers.configfile import register

        register()
