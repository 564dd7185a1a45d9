"""The Celery application. Tasks take ids, call a service and own only their retry policy."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("onramp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _connect_logging() -> None:
    from celery import signals

    from config import logs

    signals.after_setup_logger.connect(logs.adopt_celery_handlers, weak=False)
    signals.after_setup_task_logger.connect(logs.adopt_celery_handlers, weak=False)
    signals.task_prerun.connect(logs.task_started, weak=False)
    signals.task_postrun.connect(logs.task_finished, weak=False)


_connect_logging()
