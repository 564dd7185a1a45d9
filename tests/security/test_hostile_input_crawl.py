"""Odd input never answers 5xx: every GET URL, with hostile query parameters, as every role.

The URLs come from the resolver (``routes.ROUTES``) with real objects behind their path
parameters (the permission matrix's ``world``, plus a rejected event holding a lone surrogate).
For each role, each URL is first requested plainly while every read of a query parameter is
recorded (``request.GET.get("q")``, a form bound to ``request.GET``…), so the crawler learns the
parameters each page actually reads. The page is then requested with all of those (and a few
common ones, and the admin's date-hierarchy parameters) set to one hostile value at a time: a
NUL byte, a 20-digit integer, zero, an impossible date, invalid UTF-8 percent-escapes (an encoded
lone surrogate among them) in very long text; and with some values in each parameter alone. Pages
a role cannot open (a login redirect or 403 for the plain request) are left to the permission
matrix.

Runs on PostgreSQL, where NUL bytes in text parameters are a ``DataError`` (SQLite stores them).
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from django.contrib import admin
from django.http import QueryDict
from django.test import Client
from django.utils.datastructures import MultiValueDict

from onboarding.models import FailedEvent

from .routes import ROUTES, url_for
from .test_permission_matrix import ROLES, _client, _outcome, world  # noqa: F401 (fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

# Parameters tried on every page, whether or not the plain request read them.
COMMON = ("q", "page", "p", "o", "id", "since", "until", "range", "step", "rule", "person")

# Raw (already percent-encoded) hostile values, each sent in every parameter at once. Every role
# sends EVERY_ROLE to each page it can open; the others, and each value of INDIVIDUAL in each
# parameter alone (so that one refused parameter cannot hide another), are sent once per page, by
# the first role that can open it: they test how a page parses its parameters, which does not
# depend on who asks, and the crawl stays within a minute.
HOSTILE = {
    "nul": "a%00b",
    "huge": "99999999999999999999",
    "zero": "0",
    "bad date": "99999-13-45",
    "invalid utf-8": "%ff%fe%c3%28%ed%a0%80" + "x" * 3000,
}
EVERY_ROLE = ("nul", "huge")
INDIVIDUAL = ("huge", "bad date")


@contextmanager
def recording_parameter_reads():
    """Record every key looked up in a ``QueryDict`` (``request.GET``/``POST``) meanwhile."""
    seen: set[str] = set()
    originals = {}

    def wrap(name):
        original = getattr(MultiValueDict, name, None) or getattr(dict, name)
        originals[name] = QueryDict.__dict__.get(name)

        def reading(self, key, *args, **kwargs):
            if isinstance(key, str):
                seen.add(key)
            return original(self, key, *args, **kwargs)

        setattr(QueryDict, name, reading)

    for name in ("get", "getlist", "__getitem__", "__contains__"):
        wrap(name)
    try:
        yield seen
    finally:
        for name, original in originals.items():
            if original is None:
                delattr(QueryDict, name)
            else:
                setattr(QueryDict, name, original)


def _admin_parameters(path: str) -> set[str]:
    """The date-hierarchy lookups of an admin changelist (``timestamp__year`` …)."""
    names: set[str] = set()
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        field = model_admin.date_hierarchy
        if field and path.rstrip("/").endswith(f"/admin/{opts.app_label}/{opts.model_name}"):
            names |= {f"{field}__year", f"{field}__month", f"{field}__day"}
    return names


@pytest.fixture(scope="module")
def crawl_world(world, django_db_blocker):  # noqa: F811 (the matrix's fixture)
    """``world`` plus a rejected event whose payload holds a lone surrogate (valid JSON text)."""
    with django_db_blocker.unblock():
        # The admin pages open the first row: give it the surrogate (escaped, as JSON text).
        FailedEvent.objects.filter(pk=FailedEvent.objects.order_by("pk")[0].pk).update(
            payload='{"type": "track", "userId": "probe", "properties": {"name": "\\ud800"}}'
        )
    return world


# Pages already crawled with every value by an earlier role.
_crawled: set[str] = set()
# (kind of page, parameter, value) already sent alone.
_tried_alone: set[tuple[str, str, str]] = set()
ADMIN_PAGE = re.compile(r"^admin:\w+?_(changelist|add|history|delete|change)$")


def _kind(route, url: str) -> str:
    """The page itself, but one kind for the same admin view of every model (the admin's own
    parameters, ``_popup``, ``_changelist_filters``…, are parsed by the same code): a model's own
    parameters (its date hierarchy) have their own names, so they are still each sent alone."""
    match = ADMIN_PAGE.match(route.name)
    return f"admin {match[1]}" if match else url


def _crawl(role: str, state) -> tuple[list[str], int]:
    users, values = state
    client: Client = _client(role, users)
    problems: list[str] = []
    count = 0

    def get(url: str, query: str, label: str) -> None:
        nonlocal count
        response = client.get(f"{url}?{query}" if query else url)
        count += 1
        if response.status_code >= 500:
            problems.append(f"GET {url}?{query[:120]} ({label}) -> {response.status_code}")

    for route in ROUTES:
        if "logout" in route.name:
            continue  # would end the session; its GET is covered by the permission matrix
        url = url_for(route, values)
        with recording_parameter_reads() as read:
            plain = client.get(url)
        count += 1
        if plain.status_code >= 500:
            problems.append(f"GET {url} -> {plain.status_code}")
        if _outcome(plain) in ("L", "403"):
            continue  # refused before any parameter is read (the permission matrix's business)
        first = url not in _crawled
        _crawled.add(url)
        own = sorted(read | _admin_parameters(url))
        every = sorted(set(own) | set(COMMON))
        for label, value in HOSTILE.items():
            if first or label in EVERY_ROLE:
                get(url, "&".join(f"{quote(name)}={value}" for name in every), label)
        for name in own if first else ():
            for label in INDIVIDUAL:
                if (_kind(route, url), name, label) not in _tried_alone:
                    _tried_alone.add((_kind(route, url), name, label))
                    get(url, f"{quote(name)}={HOSTILE[label]}", f"{label} in {name}")
    return problems, count


@pytest.mark.parametrize("role", ROLES)
def test_no_5xx_for_hostile_parameters(role, crawl_world):
    started = time.monotonic()
    problems, count = _crawl(role, crawl_world)
    elapsed = time.monotonic() - started
    print(f"{role}: {count} requests in {elapsed:.1f} s")  # shown with -s
    assert count > len(ROUTES), "the crawl requested too little"
    assert not problems, f"{role}: {len(problems)} of {count} requests answered 5xx:\n" + "\n".join(
        problems
    )
    assert elapsed < 60, f"{role}: the crawl took {elapsed:.0f} s"
