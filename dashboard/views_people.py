"""The people list (search and filters), and a person's page: flows, and the chronological
timeline of events, rules and messages."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from onboarding.models import Person

from .decorators import dashboard_permission_required
from .forms_people import PeopleFilterForm
from .people import people_page
from .timeline import find_person, person_flows, person_timeline

view_people_required = dashboard_permission_required("onboarding.view_person")


@view_people_required
@require_GET
def people_search(request: HttpRequest) -> HttpResponse:
    """Everyone, newest activity first, narrowed by the filters; a search term that is exactly
    one person's id, userId, anonymous id or email opens that person (support pastes ids)."""
    form = PeopleFilterForm(request.GET)
    page = None
    if form.is_valid():
        criteria = form.criteria()
        only_search = criteria.q and not (criteria.flow or criteria.segment or criteria.seen)
        person = find_person(criteria.q) if only_search else None
        if person is not None and not request.htmx:
            return redirect("dashboard:person", pk=person.pk)
        page = people_page(criteria, now=timezone.now(), page=request.GET.get("page") or 1)
    params = request.GET.copy()
    params.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "filters": params.urlencode(),
        "filtered": form.filtered,
        "section": "people",
    }
    template = "dashboard/people/search.html"
    if request.htmx:
        template += "#people-results"
    return render(request, template, context)


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
