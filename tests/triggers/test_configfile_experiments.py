"""The experiments section of the configuration file (DESIGN §3.4): the design's shape, errors with
their paths, idempotence (no new phase on a no-op import), exact round trip, dry run."""

from __future__ import annotations

import pytest
import yaml

from onboarding.configfile.document import export_config, import_config
from onboarding.configfile.errors import ProblemsError
from triggers.models import AuditLog, Experiment
from triggers.services.experiments import experiment_save, experiment_set_status

RULES = """\
flows:
  - slug: activation
    name: Activation
    window: 7d
    steps:
      - {name: Signed up, event: Signed Up}
      - {name: Email verified, event: Email Verified}
      - {name: Profile completed, event: Profile Completed}
templates:
  - slug: profile-reminder
    channel: email
    subject: Still setting up?
    body: "Hi {{ first_name | default: 'there' }}, your profile is one step away."
rules:
  - slug: profile-stalled
    name: Nudge stalled profile set-up
    status: active
    trigger: {kind: inactive_in_flow, flow: activation, step: 3, minutes: 5}
    follow_ups:
      - {channel: email, template: profile-reminder, delay: 0m}
    exit_when: progressed
    reentry: once
    priority: 10
"""
EXPERIMENTS = """\
experiments:
  - slug: reminder-timing
    rule: profile-stalled
    status: running                 # draft running stopped
    variants:
      - {name: three-days, weight: 45, follow_ups: [{channel: email, template: profile-reminder, delay: 3d}]}
      - {name: one-week, weight: 45, follow_ups: [{channel: email, template: profile-reminder, delay: 7d}]}
      - {name: holdout, weight: 10, holdout: true}
    metric: {flow: activation, completed_within: 14d}
"""
FILE = RULES + EXPERIMENTS


def problems_of(text: str) -> list[str]:
    with pytest.raises(ProblemsError) as error:
        import_config(text)
    return [str(problem) for problem in error.value.problems]


def with_experiment(**changes) -> str:
    data = yaml.safe_load(FILE)
    data["experiments"][0].update(changes)
    return yaml.safe_dump(data, sort_keys=False)


def test_the_design_shape_imports_through_the_services(db):
    result = import_config(FILE)
    assert "experiment reminder-timing: created" in [str(c) for c in result.changes]
    experiment = Experiment.objects.get()
    assert (experiment.rule.slug, experiment.status, experiment.phase) == (
        "profile-stalled",
        "running",
        1,
    )
    assert experiment.metric == {"flow": "activation", "completed_within": "14d"}
    assert [(v.name, v.weight, v.holdout) for v in experiment.variants.all()] == [
        ("three-days", 45, False),
        ("one-week", 45, False),
        ("holdout", 10, True),
    ]
    assert experiment.variants.get(name="one-week").follow_ups == [
        {"channel": "email", "template": "profile-reminder", "delay": "7d"}
    ]
    actions = list(
        AuditLog.objects.filter(object_type="triggers.experiment").values_list(
            "action", "actor_label"
        )
    )
    assert sorted(actions) == [("create", "import"), ("status:running", "import")]


def test_importing_twice_is_a_no_op_and_starts_no_new_phase(db):
    import_config(FILE)
    experiment = Experiment.objects.get()
    before = (experiment.seed, experiment.phase, experiment.updated_at, AuditLog.objects.count())
    result = import_config(FILE)
    assert not result.changed
    experiment.refresh_from_db()
    assert (experiment.seed, experiment.phase, experiment.updated_at, AuditLog.objects.count()) == (
        before
    )


def test_an_equivalent_spelling_is_unchanged(db):
    import_config(FILE)
    same = FILE.replace("completed_within: 14d", "completed_within: 336h").replace(
        "delay: 3d", "delay: 72h"
    )
    assert not import_config(same).changed


def test_changing_the_arms_of_a_running_experiment_starts_a_new_phase(db):
    import_config(FILE)
    import_config(FILE.replace("weight: 10, holdout", "weight: 20, holdout"))
    experiment = Experiment.objects.get()
    assert experiment.phase == 2
    assert experiment.variants.get(name="holdout").weight == 20


def test_status_changes_apply_through_the_service(db):
    import_config(FILE)
    import_config(with_experiment(status="stopped"))
    experiment = Experiment.objects.get()
    assert experiment.status == "stopped" and experiment.stopped_at is not None
    import_config(with_experiment(status="running"))  # started again: a new phase
    experiment.refresh_from_db()
    assert (experiment.status, experiment.phase, experiment.stopped_at) == ("running", 2, None)


def test_dry_run_reports_and_writes_nothing(db):
    import_config(RULES)
    result = import_config(FILE, dry_run=True)
    assert "experiment reminder-timing: created" in [str(c) for c in result.changes]
    assert not Experiment.objects.exists()
    import_config(FILE)
    result = import_config(with_experiment(planned_users_per_arm=5000), dry_run=True)
    assert "experiment reminder-timing: updated" in [str(c) for c in result.changes]
    assert Experiment.objects.get().planned_users_per_arm is None


def test_round_trip_is_exact(db):
    import_config(FILE)
    exported = export_config()
    assert (
        "experiments:\n  - slug: reminder-timing\n    rule: profile-stalled\n    status: running\n"
        in exported
    )
    assert (
        "      - {name: one-week, weight: 45, follow_ups: [{channel: email, "
        "template: profile-reminder, delay: 7d}]}\n" in exported
    )
    assert "      - {name: holdout, weight: 10, holdout: true}\n" in exported
    assert "    metric: {flow: activation, completed_within: 14d}\n" in exported
    assert yaml.safe_load(exported)["experiments"] == yaml.safe_load(EXPERIMENTS)["experiments"]

    Experiment.objects.all().delete()
    assert import_config(exported).count("created") == 1
    assert export_config() == exported
    assert not import_config(exported).changed


def test_a_dashboard_spelling_exports_canonically_and_reimports_unchanged(db):
    import_config(RULES)
    experiment_save(
        slug="typed",
        rule_slug="profile-stalled",
        variants=[
            {
                "name": "a",
                "weight": 1,
                "follow_ups": [
                    {"channel": "email", "template": "profile-reminder", "delay": "72h"}
                ],
            },
            {"name": "b", "weight": 1, "holdout": True},
        ],
        metric={"flow": "activation", "completed_within": "48h", "reengaged_within": "60m"},
        planned_users_per_arm=900,
    )
    exported = export_config()
    assert (
        "    metric: {flow: activation, completed_within: 2d, reengaged_within: 1h}\n" in exported
    )
    assert "    planned_users_per_arm: 900\n" in exported
    assert "delay: 3d" in exported
    assert not import_config(exported).changed


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"rule": "nope"}, "experiments[0].rule: no rule with slug 'nope'"),
        ({"status": "paused"}, "experiments[0].status: must be one of draft, running, stopped"),
        ({"slug": "Bad Slug"}, "experiments[0].slug: "),
        ({"planned_users_per_arm": 0}, "experiments[0].planned_users_per_arm: must be a positive"),
        ({"metric": {"flow": "zzz", "completed_within": "14d"}}, "experiments[0].metric.flow: "),
        (
            {"metric": {"flow": "activation", "completed_within": "two weeks"}},
            "experiments[0].metric.completed_within: must be a duration",
        ),
        (
            {"metric": {"flow": "activation", "completed_within": "1d", "goal": 1}},
            "experiments[0].metric.goal: is not a field of the metric",
        ),
        ({"variants": [{"name": "a", "weight": 1}]}, "experiments[0].variants: at least two"),
        (
            {"variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 0}]},
            "experiments[0].variants[1].weight: must be a positive integer",
        ),
        (
            {"variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 2}]},
            "experiments[0].variants[1].name: 'a' is used twice",
        ),
        (
            {"variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "color": 1}]},
            "experiments[0].variants[1].color: is not a field of a variant",
        ),
        (
            {
                "variants": [
                    {"name": "a", "weight": 1},
                    {
                        "name": "b",
                        "weight": 1,
                        "follow_ups": [{"channel": "email", "template": "missing"}],
                    },
                ]
            },
            "experiments[0].variants[1].follow_ups[0].template: ",
        ),
        (
            {
                "variants": [
                    {"name": "a", "weight": 1},
                    {
                        "name": "b",
                        "weight": 1,
                        "holdout": True,
                        "follow_ups": [{"channel": "email", "template": "profile-reminder"}],
                    },
                ]
            },
            "experiments[0].variants[1].follow_ups: a holdout sends nothing",
        ),
        ({"colour": "red"}, "experiments[0].colour: unknown key"),
    ],
)
def test_every_error_has_its_path(db, changes, expected):
    problems = problems_of(with_experiment(**changes))
    assert any(problem.startswith(expected) for problem in problems), problems
    assert not Experiment.objects.exists()


def test_two_running_experiments_on_one_rule_are_refused(db):
    data = yaml.safe_load(FILE)
    second = {**data["experiments"][0], "slug": "another"}
    data["experiments"].append(second)
    problems = problems_of(yaml.safe_dump(data, sort_keys=False))
    assert problems == [
        "experiments[1].status: rule 'profile-stalled' already runs experiments[0] in this file"
    ]


def test_an_experiment_running_in_the_database_must_be_stopped_earlier_in_the_file(db):
    import_config(RULES)
    other, _ = experiment_save(
        slug="older",
        rule_slug="profile-stalled",
        variants=[{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "holdout": True}],
        metric={"flow": "activation", "completed_within": "1d"},
    )
    experiment_set_status(experiment=other, status="running")
    problems = problems_of(FILE)
    assert problems == [
        "experiments[0].status: rule 'profile-stalled' already runs experiment 'older' "
        "(stop it earlier in the file)"
    ]
    data = yaml.safe_load(FILE)
    data["experiments"].insert(
        0,
        {
            "slug": "older",
            "rule": "profile-stalled",
            "status": "stopped",
            "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "holdout": True}],
            "metric": {"flow": "activation", "completed_within": "1d"},
        },
    )
    import_config(yaml.safe_dump(data, sort_keys=False))
    assert dict(Experiment.objects.values_list("slug", "status")) == {
        "older": "stopped",
        "reminder-timing": "running",
    }


def test_a_bad_experiment_writes_nothing_not_even_the_rules(db):
    problems_of(with_experiment(rule="nope"))
    from triggers.models import Rule

    assert not Rule.objects.exists()
