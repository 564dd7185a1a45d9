from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    verbose_name = "Triggers and delivery"

    def install_demo(self) -> str:
        """Demo templates and rules, for ``manage.py seed_demo``."""
        from triggers.demo import install_demo_rules

        result = install_demo_rules()
        changed = [str(c) for c in result.changes if c.status != "unchanged"]
        return ("Demo rules: " + "; ".join(changed) + ".") if changed else ""

    def ready(self) -> None:
        # The templates and rules sections of the configuration file (onboarding cannot import us).
        from triggers.configfile import register

        register()
