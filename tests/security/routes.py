"""Every URL pattern of the project, from the resolver, and a concrete URL for each."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from django.contrib import admin
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from onboarding.models import Person


@dataclass(frozen=True)
class Route:
    name: str  # "namespace:name", or "namespace:<unnamed>"
    pattern: str
    params: tuple[str, ...]
    regex: bool


def walk(patterns, prefix: str = "", namespace: str | None = None):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = entry.namespace
            ns = f"{namespace}:{inner}" if namespace and inner else (inner or namespace)
            yield from walk(entry.url_patterns, prefix + str(entry.pattern), ns)
        elif isinstance(entry, URLPattern):
            name = entry.name or "<unnamed>"
            qualified = f"{namespace}:{name}" if namespace else name
            params = tuple(entry.pattern.regex.groupindex)
            yield Route(qualified, prefix + str(entry.pattern), params, "^" in str(entry.pattern))


ROUTES = list(walk(get_resolver().url_patterns))


def _object_id(route: Route) -> str:
    """The pk of an object of the admin page's model (the person, for unnamed admin routes)."""
    model = Person
    for registered in admin.site._registry:
        opts = registered._meta
        if route.name.startswith(f"admin:{opts.app_label}_{opts.model_name}_"):
            model = registered
    first = model._default_manager.order_by("pk").first()
    return str(first.pk) if first else "1"


def url_for(route: Route, values: dict[str, str]) -> str:
    kwargs = {}
    for param in route.params:
        if param == "object_id":
            kwargs[param] = _object_id(route)
        elif param in values:
            kwargs[param] = values[param]
        else:
            pytest.fail(f"{route.pattern}: add a value for path parameter {param!r} to `probe`")
    if not route.name.endswith("<unnamed>"):
        return reverse(route.name, kwargs=kwargs)
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: kwargs[m[1]], route.pattern)
    return "/" + path
