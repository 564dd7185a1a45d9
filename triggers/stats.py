"""Experiment statistics for conversion metrics: pure standard library, no Django.

Everything the experiment pages and ``manage.py ab_calc`` show comes from :func:`analyse`, whose
:meth:`Analysis.as_dict` is the JSON shape of DESIGN §3.5. Methods (docs/statistics.md explains them
for marketers, with references):

- rate interval: Wilson score interval (Wilson 1927);
- difference (variant − control): Newcombe's hybrid score interval (Newcombe 1998, method 10);
- relative lift (variant / control − 1): delta method on the log ratio (Katz et al. 1978), with a
  0.5 correction when a count is 0 or equals its users;
- p-value: two-sided two-proportion z-test with the pooled standard error; Holm (1979) adjustment
  across several variants against one control;
- chance to beat control and expected loss: exact under Beta(1, 1) priors, by Evan Miller's
  closed-form sum for moderate counts and Gauss–Legendre quadrature for large ones (no sampling);
- sample-ratio mismatch: chi-square goodness of fit against the weights, flagged at p < 0.001;
- sample size: two-proportion test, power 80 %, α 5 % two-sided, any split between arms;
- peeking: no verdict before the planned sample size (:func:`verdict_allowed`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from triggers.bayes import QUADRATURE_ABOVE, chance_to_beat, expected_loss, prob_greater

__all__ = [
    "QUADRATURE_ABOVE",
    "Analysis",
    "Arm",
    "analyse",
    "chance_to_beat",
    "difference_interval",
    "expected_loss",
    "holm",
    "prob_greater",
    "relative_lift_interval",
    "sample_ratio",
    "sample_size",
    "verdict",
    "verdict_allowed",
    "wilson_interval",
    "z_test_p_value",
]

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
SRM_ALPHA = 0.001
Z = NormalDist().inv_cdf(1 - ALPHA / 2)

Interval = tuple[float, float]


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    name: str
    users: int
    conversions: int


@dataclass(frozen=True)
class ArmResult:
    name: str
    users: int
    conversions: int
    rate: float | None  # None when the arm has no users yet
    ci: Interval | None


@dataclass(frozen=True)
class Comparison:
    arm: str
    control: str
    difference: float | None
    difference_ci: Interval | None
    relative_lift: float | None  # None when the control rate is 0 (or an arm has no users)
    relative_lift_ci: Interval | None
    p_value: float | None
    p_value_holm: float | None
    chance_to_beat_control: float
    expected_loss_ship: float
    expected_loss_keep: float


@dataclass(frozen=True)
class SampleRatio:
    expected_weights: tuple[float, ...]  # normalised to sum to 1
    chi2: float
    p_value: float
    mismatch: bool


@dataclass(frozen=True)
class Analysis:
    arms: tuple[ArmResult, ...]
    comparisons: tuple[Comparison, ...]
    srm: SampleRatio

    def as_dict(self) -> dict:
        """The JSON shape of DESIGN §3.5 (plus ``p_value_holm`` on each comparison)."""
        return {
            "arms": [
                {
                    "name": a.name,
                    "users": a.users,
                    "conversions": a.conversions,
                    "rate": a.rate,
                    "ci": _pair(a.ci),
                }
                for a in self.arms
            ],
            "comparisons": [
                {
                    "arm": c.arm,
                    "control": c.control,
                    "difference": c.difference,
                    "difference_ci": _pair(c.difference_ci),
                    "relative_lift": c.relative_lift,
                    "relative_lift_ci": _pair(c.relative_lift_ci),
                    "p_value": c.p_value,
                    "p_value_holm": c.p_value_holm,
                    "chance_to_beat_control": c.chance_to_beat_control,
                    "expected_loss": {"ship": c.expected_loss_ship, "keep": c.expected_loss_keep},
                }
                for c in self.comparisons
            ],
            "srm": {
                "expected_weights": list(self.srm.expected_weights),
                "chi2": self.srm.chi2,
                "p_value": self.srm.p_value,
                "mismatch": self.srm.mismatch,
            },
        }


def _pair(interval: Interval | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]


# --- frequentist pieces ----------------------------------------------------------------------


def wilson_interval(conversions: int, users: int, z: float = Z) -> Interval | None:
    """Wilson score interval for a proportion; never leaves [0, 1], sensible at 0 and n."""
    if users == 0:
        return None
    p = conversions / users
    z2 = z * z
    denominator = 1 + z2 / users
    centre = (p + z2 / (2 * users)) / denominator
    half = z * math.sqrt(p * (1 - p) / users + z2 / (4 * users * users)) / denominator
    low = 0.0 if conversions == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if conversions == users else min(1.0, max(p, centre + half))
    return low, high


def difference_interval(
    control: tuple[int, int], variant: tuple[int, int], z: float = Z
) -> tuple[float, Interval]:
    """Variant − control rate, with Newcombe's hybrid score interval from both Wilson intervals.

    ``control`` and ``variant`` are (conversions, users) with users > 0.
    """
    (xc, nc), (xv, nv) = control, variant
    pc, pv = xc / nc, xv / nv
    lc, uc = wilson_interval(xc, nc, z)  # type: ignore[misc]
    lv, uv = wilson_interval(xv, nv, z)  # type: ignore[misc]
    difference = pv - pc
    low = difference - math.sqrt((pv - lv) ** 2 + (uc - pc) ** 2)
    high = difference + math.sqrt((uv - pv) ** 2 + (pc - lc) ** 2)
    return difference, (low, high)


def relative_lift_interval(
    control: tuple[int, int], variant: tuple[int, int], z: float = Z
) -> tuple[float, Interval] | None:
    """Variant / control − 1 with a delta-method interval on log(variant / control).

    None when the control rate is 0. When a count is 0 or equals its users the log ratio's
    variance is undefined or 0, so the interval uses counts + 0.5 and users + 1 (Haldane–Anscombe);
    it is widened if needed to contain the observed lift (e.g. −100 % when the variant has 0).
    """
    (xc, nc), (xv, nv) = control, variant
    if xc == 0:
        return None
    lift = (xv / nv) / (xc / nc) - 1
    if xv in (0, nv) or xc == nc:
        xc, nc, xv, nv = xc + 0.5, nc + 1, xv + 0.5, nv + 1
    log_ratio = math.log(xv / nv) - math.log(xc / nc)
    se = math.sqrt(1 / xv - 1 / nv + 1 / xc - 1 / nc)
    low = math.expm1(log_ratio - z * se)
    high = math.expm1(log_ratio + z * se)
    return lift, (min(low, lift), max(high, lift))


def z_test_p_value(control: tuple[int, int], variant: tuple[int, int]) -> float:
    """Two-sided p-value of the two-proportion z-test with the pooled standard error."""
    (xc, nc), (xv, nv) = control, variant
    pooled = (xc + xv) / (nc + nv)
    variance = pooled * (1 - pooled) * (1 / nc + 1 / nv)
    if variance <= 0:
        return 1.0  # nobody or everybody converted in both arms: no evidence of a difference
    z = (xv / nv - xc / nc) / math.sqrt(variance)
    return min(1.0, math.erfc(abs(z) / math.sqrt(2)))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (monotone, capped at 1); None entries are skipped."""
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(present)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


# --- sample-ratio mismatch -------------------------------------------------------------------


def _upper_gamma_regularized(s: float, x: float) -> float:
    """Q(s, x) = Γ(s, x) / Γ(s): series below s + 1, Lentz's continued fraction above."""
    if x <= 0:
        return 1.0
    log_prefactor = -x + s * math.log(x) - math.lgamma(s)
    if x < s + 1:
        term = total = 1 / s
        denominator = s
        while abs(term) > abs(total) * 1e-17:
            denominator += 1
            term *= x / denominator
            total += term
        return max(0.0, 1 - total * math.exp(log_prefactor))
    tiny = 1e-300
    b = x + 1 - s
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - s)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-16:
            break
    return min(1.0, math.exp(log_prefactor) * h)


def chi2_sf(statistic: float, df: int) -> float:
    """Survival function of the chi-square distribution with df degrees of freedom."""
    return _upper_gamma_regularized(df / 2, statistic / 2)


def sample_ratio(users: Sequence[int], weights: Sequence[float]) -> SampleRatio:
    """Chi-square goodness of fit of assignment counts against the weights; mismatch at p < 0.001."""
    total_weight = sum(weights)
    expected_weights = tuple(w / total_weight for w in weights)
    total = sum(users)
    if total == 0 or len(users) < 2:
        return SampleRatio(expected_weights, 0.0, 1.0, False)
    chi2 = sum(
        (n - total * w) ** 2 / (total * w) for n, w in zip(users, expected_weights, strict=True)
    )
    p = chi2_sf(chi2, len(users) - 1)
    return SampleRatio(expected_weights, chi2, p, p < SRM_ALPHA)


# --- planning and peeking ----------------------------------------------------------------------


@dataclass(frozen=True)
class SampleSize:
    total: int
    per_arm: tuple[int, ...]
    weights: tuple[float, ...]  # normalised


def sample_size(
    baseline: float,
    minimum_effect: float,
    *,
    relative: bool = False,
    weights: Sequence[float] = (1, 1),
    control: int = 0,
    alpha: float = ALPHA,
    power: float = 0.80,
) -> SampleSize:
    """Users needed so that every variant-vs-control z-test (two-sided) has the given power.

    The effect is absolute (0.01 = one percentage point) unless ``relative`` (0.10 = +10 % of the
    baseline). With arms of unequal weights, each comparison's control size follows Fleiss's
    formula for unequal groups (ratio k = n_variant / n_control, pooled variance under the null);
    the total is the smallest whole number of users whose split by the weights powers every
    comparison, and per-arm sizes are that total times each weight, rounded up.
    """
    if not 0 < baseline < 1:
        raise ValueError(f"baseline rate must be between 0 and 1, got {baseline}")
    target = baseline * (1 + minimum_effect) if relative else baseline + minimum_effect
    if minimum_effect == 0 or not 0 < target < 1:
        raise ValueError(f"minimum effect {minimum_effect} must move the rate within (0, 1)")
    if len(weights) < 2 or any(not w > 0 for w in weights):
        raise ValueError("weights: need at least two positive weights")
    if not 0 <= control < len(weights):
        raise ValueError(f"control: no arm at index {control}")
    normal = NormalDist()
    z_alpha, z_beta = normal.inv_cdf(1 - alpha / 2), normal.inv_cdf(power)
    share = [w / sum(weights) for w in weights]
    p1, p2 = baseline, target
    needed = 0.0
    for i, w in enumerate(share):
        if i == control:
            continue
        k = w / share[control]
        pooled = (p1 + k * p2) / (1 + k)
        root = z_alpha * math.sqrt(pooled * (1 - pooled) * (1 + 1 / k)) + z_beta * math.sqrt(
            p1 * (1 - p1) + p2 * (1 - p2) / k
        )
        n_control = root * root / (p2 - p1) ** 2
        needed = max(needed, n_control / share[control])
    total = math.ceil(needed)
    return SampleSize(total, tuple(math.ceil(total * w) for w in share), tuple(share))


def verdict_allowed(users_per_arm: Sequence[int], planned_per_arm: int | Sequence[int]) -> bool:
    """Peeking guard: a verdict only once every arm has reached its planned number of users."""
    if isinstance(planned_per_arm, int):
        planned_per_arm = [planned_per_arm] * len(users_per_arm)
    if len(planned_per_arm) != len(users_per_arm):
        raise ValueError("planned_per_arm: one planned size per arm")
    return all(n >= plan for n, plan in zip(users_per_arm, planned_per_arm, strict=True))


# --- the whole analysis --------------------------------------------------------------------------


def _validate(arms: Sequence[Arm], control: str, weights: Sequence[float] | None) -> None:
    if len(arms) < 2:
        raise ValueError("arms: need at least two arms (a control and a variant)")
    seen: set[str] = set()
    for arm in arms:
        if not isinstance(arm.name, str) or not arm.name:
            raise ValueError(f"arm {arm.name!r}: name must be a non-empty string")
        if arm.name in seen:
            raise ValueError(f"arm {arm.name!r}: duplicate name")
        seen.add(arm.name)
        for field in ("users", "conversions"):
            value = getattr(arm, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"arm {arm.name!r}: {field} must be a non-negative integer")
        if arm.conversions > arm.users:
            raise ValueError(
                f"arm {arm.name!r}: conversions ({arm.conversions}) exceed users ({arm.users})"
            )
    if control not in seen:
        raise ValueError(f"control: no arm named {control!r}")
    if weights is not None:
        if len(weights) != len(arms):
            raise ValueError(f"weights: expected {len(arms)} (one per arm), got {len(weights)}")
        for arm, w in zip(arms, weights, strict=True):
            if not (isinstance(w, int | float) and math.isfinite(w) and w > 0):
                raise ValueError(f"weights: weight of arm {arm.name!r} must be positive, got {w}")


def _compare(control: Arm, variant: Arm) -> Comparison:
    c, v = (control.conversions, control.users), (variant.conversions, variant.users)
    ship, keep = expected_loss(c, v)
    chance = chance_to_beat(c, v)
    if control.users == 0 or variant.users == 0:
        return Comparison(
            variant.name, control.name, None, None, None, None, None, None, chance, ship, keep
        )
    difference, difference_ci = difference_interval(c, v)
    lift = relative_lift_interval(c, v)
    return Comparison(
        arm=variant.name,
        control=control.name,
        difference=difference,
        difference_ci=difference_ci,
        relative_lift=None if lift is None else lift[0],
        relative_lift_ci=None if lift is None else lift[1],
        p_value=z_test_p_value(c, v),
        p_value_holm=None,
        chance_to_beat_control=chance,
        expected_loss_ship=ship,
        expected_loss_keep=keep,
    )


def analyse(
    arms: Sequence[Arm], control: str | None = None, weights: Sequence[float] | None = None
) -> Analysis:
    """Rates, comparisons of every other arm with the control, Holm adjustment and SRM check.

    ``control`` defaults to the first arm and ``weights`` (the planned split) to equal weights.
    Raises ValueError naming the offending arm or field.
    """
    control = arms[0].name if control is None and arms else control
    _validate(arms, control, weights)  # type: ignore[arg-type]
    control_arm = next(a for a in arms if a.name == control)
    results = tuple(
        ArmResult(
            a.name,
            a.users,
            a.conversions,
            a.conversions / a.users if a.users else None,
            wilson_interval(a.conversions, a.users),
        )
        for a in arms
    )
    comparisons = [_compare(control_arm, a) for a in arms if a.name != control]
    adjusted = holm([c.p_value for c in comparisons])
    comparisons = [
        Comparison(**{**c.__dict__, "p_value_holm": p})
        for c, p in zip(comparisons, adjusted, strict=True)
    ]
    srm = sample_ratio([a.users for a in arms], weights or [1.0] * len(arms))
    return Analysis(results, tuple(comparisons), srm)


def verdict(analysis: Analysis, planned_per_arm: int | Sequence[int] | None = None) -> str:
    """One sentence for the table view: withheld on SRM or before the planned size, else Holm."""
    if analysis.srm.mismatch:
        return (
            f"SRM: no verdict — sample-ratio mismatch (p = {analysis.srm.p_value:.2g} < "
            f"{SRM_ALPHA}): the assignment counts do not match the weights, so the results are "
            "not trustworthy until the assignment is fixed"
        )
    if planned_per_arm is not None and not verdict_allowed(
        [a.users for a in analysis.arms], planned_per_arm
    ):
        return "No verdict yet: not every arm has reached its planned sample size"
    parts = []
    for c in analysis.comparisons:
        if c.p_value_holm is None:
            parts.append(f"{c.arm}: no users yet")
        elif c.p_value_holm < ALPHA:
            better = "beats" if c.difference > 0 else "is worse than"  # type: ignore[operator]
            parts.append(f"{c.arm} {better} {c.control} (Holm p = {c.p_value_holm:.2g})")
        else:
            parts.append(f"{c.arm}: no significant difference from {c.control}")
    return "Verdict: " + "; ".join(parts)
