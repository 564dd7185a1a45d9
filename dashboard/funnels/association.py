"""Association in a 2×2 table, for "why do people stop at this step": pure standard library.

The table counts, among the people judged (settled entrants who reached the step before), those
who stopped and those who passed, with and without a feature (an event done, an entry property, a
trait)::

                 with   without
    stopped        a        c
    passed         b        d

- odds ratio of stopping with the feature: ``(a·d) / (b·c)``, with Woolf's 95 % interval on the
  log scale; a 0.5 is added to every cell when one is 0 (Haldane–Anscombe), so the ratio and its
  interval stay finite;
- p-value: Fisher's exact test, two-sided (the sum of the hypergeometric probabilities of every
  table with the same margins that is no more likely than the one observed), exact at any size;
- several features are tested at once, so the caller adjusts with Holm (:func:`triggers.stats.holm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from triggers.stats import Z

# Relative tolerance for "no more likely than the observed table" (ties in floating point).
_TIE = math.log1p(1e-7)
# A term this far below the observed table's log probability adds nothing to the p-value.
_NEGLIGIBLE = 60.0


@dataclass(frozen=True, slots=True)
class OddsRatio:
    estimate: float
    low: float
    high: float


def odds_ratio(a: int, b: int, c: int, d: int) -> OddsRatio:
    """The sample odds ratio ``a·d / b·c`` with Woolf's 95 % interval."""
    if min(a, b, c, d) < 0:
        raise ValueError("counts must be non-negative")
    if 0 in (a, b, c, d):
        a, b, c, d = a + 0.5, b + 0.5, c + 0.5, d + 0.5  # type: ignore[assignment]
    log_ratio = math.log(a) + math.log(d) - math.log(b) - math.log(c)
    se = math.sqrt(1 / a + 1 / b + 1 / c + 1 / d)
    return OddsRatio(
        math.exp(log_ratio), math.exp(log_ratio - Z * se), math.exp(log_ratio + Z * se)
    )


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test for the table ``[[a, c], [b, d]]``.

    ``a`` follows a hypergeometric law given the margins; the walk starts at its mode and goes out
    both ways, adding every table no more likely than the observed one, until the terms vanish.
    """
    if min(a, b, c, d) < 0:
        raise ValueError("counts must be non-negative")
    total, with_feature, stopped = a + b + c + d, a + b, a + c
    low, high = max(0, stopped + with_feature - total), min(stopped, with_feature)
    if low == high:
        return 1.0
    base = _log_comb(total, stopped)

    def log_p(x: int) -> float:
        return _log_comb(with_feature, x) + _log_comb(total - with_feature, stopped - x) - base

    observed = log_p(a)
    mode = min(high, max(low, (stopped + 1) * (with_feature + 1) // (total + 2)))
    p = 0.0
    for step in (-1, 1):
        x = mode if step == -1 else mode + 1
        while low <= x <= high:
            term = log_p(x)
            if term <= observed + _TIE:
                p += math.exp(term)
                if term < observed - _NEGLIGIBLE:
                    break  # further out, every term is smaller still
            x += step
    return min(1.0, p)
