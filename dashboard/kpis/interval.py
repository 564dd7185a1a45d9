"""The interval around "treated − holdout" conversion rates, for lift tiles and flags.

The interval is :func:`triggers.stats.difference_interval` (Newcombe's hybrid score interval), the
same the experiment pages and ``ab_calc`` show.
"""

from __future__ import annotations

from dataclasses import dataclass

from triggers.stats import difference_interval


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


def lift(
    *, treated_users: int, treated_conversions: int, holdout_users: int, holdout_conversions: int
) -> Lift | None:
    """Treated − holdout conversion rate with its 95 % interval; None without both arms."""
    if treated_users <= 0 or holdout_users <= 0:
        return None
    difference, (low, high) = difference_interval(
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
