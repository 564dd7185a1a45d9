"""Every number the pages and the dashboard's commands write for people: shares, durations and the
experiment statistics. One module, so the same quantity is spelled the same way everywhere; each
spelling is kept exactly as the page or command that introduced it printed it.

The config file's durations (``30m``, ``7d``) are a format, not a display: they stay in
``onboarding.configfile.durations``.
"""

from __future__ import annotations

from collections.abc import Callable

# --- shares -------------------------------------------------------------------------------------


def percent(ratio: float) -> str:
    """``0.384`` → ``38 %``; below 10 % one decimal (``4.5 %``), since small shares matter."""
    value = ratio * 100
    if 0 < value < 10:
        return f"{value:.1f}\u202f%"
    return f"{round(value)}\u202f%"


def percent_tenths(ratio: float | None) -> str:
    """A KPI rate: ``0.1234`` → ``12.3 %``; an en dash for none."""
    return "–" if ratio is None else f"{ratio * 100:.1f} %"


def points_tenths(difference: float) -> str:
    """A KPI difference of rates: ``0.012`` → ``+1.2 pp``."""
    return f"{difference * 100:+.1f} pp"


def share(value: float | None) -> str:
    """A share of people: 0.45 → ``45%`` (one decimal when it is not whole)."""
    if value is None:
        return "-"
    text = f"{value * 100:.1f}".removesuffix(".0")
    return f"{text}%"


# --- durations ----------------------------------------------------------------------------------


def duration_label(seconds: float | None) -> str:
    """A median gap for people: ``45 s``, ``12 min``, ``3.5 h``, ``2.1 d``; an en dash for none."""
    if seconds is None:
        return "–"
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def duration_short(seconds: float | None) -> str:
    """The ``funnel`` command's table: ``90s``, ``12.5m``, ``3.0h``, ``2.1d``; ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:g}s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def minutes_words(minutes: int) -> str:
    """A whole number of minutes in the largest exact unit: ``2 days``, ``3 h``, ``45 min``."""
    if minutes % 1440 == 0:
        days = minutes // 1440
        return f"{days} day" + ("s" if days > 1 else "")
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min"


def seconds_words(seconds: int) -> str:
    """A whole number of seconds in the largest exact unit up to hours: ``2 h``, ``5 min``, ``9 s``."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def elapsed(seconds: float | None) -> str:
    """How long a computation took: ``45 ms`` or ``1.2 s``; empty for none."""
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


# --- experiment statistics, as ``manage.py ab_calc`` prints them and the pages show them ---------


def stat_percent(value: float | None, signed: bool = False) -> str:
    """0.1234 → ``12.34%`` (``+12.34%`` signed); None → ``-``."""
    if value is None:
        return "-"
    return f"{value * 100:+.2f}%" if signed else f"{value * 100:.2f}%"


def stat_points(value: float | None) -> str:
    """A difference of rates: 0.0123 → ``+1.23 pp``."""
    return "-" if value is None else f"{value * 100:+.2f} pp"


def stat_lift(value: float | None) -> str:
    """A relative lift: 0.25 → ``+25.00%``."""
    return stat_percent(value, signed=True)


def stat_chance(value: float | None) -> str:
    if value is None:
        return "-"
    return ">99.99%" if value > 0.9999 else "<0.01%" if value < 0.0001 else stat_percent(value)


def stat_p(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}" if value >= 0.0001 else f"{value:.1e}"


def stat_interval(
    interval: tuple[float, float] | None, form: Callable[[float | None], str] = stat_percent
) -> str:
    if interval is None:
        return "-"
    return f"[{form(interval[0])}, {form(interval[1])}]"


def expected_loss(value: float | None) -> str:
    """Expected loss in points: 0.00012 → ``0.012 pp``."""
    return "-" if value is None else f"{value * 100:.3f} pp"
