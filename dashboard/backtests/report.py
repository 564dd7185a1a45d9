"""A finished backtest's stored report (``BacktestRun.result``) as the report page shows it: the
outcomes per day and channel, and the people who would have entered, a page at a time or as CSV.

Plain functions over the stored dict: nothing here runs the backtest again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from onboarding.csvsafe import csv_lines

PAGE_SIZE = 50
# The pipeline's outcomes in its order (DESIGN §4.5), each with the words the page uses.
OUTCOME_LABELS = {
    "sent": "sent",
    "suppressed:consent": "no consent",
    "no_address": "no address",
    "cancelled:completed": "cancelled: completed",
    "cancelled:progressed": "cancelled: progressed",
    "capped:global": "capped: global cap",
    "capped:rule": "capped: rule's cap",
    "aborted:render": "aborted: template",
    "after_period": "due after the period",
}
PROGRESSED_LABELS = {"yes": "yes", "no": "no", "open": "not yet (window open)", "": "—"}
CSV_COLUMNS = [
    "person_id",
    "external_id",
    "occurrence",
    "entered_at",
    "step",
    "channel",
    "outcome",
    "decided_at",
    "progressed_anyway",
]


def outcome_label(outcome: str) -> str:
    return OUTCOME_LABELS.get(outcome, outcome)


def outcome_order(outcomes: set[str]) -> list[str]:
    known = [o for o in OUTCOME_LABELS if o in outcomes]
    return known + sorted(outcomes - set(OUTCOME_LABELS))


@dataclass(frozen=True)
class FollowUpOutcome:
    step: int
    channel: str
    outcome: str
    at: datetime | None

    @property
    def label(self) -> str:
        return outcome_label(self.outcome)


@dataclass(frozen=True)
class PersonRow:
    person_id: int
    external_id: str
    occurrence: str
    entered_at: datetime
    follow_ups: list[FollowUpOutcome]
    progressed: str

    @property
    def progressed_label(self) -> str:
        return PROGRESSED_LABELS.get(self.progressed, self.progressed)


@dataclass(frozen=True)
class PeoplePage:
    rows: list[PersonRow]
    page: int
    pages: int
    stored: int  # occurrences kept in the report
    entered: int  # occurrences in the backtest
    start: int  # 1-based position of the first row

    @property
    def end(self) -> int:
        return self.start + len(self.rows) - 1

    @property
    def truncated(self) -> bool:
        return self.stored < self.entered


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _row(entry: dict[str, Any]) -> PersonRow:
    return PersonRow(
        person_id=entry.get("person_id") or 0,
        external_id=entry.get("external_id") or "",
        occurrence=entry.get("occurrence") or "",
        entered_at=datetime.fromisoformat(entry["at"]),
        follow_ups=[
            FollowUpOutcome(
                step=item.get("step", 0),
                channel=item.get("channel", ""),
                outcome=item.get("outcome", ""),
                at=_moment(item.get("at")),
            )
            for item in entry.get("follow_ups") or []
        ],
        progressed=entry.get("progressed") or "",
    )


def has_person_outcomes(report: dict[str, Any]) -> bool:
    """Reports stored before follow-up outcomes were kept per person list entries only."""
    return "outcomes_per_day" in report


def people_page(report: dict[str, Any], page: int, *, page_size: int | None = None) -> PeoplePage:
    """One page of the stored entries (in entry order: time, then person); a page past the end
    is the last one."""
    page_size = page_size or PAGE_SIZE
    entries = report.get("entries") or []
    pages = max(1, -(-len(entries) // page_size))
    page = min(max(page, 1), pages)
    first = (page - 1) * page_size
    return PeoplePage(
        rows=[_row(e) for e in entries[first : first + page_size]],
        page=page,
        pages=pages,
        stored=len(entries),
        entered=report.get("entered", len(entries)),
        start=first + 1,
    )


def people_csv_lines(report: dict[str, Any]) -> Iterator[str]:
    """One line per follow-up of each stored entry (header first), through the CSV-safe writer:
    an external id is whatever a client app sent."""

    def rows(entry: dict[str, Any]) -> Iterator[list[Any]]:
        row = _row(entry)
        person = [row.person_id, row.external_id, row.occurrence, row.entered_at.isoformat()]
        progressed = row.progressed
        for item in row.follow_ups or [None]:
            if item is None:
                yield [*person, "", "", "", "", progressed]
            else:
                decided = item.at.isoformat() if item.at else ""
                yield [*person, item.step, item.channel, item.outcome, decided, progressed]

    return csv_lines(CSV_COLUMNS, (rows(entry) for entry in report.get("entries") or []))
