from django.db import models


class DashboardAccess(models.Model):
    """Holds the dashboard's permissions; no table (Django creates permissions for it)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_dashboard", "Can use the growth dashboard"),
            ("view_operations", "Can see the operator's page"),
        ]


class FlowDailyKpi(models.Model):
    """One flow's onboarding KPIs for the people who entered it on ``day`` (UTC), rolled up.

    Written by :func:`dashboard.kpis.rollup.rollup_kpis`; recomputing a day replaces its row.
    """

    day = models.DateField()
    flow = models.ForeignKey(
        "onboarding.OnboardingFlow", on_delete=models.CASCADE, related_name="+"
    )
    entrants = models.PositiveIntegerField(default=0)
    # Entrants who reached the last step within the flow's window.
    completions = models.PositiveIntegerField(default=0)
    # Entrants whose window was still open when the row was computed (may still complete).
    still_open = models.PositiveIntegerField(default=0)
    # Median seconds from entry to the last step among completions (None without completions).
    median_ttv_seconds = models.FloatField(null=True, blank=True)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "flow"], name="flowdailykpi_unique_day_flow"),
        ]
        indexes = [models.Index(fields=["day"], name="flowdailykpi_day")]

    def __str__(self) -> str:
        return f"{self.flow_id} on {self.day}"


class RuleDailyKpi(models.Model):
    """One rule's trigger KPIs for ``day`` (UTC), rolled up from the ledger and the decision log.

    Counts are by the day things happened: enrollments by ``enrolled_at``, decisions by their time,
    sends by ``sent_at``; responses, re-engagement and conversions belong to the send's day.
    """

    day = models.DateField()
    rule = models.ForeignKey("triggers.Rule", on_delete=models.CASCADE, related_name="+")
    fired = models.PositiveIntegerField(default=0, help_text="Enrollments.")
    holdout = models.PositiveIntegerField(default=0, help_text="Enrollments held out.")
    skipped = models.PositiveIntegerField(default=0)
    skipped_by_reason = models.JSONField(default=dict, blank=True)
    suppressed = models.PositiveIntegerField(default=0)
    suppressed_by_reason = models.JSONField(default=dict, blank=True)
    deferred = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0, help_text="Channel failures (fell back).")
    review = models.PositiveIntegerField(default=0)
    unknown = models.PositiveIntegerField(default=0)
    responded = models.PositiveIntegerField(default=0)
    reengaged = models.PositiveIntegerField(default=0)
    converted = models.PositiveIntegerField(default=0)
    # Distinct people sent to by this rule in the 7 days ending on ``day``.
    people_sent_7d = models.PositiveIntegerField(default=0)
    sent_7d = models.PositiveIntegerField(default=0)
    # Experiment arms (intention to treat, closed windows), by assignment day.
    treated_users = models.PositiveIntegerField(default=0)
    treated_conversions = models.PositiveIntegerField(default=0)
    holdout_users = models.PositiveIntegerField(default=0)
    holdout_conversions = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "rule"], name="ruledailykpi_unique_day_rule"),
        ]
        indexes = [models.Index(fields=["day"], name="ruledailykpi_day")]

    def __str__(self) -> str:
        return f"{self.rule_id} on {self.day}"
