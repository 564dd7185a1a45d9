"""The templates and rules sections of the configuration file (DESIGN §3.4): every error with its
path, references within one file, dry run, idempotence, exact round trip, all or nothing."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from onboarding.configfile.document import export_config, import_config
from onboarding.configfile.errors import ProblemsError
from onboarding.models import OnboardingFlow, Segment
from triggers.models import AuditLog, MessageTemplate, Rule, RuleState, RuleVersion
from triggers.services.rules import rule_set_status

FILE = """\
flows:
  - slug: activation
    name: Activation
    window: 7d
    steps:
      - {name: Signed up, event: Signed Up}
      - {name: Email verified, event: Email Verified}
      - {name: Profile completed, event: Profile Completed, where: {completionPercentage: 100}}
      - {name: First project, event: Project Created, critical: true}
segments:
  - slug: mobile-ads
    name: Mobile sign-ups from ads
    match: all
    conditions:
      - {trait: source, op: eq, value: ads}
templates:
  - slug: profile-tip
    channel: email                  # email in_app sms webhook
    subject: "Finish your profile, {{ first_name | default: 'there' }}"
    body: |
      Hi {{ first_name | default: 'there' }}, you started setting up your profile but did not finish.
      Here is a quick tip: {{ 'https://app.example.com/profile' }}
  - slug: profile-reminder
    channel: email
    subject: Still setting up?
    body: "Hi {{ first_name | default: 'there' }}, your profile is one step away."
  - slug: nudge
    channel: in_app
    body: "Need a hand, {{ first_name | default: 'there' }}?"
rules:
  - slug: profile-stalled
    name: Nudge stalled profile set-up
    status: active                  # draft active paused archived
    trigger: {kind: inactive_in_flow, flow: activation, step: 3, minutes: 5}
    segment: mobile-ads             # optional
    follow_ups:
      - {channel: email, template: profile-tip, delay: 0m}
      - {channel: email, template: profile-reminder, delay: 3d}
    exit_when: progressed           # progressed | completed | never
    reentry: {once_per: 7d}         # or: once
    priority: 10
    quiet_hours: {start: "21:00", end: "08:00"}
  - slug: failures
    name: Three failed attempts
    status: draft
    trigger: {kind: repeated_event, event: Task Failed, where: {task: import_csv}, times: 3, within: 10m}
    follow_ups:
      - {channel: in_app, template: nudge, delay: 0s}
    exit_when: never
    reentry: once
    priority: 5
    cap: {max: 1, per: 1d}
    fallback: {channel: in_app, template: nudge}
  - slug: abandoned
    name: Form abandoned
    status: paused
    trigger: {kind: step_abandoned, flow: activation, did: 2, missing: 3, within: 30m}
    follow_ups:
      - {channel: email, template: profile-tip, delay: 1h, at: "10:00"}
    exit_when: progressed
    reentry: once
    priority: 0
"""


def load() -> dict[str, Any]:
    return yaml.safe_load(FILE)


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def problems_of(text: str) -> list[str]:
    with pytest.raises(ProblemsError) as error:
        import_config(text)
    return [str(problem) for problem in error.value.problems]


def snapshot() -> tuple:
    return (
        list(OnboardingFlow.objects.values_list("slug", "name", "updated_at")),
        list(Segment.objects.values_list("slug", "definition", "updated_at")),
        list(
            MessageTemplate.objects.values_list("slug", "channel", "subject", "body", "updated_at")
        ),
        list(Rule.objects.values_list("slug", "name", "status", "priority", "updated_at")),
        list(RuleVersion.objects.values_list("rule__slug", "number", "definition")),
        list(RuleState.objects.values_list("rule__slug", "checked_until")),
        AuditLog.objects.count(),
    )


# -- apply ------------------------------------------------------------------------------------


def test_the_design_shape_imports_through_the_services(db):
    result = import_config(FILE)
    assert [str(c) for c in result.changes] == [
        "flow activation: created",
        "segment mobile-ads: created",
        "template profile-tip: created",
        "template profile-reminder: created",
        "template nudge: created",
        "rule profile-stalled: created",
        "rule failures: created",
        "rule abandoned: created",
    ]
    stalled = Rule.objects.get(slug="profile-stalled")
    assert (stalled.name, stalled.status, stalled.priority) == (
        "Nudge stalled profile set-up",
        "active",
        10,
    )
    assert stalled.current_version.number == 1
    assert stalled.current_version.definition == {
        "trigger": {"kind": "inactive_in_flow", "flow": "activation", "step": 3, "minutes": 5},
        "segment": "mobile-ads",
        "follow_ups": [
            {"channel": "email", "template": "profile-tip", "delay": "0s"},
            {"channel": "email", "template": "profile-reminder", "delay": "3d"},
        ],
        "exit_when": "progressed",
        "reentry": {"once_per": "7d"},
        "quiet_hours": {"start": "21:00", "end": "08:00"},
    }
    # Activation through the service: detection starts from now.
    assert RuleState.objects.get(rule=stalled).checked_until is not None
    assert not RuleState.objects.filter(rule__slug="failures").exists()
    assert Rule.objects.get(slug="abandoned").status == "paused"
    tip = MessageTemplate.objects.get(slug="profile-tip")
    assert tip.subject == "Finish your profile, {{ first_name | default: 'there' }}"
    assert tip.body.endswith("{{ 'https://app.example.com/profile' }}\n")
    assert MessageTemplate.objects.get(slug="nudge").subject == ""
    # Audited as the system's import, one row per created object.
    audit = AuditLog.objects.filter(actor_label="import", actor__isnull=True)
    assert sorted(audit.values_list("object_type", "action")) == [
        ("triggers.messagetemplate", "create"),
        ("triggers.messagetemplate", "create"),
        ("triggers.messagetemplate", "create"),
        ("triggers.rule", "create"),
        ("triggers.rule", "create"),
        ("triggers.rule", "create"),
    ]


def test_importing_twice_writes_nothing(db):
    import_config(FILE)
    before = snapshot()
    versions, audits = RuleVersion.objects.count(), AuditLog.objects.count()
    result = import_config(FILE)
    assert {c.status for c in result.changes} == {"unchanged"}
    assert not result.changed
    assert RuleVersion.objects.count() == versions == 3
    assert AuditLog.objects.count() == audits
    assert snapshot() == before


def test_an_equivalent_spelling_is_unchanged(db):
    import_config(FILE)
    versions = RuleVersion.objects.count()
    same = FILE.replace("delay: 0m", "delay: 0s").replace("within: 30m", "within: 1800s")
    assert {c.status for c in import_config(same).changes} == {"unchanged"}
    assert RuleVersion.objects.count() == versions


def test_changes_make_versions_status_changes_do_not(db):
    import_config(FILE)
    data = load()
    data["rules"][0]["trigger"]["minutes"] = 10  # definition: a new version
    data["rules"][1]["status"] = "active"  # status only: same version
    data["rules"][2]["name"] = "Profile form abandoned"  # name only: same version
    data["templates"][2]["body"] = "Stuck? We can help."
    result = import_config(dump(data))
    assert [str(c) for c in result.changes if c.status != "unchanged"] == [
        "template nudge: updated",
        "rule profile-stalled: updated",
        "rule failures: updated",
        "rule abandoned: updated",
    ]
    numbers = dict(Rule.objects.values_list("slug", "current_version__number"))
    assert numbers == {"profile-stalled": 2, "failures": 1, "abandoned": 1}
    assert RuleVersion.objects.count() == 4
    failures = Rule.objects.get(slug="failures")
    assert failures.status == "active"
    assert RuleState.objects.filter(rule=failures).exists()
    assert MessageTemplate.objects.get(slug="nudge").body == "Stuck? We can help."
    updates = AuditLog.objects.filter(action="update", actor_label="import")
    assert updates.count() == 4
    stalled_update = updates.get(object_id=str(Rule.objects.get(slug="profile-stalled").pk))
    assert stalled_update.changes == {"version": [1, 2]}


def test_a_status_changed_elsewhere_is_brought_back_by_the_file(db):
    import_config(FILE)
    rule_set_status(rule=Rule.objects.get(slug="profile-stalled"), status="paused")
    assert [str(c) for c in import_config(FILE, dry_run=True).changes][5] == (
        "rule profile-stalled: updated"
    )
    import_config(FILE)
    assert Rule.objects.get(slug="profile-stalled").status == "active"


def test_dry_run_reports_every_object_and_writes_nothing(db):
    result = import_config(FILE, dry_run=True)
    assert result.dry_run
    assert result.count("created") == 8
    assert snapshot() == ([], [], [], [], [], [], 0)

    import_config(FILE)
    before = snapshot()
    data = load()
    data["rules"][0]["priority"] = 11
    data["templates"].append({"slug": "new", "channel": "sms", "body": "Hi"})
    result = import_config(dump(data), dry_run=True)
    assert [str(c) for c in result.changes if c.status != "unchanged"] == [
        "template new: created",
        "rule profile-stalled: updated",
    ]
    assert (
        result.summary() == "Dry run, nothing written: would be 1 created, 1 updated, 7 unchanged."
    )
    assert snapshot() == before


def test_round_trip_is_exact(db):
    import_config(FILE)
    exported = export_config()
    assert "templates:\n  - slug: nudge\n" in exported
    assert "    body: |\n      Hi {{ first_name | default: 'there' }}, you started" in exported
    assert (
        "    trigger: {kind: repeated_event, event: Task Failed, times: 3, within: 10m, "
        "where: {task: import_csv}}\n" in exported
    )
    assert "      - {channel: email, template: profile-tip, delay: 1h, at: '10:00'}\n" in exported

    for model in (Rule, MessageTemplate, Segment, OnboardingFlow):
        if model is Rule:
            Rule.objects.update(current_version=None)
            RuleVersion.objects.all().delete()
        model.objects.all().delete()
    assert export_config() == (
        "flows: []\nsegments: []\ntemplates: []\nrules: []\nexperiments: []\n"
    )

    assert import_config(exported).count("created") == 8
    assert export_config() == exported
    assert {c.status for c in import_config(exported).changes} == {"unchanged"}


def test_rules_and_templates_may_be_imported_alone_against_the_database(db):
    import_config(FILE)
    data = load()
    only = {"rules": [data["rules"][0] | {"priority": 3}]}
    assert [str(c) for c in import_config(dump(only)).changes] == ["rule profile-stalled: updated"]
    # Objects not in the file are left alone.
    assert Rule.objects.count() == 3
    assert MessageTemplate.objects.count() == 3


def test_references_within_one_file_are_checked_in_order(db):
    data = load()
    # A rule may name a template and a flow defined in the same file (none in the database).
    assert import_config(dump(data), dry_run=True).count("created") == 8
    # A template defined only in the file, with another channel, is a mismatch.
    data["templates"][2]["channel"] = "sms"
    assert problems_of(dump(data)) == [
        "rules[1].follow_ups[0].template: template 'nudge' is for sms, not in_app",
        "rules[1].fallback.template: template 'nudge' is for sms, not in_app",
    ]


def test_a_file_template_overrides_the_database_channel(db):
    import_config(FILE)
    data = load()
    data["templates"][2]["channel"] = "sms"
    data["rules"][1]["follow_ups"][0]["channel"] = "sms"
    data["rules"][1]["fallback"]["channel"] = "sms"
    result = import_config(dump({"templates": data["templates"], "rules": data["rules"]}))
    assert MessageTemplate.objects.get(slug="nudge").channel == "sms"
    assert result.count("updated") == 2


# -- every error, with its path -----------------------------------------------------------------


def _set(data: dict, path: str, value: Any) -> None:
    """``_set(data, "rules.0.trigger.minutes", 0)``; ``...`` as value deletes the key."""
    *parents, last = path.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    key = int(last) if last.isdigit() else last
    if value is ...:
        del target[key]
    else:
        target[key] = value


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        # templates
        ("templates.0.channel", "fax", "templates[0].channel: must be one of email, in_app, sms, webhook"),
        ("templates.0.channel", ..., "templates[0].channel: required"),
        ("templates.2.body", ..., "templates[2].body: required"),
        ("templates.2.body", "   ", "templates[2].body: The message body is empty."),
        ("templates.2.body", 42, "templates[2].body: must be a string"),
        ("templates.1.subject", ..., "templates[1].subject: required for an email template"),
        ("templates.1.subject", "", "templates[1].subject: An email needs a subject."),
        ("templates.1.subject", "x" * 301, "templates[1].subject: Ensure this value has at most 300 characters (it has 301)."),
        ("templates.2.slug", "Not A Slug", "templates[2].slug: "),
        ("templates.2.slug", "profile-tip", "templates[2].slug: duplicate slug 'profile-tip' (also templates[0])"),
        ("templates.2.colour", "red", "templates[2].colour: unknown key"),
        ("templates.2.body", "Hi {{ first_name | default: 'there' ", "templates[2].body: expected '}}'"),
        ("templates.2.body", "{% if x %}open", "templates[2].body: expected tag endif"),
        ("templates.2.body", "{{ name | shout }}", "templates[2].body: unknown filter 'shout'"),
        ("templates.2.body", "{% include 'x' %}", "templates[2].body: the include tag is not allowed"),
        ("templates.1.subject", "Hi {{ ", "templates[1].subject: expected '}}'"),
        ("templates", {"slug": "x"}, "templates: must be a list"),
        # rules: the rule's own fields
        ("rules.0.name", ..., "rules[0].name: required"),
        ("rules.0.name", "", "rules[0].name: must be a non-empty string"),
        ("rules.0.name", "n" * 201, "rules[0].name: Ensure this value has at most 200 characters (it has 201)."),
        ("rules.0.status", ..., "rules[0].status: required: one of draft, active, paused, archived"),
        ("rules.0.status", "live", "rules[0].status: must be one of draft, active, paused, archived"),
        ("rules.0.priority", "high", "rules[0].priority: must be an integer"),
        ("rules.0.priority", True, "rules[0].priority: must be an integer"),
        ("rules.0.priority", 2**40, "rules[0].priority: must be between -2147483648 and 2147483647"),
        ("rules.0.slug", ..., "rules[0].slug: required"),
        ("rules.1.slug", "profile-stalled", "rules[1].slug: duplicate slug 'profile-stalled' (also rules[0])"),
        ("rules.0.colour", "red", "rules[0].colour: unknown key"),
        ("rules.0", "profile-stalled", "rules[0]: must be a mapping"),
        # rules: the trigger
        ("rules.0.trigger", ..., "rules[0].trigger: required: a mapping with a kind"),
        ("rules.0.trigger.kind", "idle", "rules[0].trigger.kind: must be one of inactive_in_flow, step_abandoned, repeated_event, inactive_sessions, milestone, event"),
        ("rules.0.trigger.kind", ..., "rules[0].trigger.kind: must be one of"),
        ("rules.0.trigger.minutes", 0, "rules[0].trigger.minutes: must be a positive integer"),
        ("rules.0.trigger.minutes", "5m", "rules[0].trigger.minutes: must be a positive integer"),
        ("rules.0.trigger.minutes", ..., "rules[0].trigger.minutes: required"),
        ("rules.0.trigger.minutes", 7 * 24 * 60, "rules[0].trigger.minutes: must be shorter than the flow's conversion window (7d), or the rule can never fire"),
        ("rules.0.trigger.flow", "onboarding", "rules[0].trigger.flow: no flow with slug 'onboarding'"),
        ("rules.0.trigger.flow", ..., "rules[0].trigger.flow: required"),
        ("rules.0.trigger.step", 5, "rules[0].trigger.step: the flow has 4 steps; there is no step 5"),
        ("rules.0.trigger.step", 1, "rules[0].trigger.step: must be 2 or more"),
        ("rules.0.trigger.times", 3, "rules[0].trigger.times: is not a field of a inactive_in_flow trigger"),
        ("rules.2.trigger.missing", 2, "rules[2].trigger.missing: must be a later step than did"),
        ("rules.2.trigger.missing", 9, "rules[2].trigger.missing: the flow has 4 steps; there is no step 9"),
        ("rules.2.trigger.within", "30 minutes", "rules[2].trigger.within: must be a duration such as 90s, 5m, 24h or 7d, not '30 minutes'"),
        ("rules.2.trigger.within", "0m", "rules[2].trigger.within: must be longer than 0s"),
        ("rules.1.trigger.times", 1, "rules[1].trigger.times: must be at least 2"),
        ("rules.1.trigger.event", ..., "rules[1].trigger.event: required"),
        ("rules.1.trigger.where", "task=import_csv", "rules[1].trigger.where: must be a mapping of property to value"),
        # rules: follow-ups, segment and the rest
        ("rules.0.follow_ups", [], "rules[0].follow_ups: required: a list of at least one follow-up"),
        ("rules.0.follow_ups.1.template", "profile-nag", "rules[0].follow_ups[1].template: no template with slug 'profile-nag'"),
        ("rules.0.follow_ups.1.channel", "in_app", "rules[0].follow_ups[1].template: template 'profile-reminder' is for email, not in_app"),
        ("rules.0.follow_ups.1.channel", "pigeon", "rules[0].follow_ups[1].channel: must be one of email, in_app, sms, webhook"),
        ("rules.0.follow_ups.1.delay", "3 days", "rules[0].follow_ups[1].delay: must be a duration such as 90s, 5m, 24h or 7d, not '3 days'"),
        ("rules.0.follow_ups.1.delay", "-1d", "rules[0].follow_ups[1].delay: must be a duration"),
        ("rules.2.follow_ups.0.at", "25:00", "rules[2].follow_ups[0].at: must be a local time HH:MM, e.g. 21:00"),
        ("rules.0.segment", "desktop", "rules[0].segment: no segment with slug 'desktop'"),
        ("rules.0.exit_when", "bored", "rules[0].exit_when: must be one of progressed, completed, never"),
        ("rules.1.exit_when", "progressed", "rules[1].exit_when: 'progressed' needs a trigger with a flow; use 'never'"),
        ("rules.0.reentry", "twice", "rules[0].reentry: must be 'once' or {once_per: <duration>}"),
        ("rules.0.reentry", {"once_per": "0d"}, "rules[0].reentry.once_per: must be longer than 0s"),
        ("rules.0.quiet_hours", {"start": "9pm", "end": "08:00"}, "rules[0].quiet_hours.start: must be a local time HH:MM"),
        ("rules.1.cap", {"max": 0, "per": "1d"}, "rules[1].cap.max: must be a positive integer"),
        ("rules.1.fallback", {"channel": "email", "template": "nudge"}, "rules[1].fallback.template: template 'nudge' is for in_app, not email"),
        ("rules.1.fallback", {"channel": "in_app", "template": "gone"}, "rules[1].fallback.template: no template with slug 'gone'"),
    ],
)  # fmt: skip
def test_every_error_has_its_path(db, path, value, expected):
    data = load()
    _set(data, path, value)
    problems = problems_of(dump(data))
    assert any(p.startswith(expected) for p in problems), problems
    assert not Rule.objects.exists() and not MessageTemplate.objects.exists()


def test_the_design_error_example(db):
    data = load()
    data["rules"].append(copy.deepcopy(data["rules"][0]) | {"slug": "third"})
    data["rules"][2]["slug"] = "second"
    data["rules"][3]["trigger"]["minutes"] = -5
    assert problems_of(dump(data)) == ["rules[3].trigger.minutes: must be a positive integer"]


def test_a_liquid_syntax_error_names_the_body(db):
    data = load()
    data["templates"][0]["body"] = "Hi {{ first_name | default: 'there'"
    assert problems_of(dump(data)) == ["templates[0].body: expected '}}', found end of file"]


def test_a_broken_template_is_reported_once_not_at_every_rule_using_it(db):
    data = load()
    data["templates"][2]["channel"] = "fax"
    data["templates"][0]["body"] = "{% if %}"
    problems = problems_of(dump(data))
    assert [p.split(":")[0] for p in problems] == ["templates[0].body", "templates[2].channel"]


def test_a_broken_flow_is_reported_once_not_at_every_rule_using_it(db):
    data = load()
    data["flows"][0]["steps"][1] = {"name": "Email verified"}
    assert problems_of(dump(data)) == ["flows[0].steps[1].event: required"]


def test_every_problem_in_the_file_is_reported_at_once(db):
    data = load()
    data["templates"][1]["channel"] = "fax"
    data["rules"][0]["trigger"]["minutes"] = 0
    data["rules"][1]["follow_ups"][0]["template"] = "missing"
    data["rules"][2]["trigger"]["kind"] = "abandon"
    assert problems_of(dump(data)) == [
        "templates[1].channel: must be one of email, in_app, sms, webhook",
        "rules[0].trigger.minutes: must be a positive integer",
        "rules[1].follow_ups[0].template: no template with slug 'missing'",
        "rules[2].trigger.kind: must be one of inactive_in_flow, step_abandoned, repeated_event, "
        "inactive_sessions, milestone, event",
    ]


def test_an_unknown_section_names_every_known_one(db):
    assert problems_of("widgets: []") == [
        "widgets: unknown section (expected experiments, flows, rules, segments, templates)"
    ]


# -- all or nothing -----------------------------------------------------------------------------


def test_one_bad_rule_writes_nothing_not_even_the_templates(db):
    data = load()
    data["rules"][2]["trigger"]["missing"] = 1
    assert problems_of(dump(data)) == ["rules[2].trigger.missing: must be a later step than did"]
    assert snapshot() == ([], [], [], [], [], [], 0)

    import_config(FILE)
    before = snapshot()
    data = load()
    data["templates"][0]["subject"] = "Changed"
    data["rules"][0]["name"] = "Changed"
    data["rules"][1]["follow_ups"][0]["delay"] = "soon"
    assert problems_of(dump(data)) == [
        "rules[1].follow_ups[0].delay: must be a duration such as 90s, 5m, 24h or 7d, not 'soon'"
    ]
    assert snapshot() == before


def test_a_failure_while_applying_rolls_everything_back(db, monkeypatch):
    from triggers.configfile import rules

    def explode(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(rules, "rule_save", explode)
    with pytest.raises(RuntimeError):
        import_config(FILE)
    assert snapshot() == ([], [], [], [], [], [], 0)


# -- the command ----------------------------------------------------------------------------------


def test_command_dry_run_import_and_problems(db, tmp_path):
    config = tmp_path / "onramp.yaml"
    config.write_text(FILE)
    out = io.StringIO()
    call_command("onramp", "import", str(config), "--dry-run", stdout=out)
    assert "template profile-tip would be created" in out.getvalue()
    assert "rule profile-stalled would be created" in out.getvalue()
    assert not Rule.objects.exists()

    out = io.StringIO()
    call_command("onramp", "import", str(config), stdout=out)
    assert "8 created, 0 updated, 0 unchanged." in out.getvalue()
    out = io.StringIO()
    call_command("onramp", "import", str(config), stdout=out)
    assert "0 created, 0 updated, 8 unchanged." in out.getvalue()

    config.write_text(FILE.replace("minutes: 5", "minutes: 0"))
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 problem found; nothing was changed"):
        call_command("onramp", "import", str(config), stderr=err)
    assert f"{config}: rules[0].trigger.minutes: must be a positive integer" in err.getvalue()


def test_shadow_mode_round_trips_and_is_validated(db, flow_and_templates_for_shadow):
    from onboarding.configfile.document import export_config, import_config
    from triggers.models import Rule

    document = (
        flow_and_templates_for_shadow
        + """rules:
  - slug: quiet-try
    name: Quiet try
    status: active
    shadow: true
    trigger: {kind: event, event: Trial Ending}
    follow_ups: [{channel: in_app, template: tip, delay: 0s}]
"""
    )
    import_config(document)
    assert Rule.objects.get(slug="quiet-try").shadow is True
    exported = export_config()
    assert "shadow: true" in exported
    assert {c.status for c in import_config(exported).changes} == {"unchanged"}
    with pytest.raises(Exception) as error:
        import_config(document.replace("shadow: true", "shadow: maybe"))
    assert "rules[0].shadow: must be true or false" in str(error.value)


@pytest.fixture
def flow_and_templates_for_shadow() -> str:
    return """templates:
  - slug: tip
    channel: in_app
    body: "A tip"
"""
