from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    verbose_name = "Triggers and delivery"

    def ready(self) -> None:
        # The templates and rules sections of the configuration file (onboarding cannot import us).
        from triggers.configfile import register

        register()
