"""Backtest runs requested from the rule editor: status, progress and the stored report."""

from django.conf import settings
from django.db import models


class BacktestStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class BacktestRun(models.Model):
    rule = models.ForeignKey(
        "triggers.Rule", on_delete=models.CASCADE, null=True, blank=True, related_name="backtests"
    )
    # The definition replayed (the rule's current one, or an unsaved edit from the editor).
    definition = models.JSONField()
    since = models.DateTimeField()
    until = models.DateTimeField()
    status = models.CharField(
        max_length=8, choices=BacktestStatus.choices, default=BacktestStatus.QUEUED
    )
    progress = models.PositiveSmallIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(progress__lte=100), name="backtestrun_progress_max_100"
            ),
            models.CheckConstraint(
                condition=models.Q(until__gt=models.F("since")), name="backtestrun_period"
            ),
        ]

    def __str__(self) -> str:
        return f"backtest {self.pk} ({self.status})"
