"""A person's page: flows, and the chronological timeline of events, rules and messages."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET

from onboarding.models import Person

from .decorators import dashboard_permission_required
from .timeline import find_person, person_flows, person_timeline

view_people_required = dashboard_permission_required("onboarding.view_person")


@view_people_required
@require_GET
def people_search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")
    person = find_person(query)
    if person is not None:
        return redirect("dashboard:person", pk=person.pk)
    return render(
        request, "dashboard/people/search.html", {"query": query, "searched": bool(query)}
    )


@view_people_required
@require_GET
def person_detail(request: HttpRequest, pk: int) -> HttpResponse:
    person = get_object_or_404(Person, pk=pk)
    context = {
        "person": person,
        "flows": person_flows(person),
        "timeline": person_timeline(person),
        "identities": list(person.identities.order_by("kind", "value")),
        "section": "people",
    }
    return render(request, "dashboard/people/detail.html", context)
