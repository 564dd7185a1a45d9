"""Resolving the people behind a batch of events, in bulk.

Every ``userId`` and ``anonymousId`` is an :class:`~onboarding.models.Identity`. A batch is resolved
with a handful of queries however many events it holds: lock the ids it mentions (PostgreSQL advisory
locks, so concurrent batches for the same people serialize without deadlocks), read their owners,
plan in memory (new people, new identities, merges), then write the plan.

Rules (DESIGN §4.1):
- an event with a ``userId`` belongs to that user's person, created on first sight;
- an ``anonymousId`` seen with a ``userId`` for the first time is linked to the user; if it already
  belonged to a still-anonymous person, that person is merged into the user (events included); an
  anonymous id that already belongs to another *identified* person (a shared device) is left alone;
- ``alias`` joins ``previousId`` (a user or anonymous id) to ``userId``, merging the two people.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from onboarding.models import Event, Identity, IdentityKind, Person
from onboarding.signals import people_merged

from .parsing import TrackedEvent
from .people import NewPerson, insert_people_and_identities, set_external_ids
from .traits import TRAIT_COLUMNS, TraitState, apply, collect, mirrored

USER = IdentityKind.USER.value
ANON = IdentityKind.ANONYMOUS.value

Key = tuple[str, str]


def mirror_trait_columns(person: Person) -> None:
    """Copy the ``email``, ``phone`` and ``timezone`` traits, when set, into their columns."""
    for column in TRAIT_COLUMNS:
        setattr(person, column, mirrored(person.traits, column, getattr(person, column)))


@dataclass(frozen=True)
class Resolved:
    """The person of each event, and which of them this batch created (with their traits)."""

    person_ids: list[int]
    created: frozenset[int]


def _lock_id(key: Key) -> int:
    digest = hashlib.blake2b(f"{key[0]}:{key[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_identities(keys: set[Key]) -> None:
    """Serialize concurrent writers of the same ids (PostgreSQL; SQLite serializes all writes)."""
    if connection.vendor != "postgresql" or not keys:
        return
    ids = sorted({_lock_id(key) for key in keys})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k", [ids]
        )


@dataclass
class _Plan:
    owner: dict[Key, int] = field(default_factory=dict)
    external: dict[int, str | None] = field(default_factory=dict)
    parent: dict[int, int] = field(default_factory=dict)
    new_keys: set[Key] = field(default_factory=set)
    next_placeholder: int = -1

    def find(self, person: int) -> int:
        while person in self.parent:
            person = self.parent[person]
        return person

    def new_person(self, external_id: str | None) -> int:
        placeholder = self.next_placeholder
        self.next_placeholder -= 1
        self.external[placeholder] = external_id
        return placeholder

    def lookup(self, key: Key) -> int | None:
        person = self.owner.get(key)
        return None if person is None else self.find(person)

    def claim(self, key: Key, person: int) -> None:
        self.owner[key] = person
        self.new_keys.add(key)

    def merge(self, a: int, b: int) -> int:
        """Merge two people; an existing person survives a new one; ``b`` survives otherwise."""
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        survivor, merged = (a, b) if (a > 0 and b < 0) else (b, a)
        self.parent[merged] = survivor
        if self.external.get(survivor) is None:
            self.external[survivor] = self.external.get(merged)
        return survivor


def _plan(events: list[TrackedEvent], plan: _Plan) -> list[int]:
    assigned: list[int] = []
    for event in events:
        uid, aid = event.user_id, event.anonymous_id
        if uid:
            person = plan.lookup((USER, uid))
            by_anon = plan.lookup((ANON, aid)) if aid else None
            if person is None:
                if by_anon is not None and plan.external.get(by_anon) is None:
                    person = by_anon
                    plan.external[person] = uid
                else:
                    person = plan.new_person(uid)
                plan.claim((USER, uid), person)
            if aid:
                if by_anon is None:
                    plan.claim((ANON, aid), person)
                elif by_anon != person and plan.external.get(by_anon) is None:
                    person = plan.merge(by_anon, person)
        else:
            person = plan.lookup((ANON, aid))
            if person is None:
                person = plan.new_person(None)
                plan.claim((ANON, aid), person)
        if event.type == "alias":
            previous = plan.lookup((USER, event.previous_id))
            if previous is None:
                previous = plan.lookup((ANON, event.previous_id))
            if previous is None:
                # Not seen yet, so its kind is unknown: either way it now means this person.
                plan.claim((USER, event.previous_id), person)
                plan.claim((ANON, event.previous_id), person)
            elif previous != person:
                person = plan.merge(previous, person)
        assigned.append(person)
    return [plan.find(person) for person in assigned]


def _merge_people(survivor: int, merged: list[int]) -> None:
    """Move identities and events to ``survivor``, combine traits, delete the merged people."""
    # Locked in id order, as the delivery pipeline and the trait update lock people.
    locked = Person.objects.select_for_update().filter(pk__in=[survivor, *merged]).order_by("pk")
    people = {p.pk: p for p in locked}
    target = people[survivor]
    for pk in merged:
        other = people[pk]
        for trait, value in other.traits.items():
            theirs = other.trait_timestamps.get(trait, "")
            ours = target.trait_timestamps.get(trait)
            if ours is None or theirs > ours:
                target.traits[trait] = value
                target.trait_timestamps[trait] = theirs
        target.first_seen = min(target.first_seen, other.first_seen)
        target.last_seen = max(target.last_seen, other.last_seen)
        if other.last_event_at is not None and (
            target.last_event_at is None or other.last_event_at > target.last_event_at
        ):
            target.last_event_at = other.last_event_at
            target.last_event_received_at = other.last_event_received_at
        target.email = target.email or other.email
        target.phone = target.phone or other.phone
        target.timezone = target.timezone or other.timezone
        for channel, allowed in other.consent.items():
            # Withdrawn consent survives a merge: either side saying no means no.
            target.consent[channel] = bool(target.consent.get(channel, True) and allowed)
    mirror_trait_columns(target)
    Identity.objects.filter(person_id__in=merged).update(person_id=survivor)
    Event.objects.filter(person_id__in=merged).update(person_id=survivor)
    # Receivers move their own rows before the merged people go (triggers: enrollments, messages,
    # decisions, assignments, whose PROTECT keys make a missed move fail here). FlowProgress is
    # not moved: it is derived from events, the survivor's is recomputed from the combined events
    # (onboarding.flows.receivers), and the merged person's rows are deleted with it.
    people_merged.send(sender=Person, into=survivor, merged=merged)
    Person.objects.filter(pk__in=merged).delete()
    target.save(
        update_fields=[
            "traits",
            "trait_timestamps",
            "first_seen",
            "last_seen",
            "last_event_at",
            "last_event_received_at",
            "email",
            "phone",
            "timezone",
            "consent",
        ]
    )


def _write_portably(
    new_people: list[NewPerson],
    merges: dict[int, list[int]],
    external_ids: dict[int, str | None],
    identities: list[tuple[str, str, int]],
) -> dict[int, int]:
    """The plan's writes through the ORM (SQLite); returns each placeholder's id."""
    created = Person.objects.bulk_create(
        [
            Person(
                external_id=p.external_id,
                first_seen=p.first_seen,
                last_seen=p.last_seen,
                last_event_at=p.last_event_at,
                last_event_received_at=p.last_event_received_at,
                traits=p.state.traits,
                trait_timestamps=p.state.trait_timestamps,
                email=p.state.email,
                phone=p.state.phone,
                timezone=p.state.timezone,
            )
            for p in new_people
        ]
    )
    real = {p.placeholder: person.pk for p, person in zip(new_people, created, strict=True)}
    for survivor, merged in sorted(merges.items()):
        _merge_people(real.get(survivor, survivor), sorted(merged))
    for person, external_id in external_ids.items():
        Person.objects.filter(pk=person, external_id__isnull=True).update(external_id=external_id)
    if identities:
        Identity.objects.bulk_create(
            [
                Identity(kind=kind, value=value, person_id=real.get(person, person))
                for kind, value, person in identities
            ]
        )
    return real


def resolve_people(
    events: list[TrackedEvent], *, received_at: datetime, live: bool = True
) -> Resolved:
    """The person id of each event, creating and merging people as needed.

    New people are created with the traits, email, phone and timezone the batch gives them (and,
    for a live batch, the time of their latest event as their last activity), so only the people
    who already existed need an update afterwards.
    """
    keys: set[Key] = set()
    for event in events:
        if event.user_id:
            keys.add((USER, event.user_id))
        if event.anonymous_id:
            keys.add((ANON, event.anonymous_id))
        if event.previous_id:
            keys.add((USER, event.previous_id))
            keys.add((ANON, event.previous_id))
    lock_identities(keys)

    plan = _Plan()
    by_kind: dict[str, list[str]] = defaultdict(list)
    for kind, value in keys:
        by_kind[kind].append(value)
    condition = Q()
    for kind, values in by_kind.items():
        condition |= Q(kind=kind, value__in=values)
    for kind, value, person_id, external_id in Identity.objects.filter(condition).values_list(
        "kind", "value", "person_id", "person__external_id"
    ):
        plan.owner[(kind, value)] = person_id
        plan.external[person_id] = external_id
    known_external = dict(plan.external)

    assigned = _plan(events, plan)

    # Create the new people that survived planning, with real ids.
    first_seen: dict[int, datetime] = {}
    last_event: dict[int, datetime] = {}
    for person, event in zip(assigned, events, strict=True):
        if person not in first_seen or event.timestamp < first_seen[person]:
            first_seen[person] = event.timestamp
        happened = min(event.timestamp, received_at)  # never later than its receipt
        if person not in last_event or happened > last_event[person]:
            last_event[person] = happened
    placeholders = sorted(
        {plan.find(p) for p in plan.external if p < 0 and plan.find(p) < 0}, reverse=True
    )
    said = collect(events, assigned) if placeholders else {}
    new_people = [
        NewPerson(
            placeholder=p,
            external_id=plan.external[p],
            first_seen=first_seen.get(p, received_at),
            last_seen=received_at,
            last_event_at=last_event.get(p) if live else None,
            last_event_received_at=received_at if live and p in last_event else None,
            state=apply(TraitState(), said[p]) if p in said else TraitState(),
        )
        for p in placeholders
    ]
    # Merges of existing people (a placeholder merged into an existing person needs no move),
    # by survivor; and existing anonymous people who were identified in this batch.
    merges: dict[int, list[int]] = defaultdict(list)
    for merged in plan.parent:
        if merged > 0:
            merges[plan.find(merged)].append(merged)
    external_ids = {
        person: external_id
        for person, external_id in plan.external.items()
        if person > 0 and person not in plan.parent and known_external.get(person) != external_id
    }
    # Every new id belongs to the root of its owner: an existing person or a placeholder.
    identities = [
        (kind, value, plan.find(plan.owner[(kind, value)])) for kind, value in sorted(plan.new_keys)
    ]
    if connection.vendor == "postgresql":
        real = insert_people_and_identities(new_people, identities, created_at=timezone.now())
        for survivor, merged in sorted(merges.items()):
            _merge_people(real.get(survivor, survivor), sorted(merged))
        set_external_ids(external_ids)
    else:
        real = _write_portably(new_people, merges, external_ids, identities)
    return Resolved(
        person_ids=[real.get(person, person) for person in assigned],
        created=frozenset(real.values()),
    )
