"""Settings for the worker and beat processes that the fault tests start: the test settings,
with email sent over SMTP to the recording server the test runs on loopback."""

import os

from config.settings.test import *  # noqa: F403

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = int(os.environ.get("ONRAMP_FAULTS_SMTP_PORT", "25"))
EMAIL_TIMEOUT = 5
