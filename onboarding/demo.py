"""Realistic onboarding journeys as Segment-spec payloads, for demos, tests and benchmarks.

Pure and seeded: the same ``seed`` gives the same people, events and ``messageId``s whatever
``now`` is (times are offsets from ``now``), so loading the same demo twice stores nothing new.
Each payload is what a Segment client library sends (``type``, ``userId``/``anonymousId``,
``event``, ``properties``/``traits``, ``context`` with device, os and timezone, ``timestamp``,
``messageId``); feed them through the tracking API or its ingestion path, never the ORM.

A journey: anonymous browsing (some people), then sign-up with an ``identify`` that links the
anonymous id to the new ``userId`` (so identity merge is exercised), then the activation flow
Signed Up → Email Verified → Profile Completed (``completionPercentage``, sometimes partial first)
→ Project Created → Teammate Invited, with drop-off at every step, plus noise: Logged In, Page
Viewed, Settings Opened, bursts of Task Failed, Report Shared. Sign-ups are spread over the last
~30 days; some people are mid-onboarding and stalled right now (last event minutes to hours ago).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

FLOW_EVENTS = (
    "Signed Up",
    "Email Verified",
    "Profile Completed",
    "Project Created",
    "Teammate Invited",
)
NOISE_EVENTS = ("Page Viewed", "Settings Opened", "Task Failed", "Report Shared", "Logged In")

# Probability of reaching each step after the previous one (Signed Up is the entry).
STEP_CONVERSION = {
    "Email Verified": 0.82,
    "Profile Completed": 0.74,
    "Project Created": 0.66,
    "Teammate Invited": 0.48,
}
# Typical delay from the previous step, in seconds (median of a log-normal).
STEP_DELAY = {
    "Email Verified": 6 * 60,
    "Profile Completed": 40 * 60,
    "Project Created": 5 * 3600,
    "Teammate Invited": 20 * 3600,
}
SPAN = timedelta(days=30)
STALLED_NOW_SHARE = 0.12

DEVICES = (("web", 0.45), ("ios", 0.32), ("android", 0.23))
PLANS = (("free", 0.68), ("pro", 0.22), ("team", 0.10))
ACQUISITION = (("ads", 0.42), ("organic", 0.36), ("referral", 0.22))
TIMEZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Paris",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
)
FIRST_NAMES = (
    "Alice", "Bruno", "Chloé", "Dmitri", "Emma", "Farah", "Gabriel", "Hana", "Ivan", "Jade",
    "Kofi", "Lena", "Mateo", "Nina", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tomás",
    "Uma", "Victor", "Wen", "Yara", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Garcia", "Müller", "Rossi", "Kim", "Okafor", "Novak", "Silva", "Tanaka", "Dubois",
    "Patel", "Cohen", "Larsen", "Nguyen", "Haddad",
)  # fmt: skip
PAGES = ("/", "/pricing", "/features", "/blog/onboarding-tips", "/customers", "/signup")
SETTINGS_SECTIONS = ("profile", "notifications", "billing", "integrations", "security")
TASKS = ("import_csv", "connect_calendar", "sync_contacts", "upload_avatar")
ERRORS = ("timeout", "invalid_file", "permission_denied", "network_error")

_PLATFORM = {
    "web": {
        "library": {"name": "analytics.js", "version": "5.2.0"},
        "os": [("Mac OS X", "14.4"), ("Windows", "11"), ("Linux", "6.5")],
        "models": [None],
    },
    "ios": {
        "library": {"name": "analytics-swift", "version": "1.5.11"},
        "os": [("iOS", "17.4"), ("iOS", "16.7"), ("iPadOS", "17.3")],
        "models": ["iPhone15,2", "iPhone14,5", "iPhone16,1", "iPad13,4"],
    },
    "android": {
        "library": {"name": "analytics-kotlin", "version": "1.15.0"},
        "os": [("Android", "14"), ("Android", "13"), ("Android", "12")],
        "models": ["Pixel 8", "SM-S918B", "SM-A546B", "moto g84"],
    },
}


@dataclass(frozen=True, slots=True)
class DemoPerson:
    """Who a journey belongs to (kept so callers can check what was generated)."""

    user_id: str
    anonymous_id: str
    email: str
    first_name: str
    device: str
    plan: str
    source: str
    timezone: str
    furthest_step: int  # 1..5: the last flow step done in order by ``now`` (no window applied)
    browsed_anonymously: bool
    stalled_now: bool


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    values, weights = zip(*weighted, strict=True)
    return rng.choices(values, weights)[0]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _delay(rng: random.Random, median_seconds: float, spread: float = 0.9) -> timedelta:
    return timedelta(seconds=max(1.0, rng.lognormvariate(0, spread) * median_seconds))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Journey:
    """Builds one person's payloads; times are offsets from the person's first event."""

    def __init__(self, rng: random.Random, person: DemoPerson) -> None:
        self.rng = rng
        self.person = person
        platform = _PLATFORM[person.device]
        os_name, os_version = rng.choice(platform["os"])
        device: dict[str, Any] = {"type": person.device, "id": _uuid(rng)}
        model = rng.choice(platform["models"])
        if model:
            device["model"] = model
            device["manufacturer"] = "Apple" if person.device == "ios" else model.split()[0]
        self.context: dict[str, Any] = {
            "library": dict(platform["library"]),
            "device": device,
            "os": {"name": os_name, "version": os_version},
            "timezone": person.timezone,
            "locale": rng.choice(("en-US", "en-GB", "de-DE", "fr-FR", "pt-BR", "ja-JP")),
            "ip": f"203.0.113.{rng.randint(1, 254)}",
        }
        if person.device != "web":
            self.context["app"] = {"name": "Onramp Demo", "version": "3.4.1", "build": "341"}
        self.items: list[tuple[timedelta, dict[str, Any]]] = []
        self.identified = False

    def _add(self, at: timedelta, payload: dict[str, Any]) -> None:
        payload["anonymousId"] = self.person.anonymous_id
        if self.identified:
            payload["userId"] = self.person.user_id
        payload["context"] = self.context
        payload["messageId"] = _uuid(self.rng)
        self.items.append((at, payload))

    def track(self, at: timedelta, event: str, properties: dict[str, Any] | None = None) -> None:
        self._add(at, {"type": "track", "event": event, "properties": properties or {}})

    def identify(self, at: timedelta, traits: dict[str, Any]) -> None:
        self.identified = True
        self._add(at, {"type": "identify", "traits": traits})


def _person(rng: random.Random, index: int) -> DemoPerson:
    first = rng.choice(FIRST_NAMES)
    last = rng.choice(LAST_NAMES)
    plan = _pick(rng, PLANS)
    furthest = 1
    for step in FLOW_EVENTS[1:]:
        boost = 0.15 if step == "Teammate Invited" and plan == "team" else 0.0
        if rng.random() >= STEP_CONVERSION[step] + boost:
            break
        furthest += 1
    stalled_now = rng.random() < STALLED_NOW_SHARE
    if stalled_now and furthest == len(FLOW_EVENTS):
        furthest = rng.randint(1, len(FLOW_EVENTS) - 1)
    email_name = f"{first}.{last}".lower().replace("é", "e").replace("ü", "u").replace("á", "a")
    return DemoPerson(
        user_id=f"user-{rng.getrandbits(48):012x}",
        anonymous_id=_uuid(rng),
        email=f"{email_name}.{index}@example.com",
        first_name=first,
        device=_pick(rng, DEVICES),
        plan=plan,
        source=_pick(rng, ACQUISITION),
        timezone=rng.choice(TIMEZONES),
        furthest_step=furthest,
        browsed_anonymously=rng.random() < 0.7,
        stalled_now=stalled_now,
    )


def _build(rng: random.Random, person: DemoPerson, signup: datetime) -> _Journey:
    """The journey with offsets from sign-up (browsing before it has negative offsets)."""
    journey = _Journey(rng, person)
    t = timedelta(0)
    if person.browsed_anonymously:
        for _ in range(rng.randint(1, 5)):
            t -= _delay(rng, 90)
            journey.track(t, "Page Viewed", {"path": rng.choice(PAGES), "referrer": person.source})
        t = timedelta(0)
    journey.identify(
        t,
        {
            "email": person.email,
            "first_name": person.first_name,
            "plan": person.plan,
            "source": person.source,
            "signup_date": _iso(signup),
            "timezone": person.timezone,
        },
    )
    t += timedelta(seconds=rng.uniform(0.2, 2))
    journey.track(
        t,
        "Signed Up",
        {
            "method": rng.choice(("email", "google", "apple")),
            "device": person.device,
            "source": person.source,
            "plan": person.plan,
        },
    )
    for number, step in enumerate(FLOW_EVENTS[1:], start=2):
        if number > person.furthest_step:
            break
        if step == "Profile Completed" and rng.random() < 0.35:
            # Started the profile, left it partial, came back later to finish it.
            t += _delay(rng, STEP_DELAY[step] / 3)
            journey.track(t, step, {"completionPercentage": rng.choice((20, 40, 60, 80))})
        t += _delay(rng, STEP_DELAY[step])
        properties: dict[str, Any] = {}
        if step == "Profile Completed":
            properties = {"completionPercentage": 100}
        elif step == "Project Created":
            properties = {"template": rng.choice(("blank", "kanban", "roadmap", "crm"))}
        elif step == "Teammate Invited":
            properties = {"role": rng.choice(("member", "admin")), "invites": rng.randint(1, 6)}
        journey.track(t, step, properties)
    if person.furthest_step == 2 and rng.random() < 0.6:
        # A partial profile that never got finished: the classic form abandonment.
        t += _delay(rng, 20 * 60)
        journey.track(t, "Profile Completed", {"completionPercentage": rng.choice((20, 60))})
    active_until = t + (_delay(rng, 3 * 86400, 1.2) if not person.stalled_now else timedelta(0))
    _noise(rng, journey, person, active_until)
    return journey


def _noise(rng: random.Random, journey: _Journey, person: DemoPerson, until: timedelta) -> None:
    span = max(until.total_seconds(), 60.0)
    for _ in range(rng.randint(1, 6)):
        journey.track(timedelta(seconds=rng.uniform(60, span)), "Logged In", {})
    for _ in range(rng.randint(0, 3)):
        at = timedelta(seconds=rng.uniform(10, span))
        journey.track(at, "Page Viewed", {"path": rng.choice(("/app", "/app/projects", "/help"))})
    for _ in range(rng.randint(0, 2)):
        at = timedelta(seconds=rng.uniform(30, span))
        journey.track(at, "Settings Opened", {"section": rng.choice(SETTINGS_SECTIONS)})
    if rng.random() < 0.18:
        # A burst of failures within minutes (repeated-failure trigger material).
        at = timedelta(seconds=rng.uniform(60, span))
        task = rng.choice(TASKS)
        for attempt in range(1, rng.randint(2, 5) + 1):
            at += timedelta(seconds=rng.uniform(15, 150))
            journey.track(
                at, "Task Failed", {"task": task, "error": rng.choice(ERRORS), "attempt": attempt}
            )
    if person.furthest_step >= 4:
        for _ in range(rng.choice((0, 0, 1, 2, 3, 5, 7))):
            at = timedelta(seconds=rng.uniform(span / 2, span * 1.5))
            journey.track(at, "Report Shared", {"channel": rng.choice(("link", "email", "slack"))})


def iter_journeys(
    *, people: int, seed: int, now: datetime
) -> Iterator[tuple[DemoPerson, list[dict[str, Any]]]]:
    """Yield each person with their payloads in time order, none later than ``now``.

    Person ``i`` is the same for a given seed whatever ``people`` is.
    """
    master = random.Random(seed)
    for index in range(people):
        rng = random.Random(master.getrandbits(64))
        person = _person(rng, index)
        # People stalled right now get a provisional sign-up time; their journey is shifted below.
        signup = now if person.stalled_now else now - SPAN * rng.random() ** 0.8
        journey = _build(rng, person, signup)
        if person.stalled_now:
            last = max(offset for offset, _ in journey.items)
            idle = timedelta(seconds=rng.uniform(3 * 60, 6 * 3600))
            signup = now - idle - last
            for _, payload in journey.items:
                if payload["type"] == "identify":
                    payload["traits"]["signup_date"] = _iso(signup)
        payloads = []
        for offset, payload in sorted(journey.items, key=lambda item: item[0]):
            moment = signup + offset
            if moment > now:
                continue
            payloads.append({**payload, "timestamp": _iso(moment)})
        yield replace(person, furthest_step=_reached(payloads)), payloads


def _reached(payloads: list[dict[str, Any]]) -> int:
    """The furthest flow step done by the payloads (a partial profile does not count)."""
    reached = 0
    for payload in payloads:
        name = payload.get("event")
        partial = payload.get("properties", {}).get("completionPercentage", 100) < 100
        if reached < len(FLOW_EVENTS) and name == FLOW_EVENTS[reached] and not partial:
            reached += 1
    return reached


def demo_payloads(*, people: int, seed: int, now: datetime) -> list[dict[str, Any]]:
    """Every person's payloads, merged in time order (as a server would receive them)."""
    payloads = [
        p for _, journey in iter_journeys(people=people, seed=seed, now=now) for p in journey
    ]
    payloads.sort(key=lambda payload: payload["timestamp"])
    return payloads
