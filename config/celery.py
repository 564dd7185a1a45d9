"""The Celery application. Tasks take ids, call a service and own only their retry policy."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("onramp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
