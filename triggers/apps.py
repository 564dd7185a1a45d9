from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    verbose_name = "Triggers and delivery"

    def install_demo(self, *, seed: int) -> str:
        """Demo templates and rules, and their last 30 days of history, for ``manage.py
        seed_demo`` (the history once: rules that already enrolled anyone are left alone)."""
        from triggers.demo import install_demo_rules
        from triggers.demo_history import install_demo_history

        result = install_demo_rules()
        changed = [str(c) for c in result.changes if c.status != "unchanged"]
        lines = ["Demo rules: " + "; ".join(changed) + "."] if changed else []
        history = install_demo_history(
            rule_slugs=[c.slug for c in result.changes if c.kind == "rule"], seed=seed
        )
        if not history.already:
            lines.append(str(history))
        return "\n".join(lines)

    def ready(self) -> None:
        # The templates and rules sections of the configuration file (onboarding cannot import us).
        from django.db.models.signals import post_migrate

        from triggers import (
            receivers,  # noqa: F401  (GDPR export and erasure of a person)
            workspace,  # noqa: F401  (its cache is dropped when the row changes)
        )
        from triggers.configfile import register
        from triggers.schedules import install_schedules_after_migrate

        register()
        # Every migrate makes the beat schedules what triggers/schedules.py says (migrations don't).
        post_migrate.connect(
            install_schedules_after_migrate, sender=self, dispatch_uid="onramp.schedules"
        )
