"""docs/operations.md's example alert rules: valid YAML in Prometheus's rule-file shape, one rule
per promised alert, each with a runbook section that exists, and naming only metrics Onramp
exports (a renamed metric would silently never fire)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from django.conf import settings

DOC = Path(settings.BASE_DIR) / "docs" / "operations.md"
EXPORTED = {
    "onramp_events_accepted_total",
    "onramp_events_rejected_total",
    "onramp_ingest_request_seconds",
    "onramp_rule_tick_seconds",
    "onramp_occurrences_total",
    "onramp_messages_total",
    "onramp_delivery_pass_seconds",
    "onramp_delivery_due",
    "onramp_delivery_oldest_due_seconds",
    "onramp_review_queue",
    "onramp_worker_heartbeat_age_seconds",
    "onramp_database_up",
}


def rules_block() -> dict:
    text = DOC.read_text()
    section = text[text.index("### Alert rules and runbooks") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return yaml.safe_load(block)


def test_the_example_rules_are_a_prometheus_rule_file() -> None:
    (group,) = rules_block()["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert {
        "OnrampDeliveryBacklogOld",
        "OnrampUnknownOutcomes",
        "OnrampRejectedEventsSpike",
        "OnrampWorkerHeartbeatStale",
    } <= set(alerts)
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in DOC.read_text().splitlines()
        if line.startswith("#### ")
    }
    for name, rule in alerts.items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert rule["annotations"]["summary"], name
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in headings, (name, anchor)
        assert rule["expr"].count("(") == rule["expr"].count(")"), name


def test_the_example_rules_name_only_exported_metrics() -> None:
    (group,) = rules_block()["groups"]
    for rule in group["rules"]:
        for name in re.findall(r"\bonramp_[a-z_]+", rule["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in EXPORTED or base in EXPORTED, (rule["alert"], name)


def test_every_exported_metric_is_documented() -> None:
    text = DOC.read_text()
    for name in EXPORTED:
        assert f"| `{name}` |" in text, name


def test_the_list_is_what_the_code_exports(db) -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from config import metrics
    from dashboard.operations import DatabaseStateCollector

    defined = {
        value._name + ("_total" if value._type == "counter" else "")
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)
    }
    collected = {family.name for family in DatabaseStateCollector().collect()}
    assert defined | collected == EXPORTED
