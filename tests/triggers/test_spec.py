"""Rule definitions: every problem is reported with its path; valid ones round-trip exactly."""

from __future__ import annotations

import pytest

from triggers.rules.spec import parse_rule


class Catalog:
    def flow_steps(self, slug):
        return {"activation": 4}.get(slug)

    def flow_window(self, slug):
        return {"activation": 7 * 86400}.get(slug)

    def template_channel(self, slug):
        return {"tip": "email", "nudge": "in_app"}.get(slug)

    def has_segment(self, slug):
        return slug == "mobile"


VALID = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "step": 3, "minutes": 5},
    "segment": "mobile",
    "follow_ups": [
        {"channel": "email", "template": "tip", "delay": "0s"},
        {"channel": "email", "template": "tip", "delay": "3d", "at": "10:00"},
    ],
    "exit_when": "progressed",
    "reentry": {"once_per": "7d"},
    "quiet_hours": {"start": "21:00", "end": "08:00"},
    "cap": {"max": 2, "per": "7d"},
}


def problems(definition):
    spec, found = parse_rule(definition, Catalog())
    assert (spec is None) == bool(found)
    return {p.path: p.message for p in found}


def test_valid_definition_round_trips_exactly():
    spec, found = parse_rule(VALID, Catalog())
    assert found == []
    assert spec.to_definition() == VALID
    again, _ = parse_rule(spec.to_definition(), Catalog())
    assert again == spec


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [
        (
            {"trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 0}},
            "trigger.minutes",
            "positive",
        ),
        (
            {"trigger": {"kind": "inactive_in_flow", "flow": "nope", "minutes": 5}},
            "trigger.flow",
            "no flow",
        ),
        (
            {
                "trigger": {
                    "kind": "inactive_in_flow",
                    "flow": "activation",
                    "step": 9,
                    "minutes": 5,
                }
            },
            "trigger.step",
            "4 steps",
        ),
        (
            {"trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 20000}},
            "trigger.minutes",
            "shorter than",
        ),
        ({"trigger": {"kind": "teleport"}}, "trigger.kind", "must be one of"),
        (
            {
                "trigger": {
                    "kind": "step_abandoned",
                    "flow": "activation",
                    "did": 3,
                    "missing": 2,
                    "within": "1h",
                }
            },
            "trigger.missing",
            "later step",
        ),
        (
            {
                "trigger": {
                    "kind": "step_abandoned",
                    "flow": "activation",
                    "did": 2,
                    "missing": 3,
                    "within": "soon",
                }
            },
            "trigger.within",
            "duration",
        ),
        (
            {
                "trigger": {
                    "kind": "repeated_event",
                    "event": "Task Failed",
                    "times": 1,
                    "within": "10m",
                }
            },
            "trigger.times",
            "at least 2",
        ),
        (
            {"trigger": {"kind": "event", "event": "X", "minutes": 3}},
            "trigger.minutes",
            "not a field",
        ),
        ({"follow_ups": []}, "follow_ups", "at least one"),
        (
            {"follow_ups": [{"channel": "fax", "template": "tip"}]},
            "follow_ups[0].channel",
            "must be one of",
        ),
        (
            {"follow_ups": [{"channel": "email", "template": "nudge"}]},
            "follow_ups[0].template",
            "for in_app",
        ),
        (
            {"follow_ups": [{"channel": "email", "template": "missing"}]},
            "follow_ups[0].template",
            "no template",
        ),
        (
            {
                "follow_ups": [
                    {"channel": "email", "template": "tip", "delay": "3d"},
                    {"channel": "email", "template": "tip", "delay": "1h"},
                ]
            },
            "follow_ups[1].delay",
            "previous",
        ),
        (
            {"follow_ups": [{"channel": "email", "template": "tip", "at": "25:00"}]},
            "follow_ups[0].at",
            "HH:MM",
        ),
        ({"segment": "unknown"}, "segment", "no segment"),
        ({"exit_when": "bored"}, "exit_when", "must be one of"),
        ({"reentry": "twice"}, "reentry", "once"),
        ({"quiet_hours": {"start": "21:00", "end": "21:00"}}, "quiet_hours.end", "differ"),
        ({"cap": {"max": 0, "per": "7d"}}, "cap.max", "positive"),
        ({"colour": "red"}, "colour", "not a field"),
    ],
)
def test_each_problem_names_its_path(change, path, fragment):
    found = problems({**VALID, **change})
    assert path in found, found
    assert fragment in found[path]


def test_exit_when_needs_a_flow_trigger_and_defaults_to_never_without_one():
    definition = {
        "trigger": {"kind": "event", "event": "Trial Ending"},
        "follow_ups": VALID["follow_ups"],
    }
    spec, found = parse_rule(definition, Catalog())
    assert found == [] and spec.exit_when == "never"
    assert "exit_when" in problems({**definition, "exit_when": "completed"})


def test_all_problems_are_reported_together():
    found = problems(
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation"},
            "follow_ups": [{"channel": "x"}],
        }
    )
    assert {"trigger.minutes", "follow_ups[0].channel", "follow_ups[0].template"} <= set(found)
