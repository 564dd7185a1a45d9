"""Trigger rules, delivery and experiments live here (see DESIGN §4.4-4.7).

For now: the heartbeat that the worker and beat write, so ``/healthz`` can tell whether scheduled
work is actually running.
"""

from django.db import models


class Heartbeat(models.Model):
    """The last time a scheduled task ran in a worker."""

    name = models.CharField(max_length=100, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at:%Y-%m-%d %H:%M:%S}"
