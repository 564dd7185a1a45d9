from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def summarise_demo(self, *, seed: int) -> str:
        """Roll the demo's 30 days of history up (after every app installed its demo objects,
        trigger history included), so the KPI page has numbers at once; the hourly beat task
        keeps it current afterwards."""
        from datetime import timedelta

        from django.utils import timezone

        from dashboard.kpis.rollup import rollup_kpis

        now = timezone.now()
        report = rollup_kpis(first=now.date() - timedelta(days=29), last=now.date(), now=now)
        return f"KPIs rolled up: {report.flow_rows} flow-days, {report.rule_rows} rule-days."

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from dashboard.permissions import install_groups_after_migrate

        # Every migrate makes the role groups what dashboard/permissions.py says (migrations don't).
        post_migrate.connect(
            install_groups_after_migrate, sender=self, dispatch_uid="onramp.groups"
        )
