"""Numbers of the experiment pages, written exactly as ``manage.py ab_calc`` writes them
(both use :mod:`dashboard.formatting`)."""

from __future__ import annotations

from django import template

from dashboard import formatting

register = template.Library()


@register.filter
def pct(value: float | None) -> str:
    """0.1234 → ``12.34%``; None → ``-``."""
    return formatting.stat_percent(value)


@register.filter
def points(value: float | None) -> str:
    """A difference of rates: 0.0123 → ``+1.23 pp``."""
    return formatting.stat_points(value)


@register.filter
def lift(value: float | None) -> str:
    """A relative lift: 0.25 → ``+25.00%``."""
    return formatting.stat_lift(value)


@register.filter
def pvalue(value: float | None) -> str:
    return formatting.stat_p(value)


@register.filter
def chance(value: float | None) -> str:
    return formatting.stat_chance(value)


@register.filter
def pct_interval(value: tuple[float, float] | list[float] | None) -> str:
    return formatting.stat_interval(tuple(value) if value else None)


@register.filter
def points_interval(value: tuple[float, float] | list[float] | None) -> str:
    return formatting.stat_interval(tuple(value) if value else None, formatting.stat_points)


@register.filter
def lift_interval(value: tuple[float, float] | list[float] | None) -> str:
    return formatting.stat_interval(tuple(value) if value else None, formatting.stat_lift)


@register.filter
def loss(value: float | None) -> str:
    return formatting.expected_loss(value)


@register.filter
def share(value: float | None) -> str:
    return formatting.share(value)
