from django.conf import settings
from django.db import models


class WorkspaceSettings(models.Model):
    """The installation's delivery policy, edited on the Settings page (one row, pk 1).

    Until the first save there is no row and the environment's values apply
    (``ONRAMP_GLOBAL_CAP_MAX``, ``ONRAMP_GLOBAL_CAP_PERIOD_SECONDS``, ``ONRAMP_QUIET_HOURS``,
    ``ONRAMP_DEFAULT_TIMEZONE``); after it, this row does. Read it through
    :func:`triggers.workspace.policy`, never directly.
    """

    global_cap_max = models.PositiveSmallIntegerField()
    global_cap_period_seconds = models.PositiveIntegerField()
    quiet_hours = models.CharField(max_length=11, blank=True, default="")
    default_timezone = models.CharField(max_length=64)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name = "workspace settings"
        verbose_name_plural = "workspace settings"

    def __str__(self) -> str:
        return "Workspace settings"
