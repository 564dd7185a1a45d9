"""Bayesian comparison of two conversion rates under Beta(1, 1) priors: pure standard library.

P(p_variant > p_control) and the expected losses are computed exactly — Evan Miller's closed-form
sum for moderate counts, Gauss–Legendre quadrature for large ones — never by sampling. Used by
:mod:`triggers.stats`, which re-exports :func:`chance_to_beat`, :func:`expected_loss` and
:func:`prob_greater`.
"""

from __future__ import annotations

import math

# --- Bayesian pieces: X ~ Beta(a, b) posteriors with a = conversions + 1, b = failures + 1 ------


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _log_gamma_ratio(x: float, h: float) -> float:
    """log Γ(x + h) − log Γ(x) for x > 0 and integer h ≥ 0.

    Differences of two log-gammas of a few million lose about 1e-8 to rounding; Stirling's series
    written with log1p keeps the error near the rounding of the (much smaller) result.
    """
    shift = 0.0
    while x < 10 and h >= 1:  # Γ(x + 1) = x Γ(x)
        shift += math.log(x)
        x, h = x + 1, h - 1
    if x < 10 or h == 0:
        return shift + math.lgamma(x + h) - math.lgamma(x)
    return (
        shift
        + (x - 0.5) * math.log1p(h / x)
        + h * (math.log(x + h) - 1)
        + _stirling_tail(x + h)
        - _stirling_tail(x)
    )


def _stirling_tail(y: float) -> float:
    """log Γ(y) − ((y − ½) log y − y + ½ log 2π), to 1e-14 for y ≥ 10."""
    r = 1 / y
    r2 = r * r
    return r * (1 / 12 - r2 * (1 / 360 - r2 * (1 / 1260 - r2 * (1 / 1680 - r2 / 1188))))


def _miller_sum(a_a: int, b_a: int, a_b: int, b_b: int) -> float:
    """P(X_B > X_A) by Evan Miller's closed form, for integer a_b.

    The sum's terms t_i (i = 0 … a_b − 1) are the probabilities of a beta-negative-binomial
    distribution, which is unimodal, so the sum starts at the largest term and walks outwards with
    the ratio t_{i+1}/t_i = (a_a + i)(b_b + i) / ((a_a + b_a + b_b + i)(1 + i)), stopping once the
    terms left (each no larger than the current one) cannot add 1e-17 of the total.
    """
    crossing = (a_a * b_b - a_a - b_a - b_b) / (b_a + 1)  # t_{i+1} >= t_i while i <= crossing
    mode = 0 if crossing < 0 else int(min(crossing + 1, a_b - 1))
    log_top = (  # log t_mode = log C(mode + b_b − 1, mode) B(a_a + mode, b_a + b_b) / B(a_a, b_a)
        _log_gamma_ratio(b_b, mode)
        - math.lgamma(mode + 1)
        + _log_gamma_ratio(a_a, mode)
        - _log_gamma_ratio(b_a + b_b, a_a + mode)
        + _log_gamma_ratio(b_a, a_a)
    )
    total, term, i = 1.0, 1.0, mode
    while i < a_b - 1:
        term *= (a_a + i) * (b_b + i) / ((a_a + b_a + b_b + i) * (1 + i))
        i += 1
        total += term
        if term * (a_b - 1 - i) < 1e-17 * total:
            break
    term, i = 1.0, mode
    while i > 0:
        term *= i * (a_a + b_a + b_b + i - 1) / ((a_a + i - 1) * (b_b + i - 1))
        i -= 1
        total += term
        if term * i < 1e-17 * total:
            break
    return min(1.0, math.exp(log_top) * total)


def _gauss_legendre(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes and weights of the n-point Gauss–Legendre rule on [-1, 1] (Newton on P_n)."""
    nodes, weights = [], []
    for k in range(1, n + 1):
        x = math.cos(math.pi * (k - 0.25) / (n + 0.5))
        for _ in range(100):
            p0, p1 = 1.0, x
            for j in range(2, n + 1):
                p0, p1 = p1, ((2 * j - 1) * x * p1 - (j - 1) * p0) / j
            slope = n * (x * p1 - p0) / (x * x - 1)
            step = p1 / slope
            x -= step
            if abs(step) < 1e-16:
                break
        nodes.append(x)
        weights.append(2 / ((1 - x * x) * slope * slope))
    order = sorted(range(n), key=nodes.__getitem__)
    return tuple(nodes[i] for i in order), tuple(weights[i] for i in order)


_PANEL_RULE = _gauss_legendre(10)
_STEP_RULE = _gauss_legendre(5)
_SPAN = 14.0  # standard deviations each side of the mean: the mass beyond is below 1e-40
_PANEL_SDS = 2.0  # panel width in standard deviations of the narrower posterior


def _beta_moments(a: float, b: float) -> tuple[float, float]:
    mean = a / (a + b)
    return mean, math.sqrt(mean * (1 - mean) / (a + b + 1))


def _beta_density(a: float, b: float):
    """Beta(a, b) density up to a constant: 1 at the mode, accurate to rounding far from it."""
    mode = (a - 1) / (a + b - 2)

    def density(x: float) -> float:
        return math.exp(
            (a - 1) * math.log1p((x - mode) / mode) + (b - 1) * math.log1p((mode - x) / (1 - mode))
        )

    return density


def _quadrature_greater(a_n: float, b_n: float, a_w: float, b_w: float) -> float:
    """P(X_n > X_w) = ∫ f_n(x) F_w(x) dx for large a and b, where X_n is the narrower posterior.

    Composite 10-point Gauss–Legendre panels two standard deviations of X_n wide over its mean
    ± 14 sd; F_w at each node is accumulated from X_w's lower tail (mean − 14 sd) with 5-point rules
    between consecutive points, and carried on to its upper tail. Both densities are evaluated
    relative to their modes and normalised by their own quadrature sums, so no log-gamma (whose
    rounding grows with the counts) and no incomplete beta function is needed.
    """
    mean_n, sd_n = _beta_moments(a_n, b_n)
    mean_w, sd_w = _beta_moments(a_w, b_w)
    low, high = max(mean_n - _SPAN * sd_n, 0.0), min(mean_n + _SPAN * sd_n, 1.0)
    w_low, w_high = max(mean_w - _SPAN * sd_w, 0.0), min(mean_w + _SPAN * sd_w, 1.0)
    if low >= w_high:
        return 1.0
    if high <= w_low:
        return 0.0
    f_n, f_w = _beta_density(a_n, b_n), _beta_density(a_w, b_w)
    step_nodes, step_weights = _STEP_RULE

    def mass_w(left: float, right: float) -> float:
        half, mid = (right - left) / 2, (right + left) / 2
        return half * sum(
            w * f_w(mid + half * t) for t, w in zip(step_nodes, step_weights, strict=True)
        )

    def tail_w(left: float, right: float) -> float:
        if right <= left:
            return 0.0
        pieces = math.ceil((right - left) / sd_w)
        width = (right - left) / pieces
        return sum(mass_w(left + k * width, left + (k + 1) * width) for k in range(pieces))

    cdf_w = tail_w(w_low, low)
    point = max(low, w_low)
    panels = math.ceil((high - low) / (_PANEL_SDS * sd_n))
    width = (high - low) / panels
    panel_nodes, panel_weights = _PANEL_RULE
    total = mass_n = 0.0
    for k in range(panels):
        left = low + k * width
        for t, w in zip(panel_nodes, panel_weights, strict=True):
            x = left + width * (t + 1) / 2
            if x > point:
                cdf_w += mass_w(point, min(x, w_high))
                point = min(x, w_high)
            density = w * f_n(x)
            mass_n += density
            total += density * cdf_w
    cdf_w += tail_w(point, w_high)
    return min(max(total / (mass_n * cdf_w), 0.0), 1.0)


QUADRATURE_ABOVE = 5_000  # terms in the closed-form sum beyond which quadrature is cheaper


def prob_greater(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(X1 > X2) for independent X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2), integer a and b ≥ 1."""
    # Four equivalent closed forms (swap the arms, or swap conversions with failures, p -> 1 - p);
    # the number of terms is the first Beta parameter of "B", so take the smallest.
    options = [
        (a1, lambda: _miller_sum(a2, b2, a1, b1)),
        (a2, lambda: 1 - _miller_sum(a1, b1, a2, b2)),
        (b2, lambda: _miller_sum(b1, a1, b2, a2)),
        (b1, lambda: 1 - _miller_sum(b2, a2, b1, a1)),
    ]
    terms, closed_form = min(options, key=lambda option: option[0])
    if terms <= QUADRATURE_ABOVE:
        return min(max(closed_form(), 0.0), 1.0)
    if _beta_moments(a1, b1)[1] <= _beta_moments(a2, b2)[1]:
        return _quadrature_greater(a1, b1, a2, b2)
    return 1 - _quadrature_greater(a2, b2, a1, b1)


def chance_to_beat(control: tuple[int, int], variant: tuple[int, int]) -> float:
    """P(p_variant > p_control) under Beta(1, 1) priors; (conversions, users) per arm."""
    (xc, nc), (xv, nv) = control, variant
    return prob_greater(xv + 1, nv - xv + 1, xc + 1, nc - xc + 1)


def expected_loss(control: tuple[int, int], variant: tuple[int, int]) -> tuple[float, float]:
    """(ship, keep) = (E[max(p_c − p_v, 0)], E[max(p_v − p_c, 0)]) under Beta(1, 1) priors.

    Uses x·Beta(a, b) density = a/(a+b)·Beta(a+1, b) density:
    E[p_c·1(p_c > p_v)] = mean_c·P(Beta(a_c+1, b_c) > p_v), likewise for p_v; keep = ship + mean_v −
    mean_c.
    """
    (xc, nc), (xv, nv) = control, variant
    ac, bc, av, bv = xc + 1, nc - xc + 1, xv + 1, nv - xv + 1
    mean_c, mean_v = ac / (ac + bc), av / (av + bv)
    ship = mean_c * prob_greater(ac + 1, bc, av, bv) - mean_v * prob_greater(ac, bc, av + 1, bv)
    ship = max(ship, 0.0)
    return ship, max(ship + mean_v - mean_c, 0.0)
