"""Writing recomputed flow progress and re-entry rows: one statement per batch on PostgreSQL.

:func:`onboarding.flows.progress._refresh` computes, for the people it refreshes, their progress
rows (upserted), the people who no longer entered a flow (their progress deleted), the people whose
re-entry rows are replaced (deleted) and the new re-entry rows (inserted). On PostgreSQL the four
writes are data-modifying parts of one statement over ``unnest`` arrays bound in binary (they touch
different rows: a person is either upserted or deleted in a flow; the re-entry insert does not see
the rows the same statement deletes). Elsewhere (SQLite) they are ORM calls, as before.
"""

# The SQL here is built from this module's constants only.
# ruff: noqa: S608

from __future__ import annotations

from django.db import connection, transaction
from django.utils import timezone

from onboarding.bulk import binary_cursor
from onboarding.models import BREAKDOWN_PROPERTIES, OFFSET_FIELDS, FlowProgress, FlowReentry

PROGRESS_UPDATE_FIELDS = [
    "entered_at",
    "entry_event_id",
    "latest_entry_at",
    "furthest_step",
    *OFFSET_FIELDS,
    "reached_at",
    *(f"entry_{name}" for name in BREAKDOWN_PROPERTIES),
    "completed_at",
    "window_ends_at",
    "updated_at",
]

# The columns both row kinds share, in this order, with their array types.
_TYPED_OFFSETS = [name for name in OFFSET_FIELDS if name != "offsets_after"]
_ENTRY = [
    ("flow_id", "bigint"),
    ("person_id", "bigint"),
    ("entered_at", "timestamptz"),
    ("entry_event_id", "bigint"),
    ("furthest_step", "smallint"),
    *((name, "bigint") for name in _TYPED_OFFSETS),
    # bigint[] per row: an array of arrays cannot be unnested row by row, so its text is sent
    ("offsets_after", "text"),
    ("reached_at", "timestamptz"),
    *((f"entry_{name}", "text") for name in BREAKDOWN_PROPERTIES),
]
_PROGRESS = [
    *_ENTRY,
    ("latest_entry_at", "timestamptz"),
    ("completed_at", "timestamptz"),
    ("window_ends_at", "timestamptz"),
]
_REENTRY = [*_ENTRY, ("first_entered_at", "timestamptz")]


def _select(columns: list[tuple[str, str]]) -> tuple[str, str]:
    """The column list and the ``SELECT … FROM unnest(…)`` of rows given as arrays."""
    names = ", ".join(name for name, _ in columns)
    arrays = ", ".join(f"%b::{kind}[]" for _, kind in columns)
    values = ", ".join(
        f"{name}::bigint[]" if name == "offsets_after" else name for name, _ in columns
    )
    return names, f"SELECT {values} FROM unnest({arrays}) AS u({names})"


_PROGRESS_NAMES, _PROGRESS_SELECT = _select(_PROGRESS)
_REENTRY_NAMES, _REENTRY_SELECT = _select(_REENTRY)
_PAIRS = "unnest(%b::bigint[], %b::bigint[]) AS k(flow_id, person_id)"
_WRITE = (
    "WITH upserted AS ("
    f"INSERT INTO onboarding_flowprogress ({_PROGRESS_NAMES}, updated_at) "
    f"SELECT u.*, %b::timestamptz FROM ({_PROGRESS_SELECT}) AS u "
    "ON CONFLICT (flow_id, person_id) DO UPDATE SET "
    + ", ".join(f"{name} = EXCLUDED.{name}" for name in PROGRESS_UPDATE_FIELDS)
    + "), "
    f"stale AS (DELETE FROM onboarding_flowprogress AS p USING {_PAIRS} "
    "WHERE p.flow_id = k.flow_id AND p.person_id = k.person_id), "
    f"replaced AS (DELETE FROM onboarding_flowreentry AS r USING {_PAIRS} "
    "WHERE r.flow_id = k.flow_id AND r.person_id = k.person_id), "
    f"inserted AS (INSERT INTO onboarding_flowreentry ({_REENTRY_NAMES}) {_REENTRY_SELECT}) "
    "SELECT 1"
)


def _offsets_text(values: list[int] | None) -> str | None:
    return None if values is None else "{" + ",".join(str(int(v)) for v in values) + "}"


def _arrays(rows: list, columns: list[tuple[str, str]]) -> list[list]:
    arrays = []
    for name, _ in columns:
        values = [getattr(row, name) for row in rows]
        arrays.append([_offsets_text(v) for v in values] if name == "offsets_after" else values)
    return arrays


def _pairs(by_flow: dict[int, list[int]]) -> list[list[int]]:
    pairs = sorted((flow_id, person) for flow_id, people in by_flow.items() for person in people)
    return [[flow_id for flow_id, _ in pairs], [person for _, person in pairs]]


def write_progress(
    *,
    upserts: list[FlowProgress],
    stale: dict[int, list[int]],
    replaced: dict[int, list[int]],
    reentries: list[FlowReentry],
) -> None:
    """Upsert ``upserts``; delete the progress of ``stale`` people and the re-entry rows of
    ``replaced`` people (both by flow id); insert ``reentries``."""
    if not (upserts or stale or replaced or reentries):
        return
    if connection.vendor != "postgresql":
        _write_portably(upserts=upserts, stale=stale, replaced=replaced, reentries=reentries)
        return
    # Rows in (flow, person) order, as every writer of these tables locks them.
    upserts = sorted(upserts, key=lambda row: (row.flow_id, row.person_id))
    params = [
        timezone.now(),  # updated_at: its placeholder comes first in the text
        *_arrays(upserts, _PROGRESS),
        *_pairs(stale),
        *_pairs(replaced),
        *_arrays(reentries, _REENTRY),
    ]
    with binary_cursor() as cursor:
        cursor.execute(_WRITE, params)


def _write_portably(
    *,
    upserts: list[FlowProgress],
    stale: dict[int, list[int]],
    replaced: dict[int, list[int]],
    reentries: list[FlowReentry],
) -> None:
    # No savepoint of its own (two more round trips per batch): a failure here fails the
    # caller's transaction, which ingestion retries or rolls back as a whole.
    with transaction.atomic(savepoint=False):
        if upserts:
            FlowProgress.objects.bulk_create(
                upserts,
                update_conflicts=True,
                unique_fields=["flow", "person"],
                update_fields=PROGRESS_UPDATE_FIELDS,
                batch_size=2000,
            )
        for flow_id, person_ids in stale.items():
            FlowProgress.objects.filter(flow_id=flow_id, person_id__in=person_ids).delete()
        for flow_id, person_ids in replaced.items():
            FlowReentry.objects.filter(flow_id=flow_id, person_id__in=person_ids).delete()
        if reentries:
            FlowReentry.objects.bulk_create(reentries, batch_size=2000)
