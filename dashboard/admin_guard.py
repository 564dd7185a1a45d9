"""Admin changelists that answer odd query strings without a 500.

Django's changelist turns the date hierarchy's ``<field>__year/__month/__day`` parameters into a
``datetime`` and turns a ``ValueError`` into its "incorrect lookup" redirect (``?e=1``), but a
20-digit year is an ``OverflowError``, which escapes as a 500 (``?timestamp__year=99999999999999999999``
on the events list). The site registers every model admin, ours and third-party ones alike
(django-celery-beat's periodic tasks have a date hierarchy too), with :class:`GuardedChangeListAdmin`
in front, so each changelist checks those parameters first: digits only, year 1..9999, month
1..12, day 1..31, else the same redirect as any other incorrect lookup.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest

DATE_PARTS = {"year": 9999, "month": 12, "day": 31}


def check_date_hierarchy(request: HttpRequest, field: str | None) -> None:
    """Raise ``IncorrectLookupParameters`` for a date-hierarchy parameter out of its range."""
    if not field:
        return
    for part, highest in DATE_PARTS.items():
        for value in request.GET.getlist(f"{field}__{part}"):
            digits = value.lstrip("0")
            valid = value.isascii() and value.isdigit() and len(digits) <= 4
            if not (valid and 1 <= int(digits or 0) <= highest):
                raise IncorrectLookupParameters(f"{field}__{part}: {value[:20]!r} is not a {part}")


_guarded_changelists: dict[type, type] = {}


def guarded_changelist(base: type[ChangeList]) -> type[ChangeList]:
    if base not in _guarded_changelists:

        def get_filters(self: ChangeList, request: HttpRequest, *args: Any, **kwargs: Any):
            check_date_hierarchy(request, self.date_hierarchy)
            return base.get_filters(self, request, *args, **kwargs)

        _guarded_changelists[base] = type(
            f"Guarded{base.__name__}", (base,), {"get_filters": get_filters}
        )
    return _guarded_changelists[base]


class GuardedChangeListAdmin:
    """A model admin mixin: its changelist checks the date hierarchy's parameters."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return guarded_changelist(super().get_changelist(request, **kwargs))  # type: ignore[misc]


class GuardedAdminSite(admin.AdminSite):
    """An admin site that puts :class:`GuardedChangeListAdmin` in front of every model admin."""

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        admin_class = admin_class or admin.ModelAdmin
        if not issubclass(admin_class, GuardedChangeListAdmin):
            admin_class = type(
                admin_class.__name__,
                (GuardedChangeListAdmin, admin_class),
                {"__module__": admin_class.__module__, "__doc__": admin_class.__doc__},
            )
        super().register(model_or_iterable, admin_class, **options)
