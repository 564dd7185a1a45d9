"""Numbers of the experiment pages, written exactly as ``manage.py ab_calc`` writes them."""

from __future__ import annotations

from django import template

from triggers.management.commands import ab_calc

register = template.Library()


@register.filter
def pct(value: float | None) -> str:
    """0.1234 → ``12.34%``; None → ``-``."""
    return ab_calc._percent(value)


@register.filter
def points(value: float | None) -> str:
    """A difference of rates: 0.0123 → ``+1.23 pp``."""
    return ab_calc._points(value)


@register.filter
def lift(value: float | None) -> str:
    """A relative lift: 0.25 → ``+25.00%``."""
    return ab_calc._lift(value)


@register.filter
def pvalue(value: float | None) -> str:
    return ab_calc._p(value)


@register.filter
def chance(value: float | None) -> str:
    return "-" if value is None else ab_calc._chance(value)


@register.filter
def pct_interval(value: tuple[float, float] | list[float] | None) -> str:
    return ab_calc._interval(tuple(value) if value else None)


@register.filter
def points_interval(value: tuple[float, float] | list[float] | None) -> str:
    return ab_calc._interval(tuple(value) if value else None, ab_calc._points)


@register.filter
def lift_interval(value: tuple[float, float] | list[float] | None) -> str:
    return ab_calc._interval(tuple(value) if value else None, ab_calc._lift)


@register.filter
def loss(value: float | None) -> str:
    """Expected loss in points: 0.00012 → ``0.012 pp``."""
    return "-" if value is None else f"{value * 100:.3f} pp"


@register.filter
def share(value: float | None) -> str:
    """A share of people: 0.45 → ``45%`` (one decimal when it is not whole)."""
    if value is None:
        return "-"
    text = f"{value * 100:.1f}".removesuffix(".0")
    return f"{text}%"
