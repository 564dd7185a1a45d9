"""Seeded responses to the demo history's sends that follow each person's real activity."""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

from onboarding.models import Event
from triggers.models import Message, Rule
from triggers.models.messages import MessageStatus
from triggers.services.outcomes import message_record_outcome

# Response behaviour (chances per message). In-app: seen by some of the people who came back
# within SEEN_WITHIN (the widget is not on every page); of those seen, some click, some dismiss.
# Email: opened now and then; clicked only by people who came back within CLICK_WITHIN (a click
# lands them in the app).
SEEN_WITHIN = timedelta(days=3)
IN_APP_SEEN = 0.6
CLICK_WITHIN = timedelta(days=2)
IN_APP_CLICK = 0.2
IN_APP_DISMISS = 0.45
EMAIL_OPEN = 0.4
EMAIL_CLICK = 0.35


def _rng(seed: int, *parts: Any) -> random.Random:
    digest = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def record_responses(rules: list[Rule], seed: int, now: datetime) -> Counter:
    """Seeded responses that follow each person's real activity after the send."""
    sent = list(
        Message.objects.filter(rule__in=rules, status=MessageStatus.SENT, sent_at__lte=now)
        .order_by("sent_at", "pk")
        .values_list(
            "pk",
            "person_id",
            "channel",
            "sent_at",
            "rule__slug",
            "person__external_id",
        )
    )
    activity: dict[int, list[datetime]] = defaultdict(list)
    for person_id, received_at in (
        Event.objects.filter(person_id__in={row[1] for row in sent})
        .order_by("received_at")
        .values_list("person_id", "received_at")
    ):
        activity[person_id].append(received_at)
    counts: Counter = Counter()

    def record(pk: int, outcome: str, at: datetime) -> None:
        if at <= now and message_record_outcome(message_id=pk, outcome=outcome, now=at):
            counts[outcome] += 1

    nth: Counter = Counter()
    for pk, person_id, channel, sent_at, slug, external_id in sent:
        # Keyed by what does not depend on when the demo was seeded (occurrence keys hold times).
        nth[(slug, person_id)] += 1
        rng = _rng(seed, slug, external_id, nth[(slug, person_id)])
        times = activity[person_id]
        index = bisect_right(times, sent_at)
        back = times[index] if index < len(times) else None
        if channel == "in_app":
            if back is None or back - sent_at > SEEN_WITHIN or rng.random() >= IN_APP_SEEN:
                continue
            record(pk, "seen", back)
            roll = rng.random()
            if roll < IN_APP_CLICK:
                record(pk, "clicked", back + timedelta(seconds=rng.randint(3, 90)))
            elif roll < IN_APP_CLICK + IN_APP_DISMISS:
                record(pk, "dismissed", back + timedelta(seconds=rng.randint(2, 40)))
        else:
            opened = rng.random() < EMAIL_OPEN
            if back is not None and back - sent_at <= CLICK_WITHIN and rng.random() < EMAIL_CLICK:
                click = max(
                    sent_at + timedelta(seconds=20), back - timedelta(seconds=rng.randint(5, 120))
                )
                record(pk, "clicked", min(click, back))
            elif opened:
                record(pk, "opened", sent_at + timedelta(minutes=rng.randint(2, 600)))
    return counts
