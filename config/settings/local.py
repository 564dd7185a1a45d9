"""Development on a laptop: the embedded default unless DATABASE_URL / CELERY_BROKER_URL are set."""

from config.env import env_bool, env_str

from .base import *  # noqa: F403

DEBUG = env_bool("DJANGO_DEBUG", True)
# A development-only key; production.py refuses to start without DJANGO_SECRET_KEY.
SECRET_KEY = env_str(
    "DJANGO_SECRET_KEY", "onramp-insecure-development-key-do-not-use-in-production"
)

# On the embedded default, emails are written as files under var/mail/ (one .log file per
# connection), where the demo's follow-ups can be read; EMAIL_HOST switches to SMTP.
if not EMAIL_HOST and not env_str("EMAIL_BACKEND"):  # noqa: F405
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = str(VAR_DIR / "mail")  # noqa: F405
