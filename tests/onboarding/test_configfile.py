"""Configuration as code (DESIGN §3.4): validation with paths, dry run, idempotence, round trip."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onboarding.configfile.document import export_config, import_config
from onboarding.configfile.durations import DurationError, format_duration, parse_duration
from onboarding.configfile.errors import ProblemsError
from onboarding.models import OnboardingFlow, Segment, Step

DESIGN_EXAMPLE = """\
flows:
  - slug: activation
    name: Activation
    window: 7d                      # conversion window, from entry
    steps:                          # ordered; the first step is the entry
      - {name: Signed up, event: Signed Up}
      - {name: Email verified, event: Email Verified}
      - {name: Profile completed, event: Profile Completed, where: {completionPercentage: 100}}
      - {name: First project, event: Project Created, optional: false, critical: true}
segments:
  - slug: mobile-ads
    name: Mobile sign-ups from ads
    match: all                      # all | any
    conditions:
      - {trait: source, op: eq, value: ads}     # eq neq contains in not_in gt gte lt lte
      - {trait: signup_date, op: within_last, value: 30d}
      - {event: Signed Up, where: {device: ios}, count: {op: gte, value: 1}, within: 30d}
      - {flow: activation, state: stalled, step: 3}   # entered completed stalled not_entered
      - {any: [{trait: plan, op: eq, value: pro}, {not: {trait: plan, op: is_set}}]}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ProblemsError) as error:
        import_config(text)
    return [str(problem) for problem in error.value.problems]


def snapshot() -> tuple:
    return (
        list(OnboardingFlow.objects.values_list("slug", "name", "window_seconds", "updated_at")),
        list(Step.objects.values_list("pk", "flow__slug", "position", "event_name", "where")),
        list(Segment.objects.values_list("slug", "name", "definition", "updated_at")),
    )


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("5m", 300), ("24h", 86400), ("7d", 604800), ("0m", 0)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "7 d", "1w", "-5m", "1.5h", 7, None, "99999999999d"])
def test_parse_duration_rejects(text):
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "90s"), (300, "5m"), (86400, "1d"), (90000, "25h"), (0, "0s")]
)
def test_format_duration_picks_the_largest_exact_unit(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


# -- import ----------------------------------------------------------------------------------


def test_design_example_imports(db):
    result = import_config(DESIGN_EXAMPLE)
    assert [str(c) for c in result.changes] == [
        "flow activation: created",
        "segment mobile-ads: created",
    ]
    flow = OnboardingFlow.objects.get()
    assert flow.window_seconds == 7 * 86400
    steps = list(flow.steps.order_by("position"))
    assert steps[2].where == {"completionPercentage": 100}
    assert (steps[3].optional, steps[3].critical) == (False, True)
    segment = Segment.objects.get()
    assert segment.definition["conditions"][2] == {
        "event": "Signed Up",
        "where": {"device": "ios"},
        "within": "30d",
    }


def test_importing_twice_is_a_no_op(db):
    import_config(DESIGN_EXAMPLE)
    before = snapshot()
    result = import_config(DESIGN_EXAMPLE)
    assert {c.status for c in result.changes} == {"unchanged"}
    assert not result.changed
    assert snapshot() == before


def test_dry_run_reports_and_writes_nothing(db):
    result = import_config(DESIGN_EXAMPLE, dry_run=True)
    assert [c.status for c in result.changes] == ["created", "created"]
    assert "would be 2 created" in result.summary()
    assert snapshot() == ([], [], [])

    import_config(DESIGN_EXAMPLE)
    before = snapshot()
    changed = DESIGN_EXAMPLE.replace("name: Activation", "name: Activation v2")
    changed = changed.replace("value: ads}", "value: social}")
    result = import_config(changed, dry_run=True)
    assert [c.status for c in result.changes] == ["updated", "updated"]
    assert snapshot() == before


def test_update_and_objects_not_in_the_file_are_left_alone(db):
    import_config(DESIGN_EXAMPLE)
    Segment.objects.create(slug="manual", name="Manual", definition={"match": "all"})
    result = import_config(DESIGN_EXAMPLE.replace("window: 7d", "window: 14d"))
    assert [c.status for c in result.changes] == ["updated", "unchanged"]
    assert OnboardingFlow.objects.get().window_seconds == 14 * 86400
    assert Segment.objects.filter(slug="manual").exists()


def test_round_trip_is_exact(db):
    import_config(DESIGN_EXAMPLE)
    import_config(
        """
segments:
  - slug: everything
    name: "Every: operator"
    match: any
    conditions:
      - {trait: plan, op: neq, value: "yes"}
      - {trait: country, op: eq, value: NO}
      - {trait: age, op: gte, value: 21.5}
      - {trait: beta, op: eq, value: true}
      - {trait: tags, op: in, value: [a, 1, false]}
      - {trait: tags, op: not_in, value: [b]}
      - {trait: company, op: contains, value: "Acme, Inc."}
      - {trait: signup_date, op: before, value: 2026-01-01}
      - {trait: signup_date, op: after, value: 90d}
      - {trait: signup_date, op: lt, value: "2026-01-01T10:00:00+02:00"}
      - {trait: x, op: is_not_set}
      - {person: email, op: contains, value: "@example.com"}
      - {person: first_touch_device, op: in, value: [ios, android]}
      - {person: last_seen, op: within_last, value: 90m}
      - {event: Task Failed, count: {op: gte, value: 3}, within: 600s}
      - {event: Signed Up, where: {device: {op: in, value: [ios]}, n: 3}, count: {op: eq, value: 0}}
      - {flow: activation, state: stalled, step: 2, for: 2h}
      - {flow: activation, state: completed}
      - {all: [{not: {flow: activation, state: not_entered}}, {any: [{trait: a, op: is_set}]}]}
"""
    )
    first = export_config()
    assert "value: 'yes'" in first or 'value: "yes"' in first
    assert "for: 2h" in first
    assert "within: 10m" in first

    # Into an empty database, then export again.
    Segment.objects.all().delete()
    OnboardingFlow.objects.all().delete()
    result = import_config(first)
    assert {c.status for c in result.changes} == {"created"}
    assert export_config() == first
    assert {c.status for c in import_config(first).changes} == {"unchanged"}


def test_export_of_an_empty_database(db):
    assert export_config() == "flows: []\nsegments: []\ntemplates: []\nrules: []\nexperiments: []\n"
    assert import_config(export_config()).changes == []
    assert import_config("").changes == []


def test_a_segment_may_name_a_flow_defined_in_the_same_file(db):
    result = import_config(DESIGN_EXAMPLE, dry_run=True)
    assert [c.status for c in result.changes] == ["created", "created"]


def test_atomic_one_bad_object_changes_nothing(db):
    import_config(DESIGN_EXAMPLE)
    before = snapshot()
    bad = (
        DESIGN_EXAMPLE.replace("name: Activation", "name: Renamed")
        + "  - {slug: broken, name: Broken, conditions: [{trait: x, op: gt, value: abc}]}\n"
    )
    assert problems_of(bad) == [
        "segments[1].conditions[0].value: must be a number or an ISO 8601 date"
    ]
    assert snapshot() == before


def test_failure_while_applying_rolls_everything_back(db, monkeypatch):
    from onboarding.configfile import sections

    def explode(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(sections, "segment_save", explode)
    with pytest.raises(RuntimeError):
        import_config(DESIGN_EXAMPLE)
    assert snapshot() == ([], [], [])


# -- every error, with its path ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flows: [", "not valid YAML"),
        ("- a\n- b\n", "the document must be a mapping of sections"),
        ("flows: []\nflows: []\n", "duplicate key 'flows'"),
        (
            "widgets: []",
            "widgets: unknown section (expected experiments, flows, rules, segments, templates)",
        ),
        ("experiments: {}", "experiments: must be a list"),
        ("flows: {}", "flows: must be a list"),
        ("flows: [3]", "flows[0]: must be a mapping"),
        ("flows: [{name: A, steps: [{name: a, event: A}]}]", "flows[0].slug: required"),
        ("flows: [{slug: 3, name: A, steps: [{name: a, event: A}]}]", "flows[0].slug: must be a"),
        ("flows: [{slug: Bad Slug, name: A, steps: [{name: a, event: A}]}]", "flows[0].slug: "),
        ("flows: [{slug: a, steps: [{name: a, event: A}]}]", "flows[0].name: required"),
        ("flows: [{slug: a, name: '', steps: [{name: a, event: A}]}]", "flows[0].name: must be"),
        ("flows: [{slug: a, name: A, colour: red, steps: [{name: a, event: A}]}]",
         "flows[0].colour: unknown key"),
        ("flows: [{slug: a, name: A, window: 7, steps: [{name: a, event: A}]}]",
         "flows[0].window: must be a duration"),
        ("flows: [{slug: a, name: A, window: 0s, steps: [{name: a, event: A}]}]",
         "flows[0].window: must be a positive duration"),
        ("flows: [{slug: a, name: A}]", "flows[0].steps: required"),
        ("flows: [{slug: a, name: A, steps: []}]", "flows[0].steps: must be a non-empty list"),
        ("flows: [{slug: a, name: A, steps: [x]}]", "flows[0].steps[0]: must be a mapping"),
        ("flows: [{slug: a, name: A, steps: [{name: a}, {name: b, event: B}, {name: c}]}]",
         "flows[0].steps[0].event: required"),
        ("flows: [{slug: a, name: A, steps: [{name: a, event: A}, {name: b, event: B}, {name: c}]}]",
         "flows[0].steps[2].event: required"),
        ("flows: [{slug: a, name: A, steps: [{event: A}]}]", "flows[0].steps[0].name: required"),
        ("flows: [{slug: a, name: A, steps: [{name: a, event: A, when: 1}]}]",
         "flows[0].steps[0].when: unknown key"),
        ("flows: [{slug: a, name: A, steps: [{name: a, event: A, where: [1]}]}]",
         "flows[0].steps[0].where: must be a mapping"),
        ("flows: [{slug: a, name: A, steps: [{name: a, event: A, where: {p: [1]}}]}]",
         "flows[0].steps[0].where.p: must be a property name with a string"),
        ("flows: [{slug: a, name: A, steps: [{name: a, event: A, critical: yes}]}]",
         "flows[0].steps[0].critical: must be true or false"),
        ("flows: [{slug: a, name: A, steps: [{name: a, event: A, optional: 1}]}]",
         "flows[0].steps[0].optional: must be true or false"),
        (f"flows: [{{slug: a, name: A, steps: [{{name: a, event: {'E' * 300}}}]}}]",
         "flows[0].steps[0].event: Ensure this value has at most 255 characters"),
        ("flows: [{slug: a, name: A, steps: [{name: a, event: A}]}, "
         "{slug: a, name: B, steps: [{name: a, event: A}]}]",
         "flows[1].slug: duplicate slug 'a' (also flows[0])"),
        ("segments: [{slug: s, name: S, match: most}]", "segments[0].match: must be all or any"),
        ("segments: [{slug: s, name: S, conditions: {}}]",
         "segments[0].conditions: must be a list of conditions"),
        ("segments: [{slug: s, name: S, condition: []}]", "segments[0].condition: unknown key"),
        ("segments: [{slug: s, conditions: []}]", "segments[0].name: required"),
        ("segments: [{slug: S S, name: S}]", "segments[0].slug: "),
        ("segments: [{slug: s, name: S, conditions: [3]}]",
         "segments[0].conditions[0]: must be a mapping (a condition)"),
        ("segments: [{slug: s, name: S, conditions: [{op: eq}]}]",
         "segments[0].conditions[0]: must have exactly one of trait, person, event, flow"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, event: b}]}]",
         "(found trait, event)"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: equals, value: 1}]}]",
         "segments[0].conditions[0].op: unknown operator 'equals'"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, value: 1}]}]",
         "segments[0].conditions[0].op: required"),
        ("segments: [{slug: s, name: S, conditions: [{trait: '', op: is_set}]}]",
         "segments[0].conditions[0].trait: must be a non-empty string"),
        ("segments: [{slug: s, name: S, conditions: [{trait: 'a\"b', op: is_set}]}]",
         "segments[0].conditions[0].trait: must not contain a double quote"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: eq}]}]",
         "segments[0].conditions[0].value: required"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: eq, value: [1]}]}]",
         "segments[0].conditions[0].value: must be a string, number or boolean"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: eq, value: null}]}]",
         "segments[0].conditions[0].value: must be a string, number or boolean"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: is_set, value: 1}]}]",
         "segments[0].conditions[0].value: must not be given with is_set"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: contains, value: 3}]}]",
         "segments[0].conditions[0].value: must be a non-empty string"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: in, value: []}]}]",
         "segments[0].conditions[0].value: must be a non-empty list"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: in, value: [a, [b]]}]}]",
         "segments[0].conditions[0].value[1]: must be a string, number or boolean"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: gt, value: true}]}]",
         "segments[0].conditions[0].value: must be a number or an ISO 8601 date"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: before, value: soon}]}]",
         "segments[0].conditions[0].value: must be an ISO 8601 date or a duration ago"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: within_last, value: 30}]}]",
         "segments[0].conditions[0].value: must be a duration"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: within_last, value: 0d}]}]",
         "segments[0].conditions[0].value: must be a positive duration"),
        ("segments: [{slug: s, name: S, conditions: [{trait: a, op: is_set, x: 1}]}]",
         "segments[0].conditions[0].x: unknown key"),
        ("segments: [{slug: s, name: S, conditions: [{person: age, op: is_set}]}]",
         "segments[0].conditions[0].person: unknown person field 'age'"),
        ("segments: [{slug: s, name: S, conditions: [{person: [email], op: is_set}]}]",
         "segments[0].conditions[0].person: unknown person field ['email']"),
        ("segments: [{slug: s, name: S, conditions: [{person: email, op: gt, value: 1}]}]",
         "segments[0].conditions[0].op: operator 'gt' does not apply to person field 'email'"),
        ("segments: [{slug: s, name: S, conditions: [{person: first_seen, op: gt, value: 1}]}]",
         "segments[0].conditions[0].value: must be an ISO 8601 date or datetime"),
        ("segments: [{slug: s, name: S, conditions: [{event: ''}]}]",
         "segments[0].conditions[0].event: must be a non-empty string"),
        ("segments: [{slug: s, name: S, conditions: [{event: E, where: [a]}]}]",
         "segments[0].conditions[0].where: must be a mapping of property: value"),
        ("segments: [{slug: s, name: S, conditions: [{event: E, where: {p: [1]}}]}]",
         "segments[0].conditions[0].where.p: must be a string, number or boolean, or a mapping"),
        ("segments: [{slug: s, name: S, conditions: [{event: E, where: {p: {op: nope}}}]}]",
         "segments[0].conditions[0].where.p.op: unknown operator 'nope'"),
        ("segments: [{slug: s, name: S, conditions: [{event: E, where: {p: {op: eq, v: 1}}}]}]",
         "segments[0].conditions[0].where.p.v: unknown key"),
        ("segments: [{slug: s, name: S, conditions: [{event: E, count: 3}]}]",
         "segments[0].conditions[0].count: must be a mapping with op and value"),
        ("segments: [{slug: s, name: S, conditions: [{event: E, count: {op: most, value: 1}}]}]",
         "segments[0].conditions[0].count.op: unknown operator 'most'"),
        ("segments: [{slug: s, name: S, conditions: [{event: E, count: {op: gte, value: -1}}]}]",
         "segments[0].conditions[0].count.value: must be a non-negative integer"),
        ("segments: [{slug: s, name: S, conditions: [{event: E, count: {op: gte, value: 1.5}}]}]",
         "segments[0].conditions[0].count.value: must be a non-negative integer"),
        ("segments: [{slug: s, name: S, conditions: [{event: E, within: forever}]}]",
         "segments[0].conditions[0].within: must be a duration"),
        ("segments: [{slug: s, name: S, conditions: [{event: E, within: 0s}]}]",
         "segments[0].conditions[0].within: must be a positive duration"),
        ("segments: [{slug: s, name: S, conditions: [{flow: nope, state: entered}]}]",
         "segments[0].conditions[0].flow: unknown flow 'nope'"),
        ("segments: [{slug: s, name: S, conditions: [{flow: activation}]}]",
         "segments[0].conditions[0].state: required"),
        ("segments: [{slug: s, name: S, conditions: [{flow: activation, state: gone}]}]",
         "segments[0].conditions[0].state: unknown state 'gone'"),
        ("segments: [{slug: s, name: S, conditions: [{flow: activation, state: entered, step: 9}]}]",
         "segments[0].conditions[0].step: must be a step number from 2 to 4 (flow 'activation')"),
        ("segments: [{slug: s, name: S, conditions: [{flow: activation, state: entered, step: 1}]}]",
         "segments[0].conditions[0].step: must be a step number from 2"),
        ("segments: [{slug: s, name: S, conditions: [{flow: activation, state: completed, step: 2}]}]",
         "segments[0].conditions[0].step: applies only to entered and stalled, not completed"),
        ("segments: [{slug: s, name: S, conditions: [{flow: activation, state: entered, for: 1h}]}]",
         "segments[0].conditions[0].for: applies only to state stalled"),
        ("segments: [{slug: s, name: S, conditions: [{flow: activation, state: stalled, for: x}]}]",
         "segments[0].conditions[0].for: must be a duration"),
        ("segments: [{slug: s, name: S, conditions: [{any: []}]}]",
         "segments[0].conditions[0].any: must not be empty"),
        ("segments: [{slug: s, name: S, conditions: [{all: [{trait: a, op: x}]}]}]",
         "segments[0].conditions[0].all[0].op: unknown operator 'x'"),
        ("segments: [{slug: s, name: S, conditions: [{not: {trait: a, op: x}}]}]",
         "segments[0].conditions[0].not.op: unknown operator 'x'"),
        ("segments: [{slug: s, name: S, conditions: [{not: {trait: a, op: is_set}, x: 1}]}]",
         "segments[0].conditions[0].x: unknown key"),
        ("segments: [{slug: s, name: S}, {slug: s, name: T}]",
         "segments[1].slug: duplicate slug 's' (also segments[0])"),
    ],
)  # fmt: skip
def test_every_error_has_its_path(db, text, expected):
    import_config(DESIGN_EXAMPLE.split("segments:")[0])  # the flow "activation", 4 steps
    problems = problems_of(text)
    assert any(expected in problem for problem in problems), problems


def test_all_errors_are_reported_at_once(db):
    problems = problems_of(
        """
flows:
  - {slug: a, name: A, window: 7 days, steps: [{name: a, event: A}, {name: b}]}
segments:
  - {slug: s, name: S, conditions: [{trait: x, op: equals, value: 1}, {flow: zzz, state: entered}]}
experiments: {}
"""
    )
    assert problems == [
        "flows[0].window: must be a duration such as 90s, 5m, 24h or 7d, not '7 days'",
        "flows[0].steps[1].event: required",
        "segments[0].conditions[0].op: unknown operator 'equals' (one of eq, neq, contains, in, "
        "not_in, gt, gte, lt, lte, before, after, within_last, is_set, is_not_set)",
        "segments[0].conditions[1].flow: unknown flow 'zzz'",
        "experiments: must be a list",
    ]


def test_yaml_scalars_are_not_surprising(db):
    import_config(
        "segments: [{slug: s, name: S, conditions: "
        "[{trait: country, op: in, value: [NO, on, yes]}, {trait: d, op: after, value: 2026-01-01}]}]"
    )
    conditions = Segment.objects.get().definition["conditions"]
    assert conditions[0]["value"] == ["NO", "on", "yes"]
    assert conditions[1]["value"] == "2026-01-01"


# -- the command -----------------------------------------------------------------------------


def test_command_import_export_and_dry_run(db, tmp_path: Path):
    config = tmp_path / "onramp.yaml"
    config.write_text(DESIGN_EXAMPLE)
    out = io.StringIO()
    call_command("onramp", "import", str(config), "--dry-run", stdout=out)
    assert "flow activation would be created" in out.getvalue()
    assert not OnboardingFlow.objects.exists()

    out = io.StringIO()
    call_command("onramp", "import", str(config), stdout=out)
    assert "2 created, 0 updated, 0 unchanged." in out.getvalue()

    exported = tmp_path / "exported.yaml"
    call_command("onramp", "export", "--output", str(exported), stderr=io.StringIO())
    out = io.StringIO()
    call_command("onramp", "export", stdout=out)
    assert out.getvalue() == exported.read_text() == export_config()

    out = io.StringIO()
    call_command("onramp", "import", str(exported), stdout=out)
    assert "0 created, 0 updated, 2 unchanged." in out.getvalue()


def test_command_reports_every_problem_and_fails(db, tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text("flows: [{slug: a, name: A, steps: [{name: a}]}]\nexperiments: {}\n")
    err = io.StringIO()
    with pytest.raises(CommandError, match="2 problems found; nothing was changed"):
        call_command("onramp", "import", str(config), stderr=err)
    assert f"{config}: flows[0].steps[0].event: required" in err.getvalue()
    assert f"{config}: experiments: must be a list" in err.getvalue()
    with pytest.raises(CommandError, match="cannot read"):
        call_command("onramp", "import", str(tmp_path / "missing.yaml"))


# -- import never crashes on odd input --------------------------------------------------------

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4)
    | st.sampled_from(["a", "7d", "eq", "Signed Up", "activation", "stalled"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(
        st.sampled_from(["slug", "name", "window", "steps", "event", "where", "optional",
                         "critical", "match", "conditions", "trait", "op", "value", "flow",
                         "state", "step", "any", "not", "count", "within"]),
        children,
        max_size=4,
    ),
    max_leaves=15,
)  # fmt: skip


@given(st.dictionaries(st.sampled_from(["flows", "segments", "rules", "x"]), _values, max_size=3))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_import_reports_problems_and_never_crashes(db, document):
    text = yaml.safe_dump(document)
    try:
        import_config(text, dry_run=True)
    except ProblemsError as error:
        assert error.problems
