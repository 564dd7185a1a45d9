"""Backtest runs: the status (JSON for scripts, an htmx partial that polls while it runs), and the
report page of a finished run: the summary, follow-ups per day by channel and outcome, and the
people who would have entered, paginated and as CSV (DESIGN §4.6)."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from dashboard.backtests import figures, report
from dashboard.decorators import view_dashboard_required
from dashboard.partials import render_page
from triggers.models import BacktestRun, BacktestStatus

STATUS = "dashboard/backtest_status.html"
REPORT = "dashboard/backtests/report.html"


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


def _finished(run: BacktestRun) -> bool:
    return run.status in (BacktestStatus.DONE, BacktestStatus.FAILED)


def _run(run_id: int) -> BacktestRun:
    return get_object_or_404(BacktestRun.objects.select_related("rule"), pk=run_id)


@require_GET
@view_dashboard_required
def backtest_status(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run(run_id)
    if getattr(request, "htmx", False) or request.GET.get("format") == "html":
        on_report = request.GET.get("on") == "report"
        if on_report and _finished(run) and getattr(request, "htmx", False):
            # The report page polls until the run ends, then loads again with its chart and table.
            response = HttpResponse(status=204)
            response["HX-Refresh"] = "true"
            return response
        context = {"run": run, "data": _payload(run), "finished": _finished(run)}
        return render(request, STATUS, {**context, "on_report": on_report})
    return JsonResponse(_payload(run))


def _page_number(text: str | None) -> int:
    try:
        return max(1, min(int(text or 1), 1_000_000))
    except ValueError:
        return 1


@require_GET
@view_dashboard_required
@vary_on_headers("HX-Request", "HX-Target")
def backtest_report(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run(run_id)
    context: dict = {
        "section": "rules",
        "run": run,
        "data": _payload(run),
        "finished": _finished(run),
        "on_report": True,
    }
    result = run.result if run.status == BacktestStatus.DONE else None
    if result is not None:
        context["complete"] = report.has_person_outcomes(result)
        context["people"] = report.people_page(result, _page_number(request.GET.get("page")))
        if context["complete"]:
            context["per_day_figure"] = figures.sends_per_day_figure(
                result.get("outcomes_per_day") or {},
                since=datetime.fromisoformat(result["since"]).date(),
                until=datetime.fromisoformat(result["until"]).date(),
            )
    return render_page(request, REPORT, context, partials=["backtest-people"])


@require_GET
@view_dashboard_required
def backtest_people_csv(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run(run_id)
    if run.status != BacktestStatus.DONE or run.result is None:
        return HttpResponse(
            "The backtest has no report yet.", status=404, content_type="text/plain"
        )
    response = StreamingHttpResponse(
        report.people_csv_lines(run.result), content_type="text/csv; charset=utf-8"
    )
    name = run.rule.slug if run.rule else "unsaved-rule"
    response["Content-Disposition"] = f'attachment; filename="backtest-{run.pk}-{name}.csv"'
    return response
