from django.apps import AppConfig


class OnboardingConfig(AppConfig):
    name = "onboarding"
    verbose_name = "Events and people"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from onboarding.flows import receivers  # noqa: F401  (connects signal receivers)
        from onboarding.models import Source
        from onboarding.services.sources import _forget_cached_keys

        # A source changed in the admin (deactivated, say) takes effect at once in this process.
        post_save.connect(_forget_cached_keys, sender=Source, dispatch_uid="onramp.sources.cache")
        post_delete.connect(
            _forget_cached_keys, sender=Source, dispatch_uid="onramp.sources.cache.d"
        )
