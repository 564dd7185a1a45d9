"""A backtest result as a plain-text table (the command line; the editor uses ``as_dict``)."""

from __future__ import annotations

from .backtest import BacktestResult


def format_table(result: BacktestResult, *, entries: int = 20) -> str:
    lines = [
        f"Backtest of {result.rule or '(unsaved rule)'} ({result.kind})",
        f"period   {result.since.isoformat()} .. {result.until.isoformat()}"
        f"  ({result.ticks} ticks of 30 s)",
        f"entered  {result.entered} occurrences, {result.people} people",
        f"skipped  segment {result.skipped['segment']}, re-entry {result.skipped['reentry']}",
        f"scheduled follow-ups {result.scheduled}; deferred by quiet hours {result.deferred}",
        "outcomes " + (", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items())) or "-"),
        f"overlap  {result.overlap_people} people also enrolled by active live rules"
        + (
            " (" + ", ".join(f"{k} {v}" for k, v in result.overlap_rules.items()) + ")"
            if result.overlap_rules
            else ""
        ),
        f"progressed anyway within {result.attribution_days} d (no message): "
        f"{result.progressed_anyway} occurrences ({result.attribution_open} windows still open)",
        "",
    ]
    channels = sorted(
        {c for per_day in result.scheduled_per_day.values() for c in per_day}
        | {c for per_day in result.sent_per_day.values() for c in per_day}
    )
    if channels:
        header = f"| {'day (UTC)':<10} |" + "".join(
            f" {c + ' due':>12} | {c + ' sent':>12} |" for c in channels
        )
        lines += [header, "|" + "-" * (len(header) - 2) + "|"]
        for day in sorted(set(result.scheduled_per_day) | set(result.sent_per_day)):
            due, sent = result.scheduled_per_day.get(day, {}), result.sent_per_day.get(day, {})
            lines.append(
                f"| {day:<10} |"
                + "".join(f" {due.get(c, 0):>12} | {sent.get(c, 0):>12} |" for c in channels)
            )
        lines.append("")
    if result.render_problems:
        lines.append("render problems:")
        lines += [f"  {n} × {problem}" for problem, n in result.render_problems.most_common(5)]
        lines.append("")
    if result.entries:
        lines.append(f"first {min(entries, result.entered)} entries:")
        for entry in result.entries[:entries]:
            lines.append(
                f"  {entry.at.isoformat()}  {entry.external_id or entry.person_id}  {entry.occurrence}"
            )
        lines.append("")
    lines.append("approximations: " + "; ".join(result.approximations))
    return "\n".join(lines)
