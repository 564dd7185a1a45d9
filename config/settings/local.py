"""Development on a laptop: the embedded default unless DATABASE_URL / CELERY_BROKER_URL are set."""

from config.env import env_bool, env_str

from .base import *  # noqa: F403

DEBUG = env_bool("DJANGO_DEBUG", True)
# A development-only key; production.py refuses to start without DJANGO_SECRET_KEY.
SECRET_KEY = env_str(
    "DJANGO_SECRET_KEY", "onramp-insecure-development-key-do-not-use-in-production"
)
