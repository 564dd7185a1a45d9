"""The interval around "treated − holdout" conversion rates, for lift tiles and flags.

Uses :func:`triggers.stats.analyse` (Newcombe's hybrid score interval for a difference of two
proportions) when that module is present; otherwise the same interval computed here, so the KPI
pages never depend on the experiment pages being deployed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

Z95 = NormalDist().inv_cdf(0.975)


@dataclass(frozen=True)
class Lift:
    treated_users: int
    treated_conversions: int
    holdout_users: int
    holdout_conversions: int
    treated_rate: float
    holdout_rate: float
    difference: float
    low: float
    high: float

    @property
    def label(self) -> str:
        return f"{self.difference * 100:+.1f} pp"

    @property
    def interval_label(self) -> str:
        return f"{self.low * 100:+.1f} to {self.high * 100:+.1f} pp"

    @property
    def basis(self) -> str:
        return (
            f"{self.treated_rate * 100:.1f} % of {self.treated_users:,} treated vs "
            f"{self.holdout_rate * 100:.1f} % of {self.holdout_users:,} held out"
        )


def _wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = x / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if x == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if x == n else min(1.0, max(p, centre + half))
    return low, high


def newcombe_difference(
    control: tuple[int, int], variant: tuple[int, int]
) -> tuple[float, tuple[float, float]]:
    """Variant − control rate with Newcombe's hybrid score (Wilson) interval, 95 %."""
    (xc, nc), (xv, nv) = control, variant
    pc, pv = xc / nc, xv / nv
    lc, uc = _wilson(xc, nc)
    lv, uv = _wilson(xv, nv)
    difference = pv - pc
    low = difference - math.sqrt((pv - lv) ** 2 + (uc - pc) ** 2)
    high = difference + math.sqrt((uv - pv) ** 2 + (pc - lc) ** 2)
    return difference, (low, high)


def _difference(
    control: tuple[int, int], variant: tuple[int, int]
) -> tuple[float, tuple[float, float]]:
    try:
        from triggers.stats import Arm, analyse
    except ImportError:
        return newcombe_difference(control, variant)
    analysis = analyse(
        [Arm("holdout", control[1], control[0]), Arm("treated", variant[1], variant[0])],
        control="holdout",
    )
    [comparison] = analysis.comparisons
    return comparison.difference, comparison.difference_ci


def lift(
    *, treated_users: int, treated_conversions: int, holdout_users: int, holdout_conversions: int
) -> Lift | None:
    """Treated − holdout conversion rate with its 95 % interval; None without both arms."""
    if treated_users <= 0 or holdout_users <= 0:
        return None
    difference, (low, high) = _difference(
        (holdout_conversions, holdout_users), (treated_conversions, treated_users)
    )
    return Lift(
        treated_users=treated_users,
        treated_conversions=treated_conversions,
        holdout_users=holdout_users,
        holdout_conversions=holdout_conversions,
        treated_rate=treated_conversions / treated_users,
        holdout_rate=holdout_conversions / holdout_users,
        difference=difference,
        low=low,
        high=high,
    )
