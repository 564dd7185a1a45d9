from django.apps import AppConfig


class OnboardingConfig(AppConfig):
    name = "onboarding"
    verbose_name = "Events and people"

    def ready(self) -> None:
        from onboarding.flows import receivers  # noqa: F401  (connects signal receivers)
