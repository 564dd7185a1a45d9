"""``manage.py ab_calc --arm NAME=CONVERSIONS/USERS [--arm …] [--control NAME] [--weights 10,45,45]
[--format table|json]``: the experiment statistics for any counts (DESIGN §3.5, docs/statistics.md)."""

from __future__ import annotations

import json
import math
import re

from django.core.management.base import BaseCommand, CommandError

from dashboard.formatting import stat_chance as _chance
from dashboard.formatting import stat_interval as _interval
from dashboard.formatting import stat_lift as _lift
from dashboard.formatting import stat_p as _p
from dashboard.formatting import stat_percent as _percent
from dashboard.formatting import stat_points as _points
from triggers.stats import Analysis, Arm, analyse, verdict

_ARM = re.compile(r"^(?P<name>[^=]+)=(?P<conversions>\d+)/(?P<users>\d+)$")


def _parse_arm(value: str) -> Arm:
    match = _ARM.match(value.strip())
    if not match:
        raise CommandError(f"--arm {value}: expected NAME=CONVERSIONS/USERS, e.g. b=120/2400")
    arm = Arm(match["name"].strip(), int(match["users"]), int(match["conversions"]))
    if not arm.name:
        raise CommandError(f"--arm {value}: the arm needs a name")
    if arm.conversions > arm.users:
        raise CommandError(f"--arm {value}: conversions exceed users")
    return arm


def _parse_weights(value: str, count: int) -> list[float]:
    weights = []
    for part in value.split(","):
        try:
            weight = float(part)
        except ValueError:
            raise CommandError(f"--weights {value}: {part.strip()!r} is not a number") from None
        if not (math.isfinite(weight) and weight > 0):
            raise CommandError(f"--weights {value}: every weight must be positive")
        weights.append(weight)
    if len(weights) != count:
        raise CommandError(
            f"--weights {value}: expected {count} weights (one per --arm), got {len(weights)}"
        )
    return weights


def render_table(analysis: Analysis) -> str:
    lines = [f"{'arm':<16} {'users':>12} {'conversions':>12} {'rate':>8}  95% interval"]
    for a in analysis.arms:
        lines.append(
            f"{a.name:<16} {a.users:>12,} {a.conversions:>12,} {_percent(a.rate):>8}  "
            f"{_interval(a.ci)}"
        )
    lines.append("")
    for c in analysis.comparisons:
        lines += [
            f"{c.arm} vs {c.control}",
            f"  difference          {_points(c.difference):>10}  "
            f"{_interval(c.difference_ci, _points)}",
            f"  relative lift       {_lift(c.relative_lift):>10}  "
            f"{_interval(c.relative_lift_ci, _lift)}",
            f"  p-value             {_p(c.p_value):>10}  (Holm-adjusted {_p(c.p_value_holm)})",
            f"  chance to beat      {_chance(c.chance_to_beat_control):>10}",
            f"  expected loss       ship {c.expected_loss_ship * 100:.3f} pp, "
            f"keep {c.expected_loss_keep * 100:.3f} pp",
        ]
    srm = analysis.srm
    weights = "/".join(f"{w * 100:.3g}" for w in srm.expected_weights)
    status = "MISMATCH" if srm.mismatch else "ok"
    lines += [
        "",
        f"Sample ratio ({weights}): chi2 = {srm.chi2:.3f}, p = {_p(srm.p_value)} — {status}",
    ]
    if srm.mismatch:
        banner = "!" * 78
        lines += [banner, verdict(analysis), banner]
    else:
        lines.append(verdict(analysis))
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Experiment statistics for conversion counts: per-arm rates and intervals, difference, "
        "relative lift, p-value (Holm-adjusted), chance to beat control, expected loss and a "
        "sample-ratio-mismatch check. See docs/statistics.md."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--arm",
            action="append",
            required=True,
            metavar="NAME=CONVERSIONS/USERS",
            help="One arm's counts; repeat for every arm (at least two).",
        )
        parser.add_argument("--control", help="The control arm's name (default: the first arm).")
        parser.add_argument(
            "--weights", help="The planned split, e.g. 10,45,45 (default: equal weights)."
        )
        parser.add_argument("--format", choices=["table", "json"], default="table")

    def handle(self, *args, **options) -> None:
        arms = [_parse_arm(value) for value in options["arm"]]
        if len(arms) < 2:
            raise CommandError("--arm: give at least two arms (a control and a variant)")
        seen: set[str] = set()
        for value, arm in zip(options["arm"], arms, strict=True):
            if arm.name in seen:
                raise CommandError(f"--arm {value}: duplicate arm name {arm.name!r}")
            seen.add(arm.name)
        control = options["control"]
        if control is not None and control not in seen:
            names = ", ".join(a.name for a in arms)
            raise CommandError(f"--control {control}: no arm of that name (arms: {names})")
        weights = None
        if options["weights"] is not None:
            weights = _parse_weights(options["weights"], len(arms))
        try:
            analysis = analyse(arms, control=control, weights=weights)
        except ValueError as error:
            raise CommandError(str(error)) from None
        if options["format"] == "json":
            self.stdout.write(json.dumps(analysis.as_dict(), indent=2))
        else:
            self.stdout.write(render_table(analysis))
