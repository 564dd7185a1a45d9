"""The status of a backtest run: JSON for scripts and the editor, an htmx partial for polling."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from dashboard.decorators import view_dashboard_required
from triggers.models import BacktestRun, BacktestStatus


def _payload(run: BacktestRun) -> dict:
    return {
        "id": run.pk,
        "rule": run.rule.slug if run.rule else None,
        "since": run.since.isoformat(),
        "until": run.until.isoformat(),
        "status": run.status,
        "progress": run.progress,
        "error": run.error or None,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "report": run.result if run.status == BacktestStatus.DONE else None,
    }


@require_GET
@view_dashboard_required
def backtest_status(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(BacktestRun.objects.select_related("rule"), pk=run_id)
    if getattr(request, "htmx", False) or request.GET.get("format") == "html":
        return render(
            request,
            "dashboard/backtest_status.html",
            {"run": run, "data": _payload(run), "finished": run.status in ("done", "failed")},
        )
    return JsonResponse(_payload(run))
