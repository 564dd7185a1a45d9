"""The htmx partial switch of every page: a page renders whole, or, for an htmx request aimed at
one of its named partials (django-template-partials' ``template.html#name``), only that partial.

Views that answer both ways also carry ``@vary_on_headers("HX-Request", "HX-Target")``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def htmx_target(request: HttpRequest) -> str | None:
    """The id of the element an htmx request swaps (``HX-Target``); None for a plain request."""
    htmx = getattr(request, "htmx", None)
    return htmx.target if htmx else None


def render_page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    partials: Collection[str] = (),
    status: int = 200,
) -> HttpResponse:
    """``template`` whole, or only its partial named by the request's ``HX-Target``, when that is
    one of ``partials``."""
    target = htmx_target(request)
    name = f"{template}#{target}" if target is not None and target in partials else template
    return render(request, name, context, status=status)
