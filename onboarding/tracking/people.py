"""Writing a batch's new people and identities on PostgreSQL: one statement for both.

:func:`~onboarding.tracking.identity.resolve_people` plans in memory, with negative placeholders
for the people the batch creates. Here the new people get their ids from the table's sequence in
the statement that inserts them, the new identities (which may name a placeholder or an existing
person) are inserted by the same statement, and it returns each placeholder's id: one round trip
and fixed SQL text instead of two ORM ``bulk_create`` calls whose values are rendered into the SQL
in Python. Other databases (SQLite, the embedded default) keep the ORM path in ``identity``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from onboarding.bulk import binary_cursor

from . import jsontext
from .traits import TraitState

_dumps = jsontext.lenient


@dataclass(frozen=True, slots=True)
class NewPerson:
    """A person the batch creates, under its placeholder (a negative number)."""

    placeholder: int
    external_id: str | None
    first_seen: datetime
    last_seen: datetime
    last_event_at: datetime | None
    last_event_received_at: datetime | None
    state: TraitState


# ``v`` numbers the new people (nextval once per row: a materialized CTE); the identities join
# it to turn placeholders into ids, in the order given (sorted, as the ORM path inserted them).
_INSERT = """
WITH seq AS (SELECT pg_get_serial_sequence('onboarding_person', 'id')::regclass AS name),
v AS MATERIALIZED (
    SELECT nextval((SELECT name FROM seq)) AS id, u.*
    FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
                %b::text[], %b::timestamptz[], %b::timestamptz[], %b::timestamptz[],
                %b::timestamptz[]) WITH ORDINALITY
      AS u(placeholder, external_id, traits, trait_timestamps, email, phone, timezone,
           first_seen, last_seen, last_event_at, last_event_received_at, n)
),
people AS (
    INSERT INTO onboarding_person (id, external_id, traits, trait_timestamps, email, phone,
        timezone, first_seen, last_seen, last_event_at, last_event_received_at, consent)
    SELECT id, external_id, traits::jsonb, trait_timestamps::jsonb, email, phone, timezone,
        first_seen, last_seen, last_event_at, last_event_received_at, '{}'::jsonb
    FROM v ORDER BY n
),
identities AS (
    INSERT INTO onboarding_identity (kind, value, person_id, created_at)
    SELECT i.kind, i.value, COALESCE(v.id, i.person), %b::timestamptz
    FROM unnest(%b::text[], %b::text[], %b::bigint[]) WITH ORDINALITY AS i(kind, value, person, n)
    LEFT JOIN v ON v.placeholder = i.person
    ORDER BY i.n
)
SELECT placeholder, id FROM v
"""

_SET_EXTERNAL_IDS = """
UPDATE onboarding_person AS p SET external_id = u.external_id
FROM unnest(%b::bigint[], %b::text[]) AS u(id, external_id)
WHERE p.id = u.id AND p.external_id IS NULL
"""


def insert_people_and_identities(
    people: list[NewPerson], identities: list[tuple[str, str, int]], *, created_at: datetime
) -> dict[int, int]:
    """Insert the new people and the new identities ``(kind, value, person)``, where ``person``
    is an existing id or a new person's placeholder; return each placeholder's id."""
    if not people and not identities:
        return {}
    params = [
        [p.placeholder for p in people],
        [p.external_id for p in people],
        [_dumps(p.state.traits) for p in people],
        [_dumps(p.state.trait_timestamps) for p in people],
        [p.state.email for p in people],
        [p.state.phone for p in people],
        [p.state.timezone for p in people],
        [p.first_seen for p in people],
        [p.last_seen for p in people],
        [p.last_event_at for p in people],
        [p.last_event_received_at for p in people],
        created_at,
        [kind for kind, _, _ in identities],
        [value for _, value, _ in identities],
        [person for _, _, person in identities],
    ]
    with binary_cursor() as cursor:
        cursor.execute(_INSERT, params)
        return dict(cursor.fetchall())


def set_external_ids(external_ids: dict[int, str]) -> None:
    """Give existing anonymous people (``external_id`` still null) their ``userId``."""
    if not external_ids:
        return
    ids = sorted(external_ids)
    with binary_cursor() as cursor:
        cursor.execute(_SET_EXTERNAL_IDS, [ids, [external_ids[i] for i in ids]])
