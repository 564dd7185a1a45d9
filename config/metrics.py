"""Prometheus metrics (docs/operations.md): the definitions, and one function per thing measured.

Multiprocess mode: prometheus-client keeps each process's values in files under
``PROMETHEUS_MULTIPROC_DIR`` (set by the settings before this module imports the library), so
gunicorn workers, the Celery worker and management commands such as ``run_triggers`` all count,
and ``GET /metrics`` sums the files. Gauges that describe the database (the due backlog, the review
queue, the worker's heartbeat) are not kept here: a collector computes them at scrape time
(``dashboard.operations``), so they are right whichever process asks.

The functions take plain values (names, counts, seconds) so that any app can call them in one line
without this module knowing the apps' types.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from django.conf import settings

# The settings put PROMETHEUS_MULTIPROC_DIR in the environment; the library reads it on import.
MULTIPROC_DIR = settings.PROMETHEUS_MULTIPROC_DIR

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

# Delivery outcomes as /metrics names them (DESIGN §4.5).
MESSAGE_OUTCOMES = ("sent", "suppressed", "deferred", "failed", "unknown", "review", "cancelled")
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

EVENTS_ACCEPTED = Counter(
    "onramp_events_accepted_total", "Events stored by the tracking API, by type.", ["type"]
)
EVENTS_REJECTED = Counter(
    "onramp_events_rejected_total",
    "Events refused by the tracking API, by code; a request refused whole counts once.",
    ["code"],
)
INGEST_SECONDS = Histogram(
    "onramp_ingest_request_seconds", "Time to answer a tracking API request.", ["endpoint"]
)
RULE_TICK_SECONDS = Histogram(
    "onramp_rule_tick_seconds",
    "Time to evaluate one rule in a tick.",
    ["rule"],
    buckets=TICK_BUCKETS,
)
OCCURRENCES = Counter(
    "onramp_occurrences_total",
    "Trigger occurrences found by rule ticks, by what became of them (enrolled, or why not).",
    ["rule", "outcome"],
)
MESSAGES = Counter(
    "onramp_messages_total",
    "Delivery outcomes by channel: sent, suppressed, deferred, failed (an attempt that failed: "
    "retried later or fallen back), unknown, review, cancelled.",
    ["channel", "outcome"],
)
DELIVERY_PASS_SECONDS = Histogram(
    "onramp_delivery_pass_seconds", "Time of one delivery pass.", buckets=TICK_BUCKETS
)


@contextmanager
def ingest_timer(endpoint: str) -> Iterator[None]:
    """Observe the duration of a tracking API request, whatever its answer."""
    started = time.perf_counter()
    try:
        yield
    finally:
        INGEST_SECONDS.labels(endpoint=endpoint).observe(time.perf_counter() - started)


def events_ingested(*, accepted: Mapping[str, int], rejected: Iterable[str]) -> None:
    """A committed request: events stored by type, events refused by code."""
    for event_type, count in accepted.items():
        if count:
            EVENTS_ACCEPTED.labels(type=event_type).inc(count)
    for code in rejected:
        EVENTS_REJECTED.labels(code=code).inc()


def request_rejected(code: str) -> None:
    """A request refused as a whole (unreadable, unauthorised, too large, rate limited…)."""
    EVENTS_REJECTED.labels(code=code).inc()


def rule_ticked(*, rule: str, seconds: float, outcomes: Mapping[str, int]) -> None:
    RULE_TICK_SECONDS.labels(rule=rule).observe(seconds)
    for outcome, count in outcomes.items():
        if count:
            OCCURRENCES.labels(rule=rule, outcome=outcome).inc(count)


def messages_delivered(*, outcomes: Mapping[tuple[str, str], int]) -> None:
    """Counts by (channel, outcome), the outcome one of :data:`MESSAGE_OUTCOMES`."""
    for (channel, outcome), count in outcomes.items():
        if count:
            MESSAGES.labels(channel=channel, outcome=outcome).inc(count)


def delivery_pass(seconds: float) -> None:
    DELIVERY_PASS_SECONDS.observe(seconds)


def exposition(*collectors: object) -> tuple[bytes, str]:
    """Every process's metrics, plus ``collectors`` computed now: the body and its content type."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry), CONTENT_TYPE_LATEST
