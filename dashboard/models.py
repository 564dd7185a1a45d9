from django.db import models


class DashboardAccess(models.Model):
    """Holds the dashboard's permissions; no table (Django creates permissions for it)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_dashboard", "Can use the growth dashboard")]
