"""``manage.py seed_demo [--people N] [--seed S] [--source NAME]``: load realistic demo journeys.

The journeys come from :mod:`onboarding.demo` and go through the same path as the tracking API's
batch endpoint (``read_envelope`` then ``ingest_events``), never ORM saves, so identity merge, trait
handling and per-person state are exactly what live traffic would produce. Message ids are
deterministic, so running it again with the same seed stores nothing new.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from onboarding.demo import demo_payloads
from onboarding.demo_config import install_demo_config
from onboarding.models import Event, Person, Source
from onboarding.services.sources import source_create
from onboarding.tracking.envelope import read_envelope
from onboarding.tracking.ingest import ingest_events

BATCH_SIZE = 500
# A batch is "received" when its latest event happened. To keep that close to the truth, a batch
# spans at most 1/24 of its age (10 days ago: 10 h; 1 h ago: 2.5 min), and at least this much:
_MIN_BATCH_SPAN = timedelta(minutes=2)


def _timestamp(payload: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(payload["timestamp"])


def replay_batches(
    payloads: list[dict[str, Any]], *, now: datetime
) -> list[tuple[datetime, list[dict[str, Any]]]]:
    """Group time-ordered payloads into (received_at, batch) as a live client would have sent them.

    Server-side times (``received_at``, ``last_seen``) then tell recent activity from old, so people
    who stalled an hour ago look stalled, not active just now.
    """
    batches: list[tuple[datetime, list[dict[str, Any]]]] = []
    current: list[dict[str, Any]] = []
    start: datetime | None = None
    for payload in payloads:
        moment = _timestamp(payload)
        if current and start is not None:
            span_limit = max(_MIN_BATCH_SPAN, (now - start) / 24)
            if len(current) >= BATCH_SIZE or moment - start > span_limit:
                batches.append((_timestamp(current[-1]), current))
                current, start = [], None
        if start is None:
            start = moment
        current.append(payload)
    if current:
        batches.append((_timestamp(current[-1]), current))
    return batches


class Command(BaseCommand):
    help = "Load realistic onboarding journeys through the tracking API's ingestion path."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--people", type=int, default=500, help="How many people (500).")
        parser.add_argument("--seed", type=int, default=42, help="Random seed (42).")
        parser.add_argument(
            "--source",
            default="demo-app",
            help='Source to load into, created if missing ("demo-app").',
        )

    def handle(self, *args, **options) -> None:
        people, seed, source_name = options["people"], options["seed"], options["source"]
        if people < 0:
            raise CommandError("--people must be zero or more")
        started = time.monotonic()
        source = Source.objects.filter(name=source_name).first()
        if source is None:
            source = source_create(name=source_name).source
            self.stdout.write(
                f"Created source {source_name!r} (its write key is not shown; "
                "use `manage.py sources rotate` to get one)."
            )
        people_before = Person.objects.count()
        # The flow and segments first, so flow progress is maintained as the events arrive.
        config = install_demo_config()
        created = [str(c) for c in config.changes if c.status != "unchanged"]
        if created:
            self.stdout.write("Demo configuration: " + "; ".join(created) + ".")

        now = timezone.now()
        payloads = demo_payloads(people=people, seed=seed, now=now)
        inserted = duplicates = rejected = 0
        batches = replay_batches(payloads, now=now)
        for received_at, batch in batches:
            envelope = read_envelope(
                {"batch": batch},
                event_type=None,
                received_at=received_at,
                max_event_bytes=settings.ONRAMP_MAX_EVENT_BYTES,
                max_future=timedelta(seconds=settings.ONRAMP_MAX_FUTURE_SECONDS),
            )
            result = ingest_events(
                source=source,
                events=envelope.events,
                rejections=envelope.rejections,
                received_at=received_at,
                endpoint="import",
            )
            inserted += result.inserted
            duplicates += result.duplicates
            rejected += len(envelope.rejections)

        self.stdout.write(
            f"Generated {len(payloads)} events for {people} people (seed {seed}) "
            f"in {len(batches)} batches."
        )
        # Apps that build on the event store add their own demo objects (trigger rules and their
        # history, say), then what summarises them (the KPI roll-ups). Onboarding imports none of
        # them: it asks every app that offers ``install_demo``, then every one that offers
        # ``summarise_demo``. Each hook changes nothing when its objects are already there.
        for hook in ("install_demo", "summarise_demo"):
            for config in apps.get_app_configs():
                install = getattr(config, hook, None)
                if callable(install):
                    summary = install(seed=seed)
                    if summary:
                        self.stdout.write(summary)
        self.stdout.write(
            f"Stored {inserted} new events ({duplicates} already present, {rejected} rejected); "
            f"people: {Person.objects.count() - people_before} new, {Person.objects.count()} total; "
            f"events in {source_name!r}: {Event.objects.filter(source=source).count()}."
        )
        self.stdout.write(self.style.SUCCESS(f"Done in {time.monotonic() - started:.1f} s."))
        if rejected:
            raise CommandError(f"{rejected} demo events were rejected; see FailedEvent")
