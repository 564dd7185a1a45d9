"""Dashboard pages. Every page requires login; ``/healthz`` is public and says only up or down."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.selectors import service_health


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    health = service_health()
    return JsonResponse(health, status=200 if health["ok"] else 503)


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/overview.html", {})
