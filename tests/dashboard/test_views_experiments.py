"""The experiment pages: access, set-up (field errors, live plan panel, arms partial), start, stop
and ship through the audited services, the results (equal to ``ab_calc``, SRM withholds the
verdict, the peeking guard), the list and the nav."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from onboarding.models import FlowProgress, Person
from tests.triggers.conftest import make_rule
from triggers.models import Assignment, AuditLog, Enrollment, Experiment
from triggers.services.experiments import experiment_save, experiment_set_status

pytestmark = pytest.mark.django_db

DEFINITION = {
    "trigger": {"kind": "inactive_in_flow", "flow": "activation", "step": 3, "minutes": 5},
    "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0m"}],
    "exit_when": "progressed",
    "reentry": "once",
}
ARMS = [
    {
        "name": "reminder",
        "weight": 50,
        "follow_ups": [{"channel": "email", "template": "reminder", "delay": "0s"}],
    },
    {"name": "holdout", "weight": 50, "holdout": True},
]


@pytest.fixture
def growth(client: Client, alice) -> Client:
    """Alice defines experiments (growth) and runs them (experiment owner): both roles."""
    alice.groups.add(Group.objects.get(name="experiment owner"))
    client.force_login(alice)
    return client


@pytest.fixture
def rule(flow, templates):
    return make_rule("profile-stalled", DEFINITION)


@pytest.fixture
def experiment(rule):
    experiment, _ = experiment_save(
        slug="reminder-test",
        rule_slug="profile-stalled",
        variants=ARMS,
        metric={"flow": "activation", "completed_within": "1d"},
    )
    return experiment


def form_data(**overrides) -> dict[str, str]:
    data = {
        "rule": "profile-stalled",
        "slug": "reminder-test",
        "flow": "activation",
        "completed_within": "1d",
        "reengaged_within": "",
        "planned_users_per_arm": "",
        "minimum_effect": "5",
        "baseline": "",
        "arms-TOTAL": "2",
        "arms-0-name": "reminder",
        "arms-0-weight": "90",
        "arms-0-follow_ups-TOTAL": "1",
        "arms-0-follow_ups-0-channel": "email",
        "arms-0-follow_ups-0-template": "reminder",
        "arms-0-follow_ups-0-delay": "3d",
        "arms-0-follow_ups-0-at": "",
        "arms-1-name": "holdout",
        "arms-1-weight": "10",
        "arms-1-holdout": "1",
        "arms-1-follow_ups-TOTAL": "0",
        "action": "save",
    }
    data.update(overrides)
    return data


def _people(count: int, prefix: str = "p") -> list[Person]:
    now = timezone.now()
    return Person.objects.bulk_create(
        Person(external_id=f"{prefix}{n}", first_seen=now, last_seen=now) for n in range(count)
    )


def _assign(experiment: Experiment, counts: dict[str, tuple[int, int]], *, days_ago: int = 3):
    """Assign people directly: per arm, (users, converters), with closed windows."""
    at = timezone.now() - timedelta(days=days_ago)
    variants = {v.name: v for v in experiment.variants.all()}
    flow = experiment.rule.current_version.definition["trigger"]["flow"]
    from onboarding.models import OnboardingFlow

    flow_obj = OnboardingFlow.objects.get(slug=flow)
    for name, (users, converters) in counts.items():
        people = _people(users, prefix=f"{name}-")
        Assignment.objects.bulk_create(
            Assignment(
                experiment=experiment,
                person=p,
                variant=variants[name],
                phase=experiment.phase,
                assigned_at=at,
            )
            for p in people
        )
        FlowProgress.objects.bulk_create(
            FlowProgress(
                flow=flow_obj,
                person=p,
                entered_at=at,
                entry_event_id=0,
                latest_entry_at=at,
                furthest_step=3,
                reached_at=at + timedelta(hours=1),
                completed_at=at + timedelta(hours=1),
                window_ends_at=at + timedelta(days=7),
            )
            for p in people[:converters]
        )


# --- access ---------------------------------------------------------------------------------------


def urls(experiment) -> list[str]:
    return [
        "/rules/experiments/",
        "/rules/profile-stalled/experiments/new/",
        f"/rules/experiments/{experiment.slug}/",
        f"/rules/experiments/{experiment.slug}/edit/",
    ]


def test_anonymous_is_sent_to_login_and_charlie_is_forbidden(client, charlie, experiment):
    for url in urls(experiment):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
    client.force_login(charlie)
    for url in urls(experiment):
        assert client.get(url).status_code == 403, url
    for url, data in [
        (f"/rules/experiments/{experiment.slug}/status/", {"status": "running"}),
        (f"/rules/experiments/{experiment.slug}/ship/", {"variant": "reminder"}),
        ("/rules/experiments/plan/", form_data()),
    ]:
        assert client.post(url, data).status_code == 403, url
    experiment.refresh_from_db()
    assert experiment.status == "draft"


def test_alice_sees_every_page_and_the_nav_links_to_the_list(growth, experiment):
    for url in urls(experiment):
        assert growth.get(url).status_code == 200, url
    page = growth.get("/rules/experiments/").content.decode()
    assert re.search(r'<a class="nav-item is-active" href="/rules/experiments/"', page)
    assert 'data-experiment="reminder-test"' in page
    editor = growth.get("/rules/profile-stalled/").content.decode()
    assert "/rules/profile-stalled/experiments/new/" in editor
    assert "/rules/experiments/reminder-test/" in editor


def test_the_list_redirects_to_the_set_up_of_the_chosen_rule(growth, rule):
    response = growth.get("/rules/experiments/", {"rule": "profile-stalled"})
    assert response["Location"] == "/rules/profile-stalled/experiments/new/"


# --- set-up ------------------------------------------------------------------------------------------


def test_save_draft_creates_the_experiment_audited_as_alice(growth, rule, alice):
    response = growth.post("/rules/profile-stalled/experiments/new/", form_data())
    assert response.status_code == 302
    assert response["Location"] == "/rules/experiments/reminder-test/edit/"
    experiment = Experiment.objects.get(slug="reminder-test")
    assert experiment.status == "draft"
    assert [(v.name, v.weight, v.holdout) for v in experiment.variants.all()] == [
        ("reminder", 90, False),
        ("holdout", 10, True),
    ]
    assert experiment.variants.get(name="reminder").follow_ups == [
        {"channel": "email", "template": "reminder", "delay": "3d"}
    ]
    assert experiment.metric == {"flow": "activation", "completed_within": "1d"}
    log = AuditLog.objects.get(object_type="triggers.experiment", action="create")
    assert log.actor == alice
    page = growth.get(response["Location"]).content.decode()
    # The arm's follow-up comes back as a row: channel, template, after (no YAML anywhere).
    assert re.search(
        r'name="arms-0-follow_ups-0-channel".*?<option value="email" selected>', page, re.S
    )
    assert re.search(
        r'name="arms-0-follow_ups-0-template".*?<option value="reminder" selected>', page, re.S
    )
    assert re.search(r'name="arms-0-follow_ups-0-delay"[^>]*value="3d"', page)
    assert "<textarea" not in page


def test_errors_are_shown_next_to_their_fields(growth, rule):
    data = form_data(
        **{
            "arms-1-weight": "0",
            "arms-0-follow_ups-0-template": "nope",
            "completed_within": "soon",
            "arms-1-name": "reminder",
        }
    )
    response = growth.post("/rules/profile-stalled/experiments/new/", data)
    assert response.status_code == 200
    assert not Experiment.objects.exists()
    page = response.content.decode()

    def error_in(field_id: str) -> str:
        match = re.search(rf'id="field-{field_id}".*?(?=<div class="field|</li>)', page, re.S)
        assert match, field_id
        return match.group(0).lower()

    assert "must be a positive integer" in error_in("arms-1-weight")
    assert "is used twice" in error_in("arms-1-name")
    assert "no template with slug &#x27;nope&#x27;" in error_in("arms-0-follow_ups-0-template")
    assert "duration" in error_in("completed_within")


def test_each_follow_up_row_s_problems_sit_next_to_its_fields(growth, rule):
    data = form_data(
        **{
            "arms-0-follow_ups-TOTAL": "2",
            "arms-0-follow_ups-0-delay": "soon",
            "arms-0-follow_ups-1-channel": "in_app",
            "arms-0-follow_ups-1-template": "reminder",  # an email template
            "arms-0-follow_ups-1-delay": "1h",
        }
    )
    page = growth.post("/rules/profile-stalled/experiments/new/", data).content.decode()
    assert not Experiment.objects.exists()

    def field(name: str) -> str:
        match = re.search(rf'<div class="field[^"]*" id="field-{name}">.*?</div>', page, re.S)
        assert match, name
        return match.group(0)

    assert "has-error" in field("arms-0-follow_ups-0-delay")
    assert "field-error" in field("arms-0-follow_ups-1-template")
    assert "has-error" not in field("arms-0-follow_ups-0-template")
    # The in-app row offers in-app templates only (the email one stays, marked as such).
    select = re.search(r'name="arms-0-follow_ups-1-template".*?</select>', page, re.S).group(0)
    assert '<option value="nudge">nudge</option>' in select
    assert "reminder (email)" in select


def test_arm_follow_ups_are_rows_added_moved_and_removed_without_yaml(growth, rule):
    url = "/rules/profile-stalled/experiments/new/"
    page = growth.get(url).content.decode()
    assert "<textarea" not in page
    assert 'value="arms-0-follow_ups:add"' in page  # the treatment arm's "+ Add follow-up"
    assert 'value="arms-1-follow_ups:add"' not in page  # the holdout sends nothing
    assert "this arm sends the rule's own" in page

    added = growth.post(
        url,
        form_data(action="arms-0-follow_ups:add"),
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="arms",
    ).content.decode()
    assert 'name="arms-0-follow_ups-TOTAL" value="2"' in added
    assert 'name="arms-0-follow_ups-1-channel"' in added
    # The new row copies the last row's channel, so it offers that channel's templates.
    assert re.search(
        r'name="arms-0-follow_ups-1-channel".*?<option value="email" selected>', added, re.S
    )
    assert 'aria-label="Remove arm 1&#x27;s follow-up 2"' in added

    moved = form_data(
        action="arms-0-follow_ups:down:0",
        **{
            "arms-0-follow_ups-TOTAL": "2",
            "arms-0-follow_ups-1-channel": "in_app",
            "arms-0-follow_ups-1-template": "nudge",
            "arms-0-follow_ups-1-delay": "0m",
        },
    )
    page = growth.post(url, moved).content.decode()
    assert re.search(
        r'name="arms-0-follow_ups-0-template".*?<option value="nudge" selected>', page, re.S
    )
    assert re.search(
        r'name="arms-0-follow_ups-1-template".*?<option value="reminder" selected>', page, re.S
    )
    removed = growth.post(url, form_data(action="arms-0-follow_ups:remove:0")).content.decode()
    assert 'name="arms-0-follow_ups-TOTAL" value="0"' in removed

    growth.post(url, form_data(**{"arms-0-follow_ups-TOTAL": "0"}))
    assert Experiment.objects.get().variants.get(name="reminder").follow_ups == []  # the rule's own


def test_the_weights_rule_is_stated_and_each_share_shown(growth, rule):
    page = growth.post(
        "/rules/profile-stalled/experiments/new/",
        form_data(action="refresh", **{"arms-0-weight": "3", "arms-1-weight": "1"}),
    ).content.decode()
    assert (
        "an arm's share of new people is its weight divided by the sum of all the arms' weights"
        in page
    )
    assert 'aria-describedby="weights-rule"' in page
    shares = re.findall(r'title="This arm\'s share of new people">([^<]*)<', page)
    assert shares == ["75%", "25%"]


def test_a_taken_slug_is_refused(growth, experiment):
    page = growth.post("/rules/profile-stalled/experiments/new/", form_data()).content.decode()
    assert "already exists" in page


def test_start_saves_and_runs_then_stop_and_ship_are_audited(growth, rule, alice):
    response = growth.post("/rules/profile-stalled/experiments/new/", form_data(action="start"))
    assert response["Location"] == "/rules/experiments/reminder-test/"
    experiment = Experiment.objects.get(slug="reminder-test")
    assert experiment.status == "running"
    growth.post("/rules/experiments/reminder-test/status/", {"status": "stopped"})
    experiment.refresh_from_db()
    assert experiment.status == "stopped"
    ship = {"variant": "reminder", "confirm": "1", "typed_name": "reminder"}  # no verdict
    growth.post("/rules/experiments/reminder-test/ship/", ship)
    experiment.refresh_from_db()
    assert experiment.shipped_variant.name == "reminder"
    rule.refresh_from_db()
    assert rule.current_version.definition["follow_ups"] == [
        {"channel": "email", "template": "reminder", "delay": "3d"}
    ]
    actions = list(
        AuditLog.objects.filter(object_type="triggers.experiment", actor=alice)
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["create", "status:running", "status:stopped", "ship"]


SHIP = "/rules/experiments/reminder-test/ship/"


def test_ship_asks_first_and_shows_that_there_is_no_verdict(growth, experiment):
    experiment_set_status(experiment=experiment, status="running")
    _assign(experiment, {"reminder": (60, 20), "holdout": (60, 15)})  # no plan: no verdict
    page = growth.post(SHIP, {"variant": "reminder"})
    html = page.content.decode()
    assert page.status_code == 200 and "Ship reminder?" in html
    assert "No verdict: no planned sample size." in html and "chance to beat" in html
    assert 'name="typed_name"' in html
    experiment.refresh_from_db()
    assert experiment.shipped_variant is None and experiment.status == "running"


def test_without_a_verdict_shipping_needs_the_arms_name_typed(growth, experiment):
    experiment_set_status(experiment=experiment, status="running")
    refused = growth.post(SHIP, {"variant": "reminder", "confirm": "1", "typed_name": "remind"})
    assert refused.status_code == 400
    block = re.search(r'id="field-typed_name".*?</div>', refused.content.decode(), re.S)
    assert block and "Type reminder exactly to ship without a verdict." in block.group(0)
    experiment.refresh_from_db()
    assert experiment.shipped_variant is None and experiment.status == "running"

    shipped = growth.post(SHIP, {"variant": "reminder", "confirm": "1", "typed_name": "reminder"})
    assert shipped.status_code == 302
    experiment.refresh_from_db()
    assert experiment.shipped_variant.name == "reminder" and experiment.status == "stopped"


def test_with_a_verdict_one_confirmation_ships(growth, experiment):
    experiment.planned_users_per_arm = 200
    experiment.save()
    experiment_set_status(experiment=experiment, status="running")
    _assign(experiment, {"reminder": (200, 80), "holdout": (210, 40)})
    html = growth.post(SHIP, {"variant": "reminder"}).content.decode()
    assert "Verdict: reminder beats holdout" in html and 'name="typed_name"' not in html
    assert growth.post(SHIP, {"variant": "reminder", "confirm": "1"}).status_code == 302
    experiment.refresh_from_db()
    assert experiment.shipped_variant.name == "reminder"


def test_stop_sending_when_the_holdout_wins_pauses_the_rule(growth, experiment, rule):
    experiment_set_status(experiment=experiment, status="running")
    results = growth.get("/rules/experiments/reminder-test/").content.decode()
    assert '<option value="holdout">Stop sending (holdout wins)</option>' in results
    html = growth.post(SHIP, {"variant": "holdout"}).content.decode()
    assert "Stop sending?" in html and "is paused: it sends nothing" in html
    response = growth.post(
        SHIP, {"variant": "holdout", "confirm": "1", "typed_name": "holdout"}, follow=True
    )
    assert "the holdout won" in response.content.decode()
    experiment.refresh_from_db()
    rule.refresh_from_db()
    assert experiment.shipped_variant.name == "holdout" and experiment.status == "stopped"
    assert rule.status == "paused"


def test_a_stopped_experiment_starts_again_as_a_new_phase(growth, experiment):
    experiment_set_status(experiment=experiment, status="running")
    _assign(experiment, {"reminder": (40, 10), "holdout": (40, 8)})
    experiment_set_status(experiment=experiment, status="stopped")
    page = growth.get("/rules/experiments/reminder-test/").content.decode()
    assert "Start again (new phase)" in page
    response = growth.post(
        "/rules/experiments/reminder-test/status/", {"status": "running"}, follow=True
    )
    assert "running again as phase 2" in response.content.decode()
    experiment.refresh_from_db()
    assert (experiment.status, experiment.phase, experiment.stopped_at) == ("running", 2, None)
    assert response.context["result"].phase == 2 and response.context["result"].assigned == 0
    phase_one = growth.get("/rules/experiments/reminder-test/?phase=1").context["result"]
    assert phase_one.assigned == 80  # the first phase stays readable


def test_a_shipped_experiment_cannot_start_again(growth, experiment):
    experiment_set_status(experiment=experiment, status="running")
    growth.post(SHIP, {"variant": "reminder", "confirm": "1", "typed_name": "reminder"})
    page = growth.get("/rules/experiments/reminder-test/").content.decode()
    assert "Start again (new phase)" not in page
    response = growth.post(
        "/rules/experiments/reminder-test/status/", {"status": "running"}, follow=True
    )
    assert "a shipped experiment cannot run again" in response.content.decode()
    experiment.refresh_from_db()
    assert experiment.status == "stopped"


def test_editing_the_arms_of_a_running_experiment_starts_a_new_phase(growth, experiment):
    experiment_set_status(experiment=experiment, status="running")
    response = growth.post("/rules/experiments/reminder-test/edit/", form_data(), follow=True)
    experiment.refresh_from_db()
    assert experiment.phase == 2
    assert "phase 2 started" in response.content.decode()


def test_arms_partial_adds_and_removes_rows_with_the_plan_out_of_band(growth, rule):
    headers = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "arms"}
    url = "/rules/profile-stalled/experiments/new/"
    added = growth.post(url, form_data(action="add"), **headers).content.decode()
    assert added.lstrip().startswith('<section class="card" id="arms">')
    assert 'name="arms-TOTAL" value="3"' in added
    # The new arm goes before the holdout.
    assert re.search(r'arms-1-name"[^>]*value="variant-3"', added)
    assert 'id="experiment-plan"' in added and 'hx-swap-oob="true"' in added
    assert "<html" not in added
    removed = growth.post(url, form_data(action="remove:0"), **headers).content.decode()
    assert 'name="arms-TOTAL" value="1"' in removed
    assert not Experiment.objects.exists()


def test_plan_panel_sizes_unequal_splits_and_estimates_duration(growth, rule):
    from triggers.stats import sample_size

    now = timezone.now()
    people = _people(280)
    # Traffic: 280 enrollments in the last 14 days = 20 a day.
    Enrollment.objects.bulk_create(
        Enrollment(
            rule=rule,
            rule_version=rule.current_version,
            person=p,
            occurrence_key="k",
            enrolled_at=now - timedelta(days=n % 13 + 1),
        )
        for n, p in enumerate(people)
    )
    response = growth.post("/rules/experiments/plan/", form_data(baseline="20", minimum_effect="5"))
    page = response.content.decode()
    assert page.lstrip().startswith(
        '<section class="card preview-card plan-card" id="experiment-plan"'
    )
    size = sample_size(0.20, 0.05, weights=[90, 10], control=1)
    assert f"{size.total:,}" in page
    for users in size.per_arm:
        assert f"{users:,}" in page
    days = -(-size.total // 20) + 1
    assert f"About {days} days" in page


def test_plan_panel_uses_the_flows_recent_rate_and_says_when_there_is_no_traffic(
    growth, rule, flow
):
    now = timezone.now()
    people = _people(10)
    FlowProgress.objects.bulk_create(
        FlowProgress(
            flow=flow,
            person=p,
            entered_at=now - timedelta(days=5),
            entry_event_id=0,
            latest_entry_at=now - timedelta(days=5),
            furthest_step=3 if n < 4 else 1,
            reached_at=now - timedelta(days=5),
            completed_at=now - timedelta(days=5, hours=-2) if n < 4 else None,
            window_ends_at=now + timedelta(days=2),
        )
        for n, p in enumerate(people)
    )
    page = growth.post("/rules/experiments/plan/", form_data()).content.decode()
    assert "40.00%" in page and "4 of 10" in page
    assert "No recent traffic" in page


# --- results ------------------------------------------------------------------------------------------


def _page_analysis(page: str) -> dict:
    match = re.search(
        r'<script id="experiment-analysis" type="application/json">(.*?)</script>', page, re.S
    )
    assert match
    return json.loads(match.group(1))


def test_results_are_exactly_what_ab_calc_prints_for_the_same_counts(growth, rule):
    experiment, _ = experiment_save(
        slug="three-arms",
        rule_slug="profile-stalled",
        variants=[
            {"name": "a", "weight": 45},
            {"name": "b", "weight": 45, "follow_ups": ARMS[0]["follow_ups"]},
            {"name": "holdout", "weight": 10, "holdout": True},
        ],
        metric={"flow": "activation", "completed_within": "1d"},
    )
    _assign(experiment, {"a": (450, 130), "b": (440, 101), "holdout": (95, 19)})
    page = growth.get("/rules/experiments/three-arms/").content.decode()
    shown = _page_analysis(page)
    arguments = []
    for arm in shown["arms"]:
        arguments += ["--arm", f"{arm['name']}={arm['conversions']}/{arm['users']}"]
    weights = ",".join(str(w) for w in [45, 45, 10])
    out = io.StringIO()
    call_command(
        "ab_calc",
        *arguments,
        "--control",
        "holdout",
        "--weights",
        weights,
        "--format",
        "json",
        stdout=out,
    )
    assert shown == json.loads(out.getvalue())
    assert [a["users"] for a in shown["arms"]] == [450, 440, 95]
    # The table shows the same numbers, formatted as ab_calc's table does.
    table = io.StringIO()
    call_command("ab_calc", *arguments, "--control", "holdout", "--weights", weights, stdout=table)
    for token in re.findall(r"[+-]?\d+\.\d+(?:%| pp)", table.getvalue()):
        assert token in page, token
    assert "Holm" in page


def test_a_sample_ratio_mismatch_is_loud_and_withholds_the_verdict(growth, experiment):
    experiment.planned_users_per_arm = 100
    experiment.save()
    _assign(experiment, {"reminder": (700, 300), "holdout": (300, 30)})
    page = growth.get("/rules/experiments/reminder-test/").content.decode()
    assert 'id="srm-banner"' in page and "Sample-ratio mismatch" in page
    assert "Verdict withheld" in page
    assert "Verdict:" not in page and "beats" not in page
    assert _page_analysis(page)["srm"]["mismatch"] is True


def test_no_verdict_before_the_planned_sample_size_says_how_many_more(growth, experiment):
    experiment.planned_users_per_arm = 250
    experiment.save()
    _assign(experiment, {"reminder": (200, 80), "holdout": (210, 40)})
    page = growth.get("/rules/experiments/reminder-test/").content.decode()
    assert 'id="srm-banner"' not in page
    assert "No verdict yet: 90 more users" in page
    experiment.planned_users_per_arm = 200
    experiment.save()
    page = growth.get("/rules/experiments/reminder-test/").content.decode()
    assert "Verdict: reminder beats holdout" in page


def test_without_a_plan_there_is_no_verdict(growth, experiment):
    _assign(experiment, {"reminder": (200, 80), "holdout": (210, 40)})
    page = growth.get("/rules/experiments/reminder-test/").content.decode()
    assert "No verdict: no planned sample size" in page


def test_open_windows_are_not_counted_and_phases_are_selectable(growth, experiment):
    _assign(experiment, {"reminder": (30, 10), "holdout": (30, 5)}, days_ago=0)
    page = growth.get("/rules/experiments/reminder-test/").content.decode()
    assert [a["users"] for a in _page_analysis(page)["arms"]] == [0, 0]
    assert "Phase 2" not in page
    experiment_set_status(experiment=experiment, status="running")
    experiment_save(
        slug="reminder-test",
        rule_slug="profile-stalled",
        variants=[{**ARMS[0], "weight": 80}, {**ARMS[1], "weight": 20}],
        metric=experiment.metric,
    )
    page = growth.get("/rules/experiments/reminder-test/?phase=1").content.decode()
    assert "Phase 2 (current)" in page
    assert _page_analysis(page)["arms"][0]["users"] == 0


def test_nobody_counted_says_no_data_yet_instead_of_a_sample_ratio_and_chances(growth, experiment):
    """Everyone still inside the window: no "Sample ratio OK", no "50 % chance to beat"."""
    _assign(experiment, {"reminder": (30, 10), "holdout": (30, 5)}, days_ago=0)
    page = growth.get("/rules/experiments/reminder-test/").content.decode()
    assert 'data-testid="srm-no-data"' in page and "No data yet" in page
    assert 'data-testid="comparisons-no-data"' in page
    comparisons = page[page.index('id="comparisons-table"') :]
    comparisons = comparisons[: comparisons.index("</table>")]
    assert ">OK<" not in page and "%" not in comparisons.split("</thead>")[1]
    with time_machine.travel(timezone.now() + timedelta(days=2)):  # the 1-day windows close
        page = growth.get("/rules/experiments/reminder-test/").content.decode()
    assert 'data-testid="srm-no-data"' not in page and ">OK<" in page
    assert 'data-testid="comparisons-no-data"' not in page


def test_secondary_metrics_and_guardrail_per_arm(growth, experiment):
    _assign(experiment, {"reminder": (40, 10), "holdout": (40, 8)})
    page = growth.get("/rules/experiments/reminder-test/").content.decode()
    assert 'id="secondary-table"' in page
    assert "Unsubscribed (guardrail)" in page and "sends nothing" in page


def test_plan_panel_warns_when_the_planned_size_is_too_small(growth, rule):
    data = form_data(baseline="20", minimum_effect="5", planned_users_per_arm="100")
    page = growth.post("/rules/experiments/plan/", data).content.decode()
    assert 'id="plan-underpowered"' in page
    data["planned_users_per_arm"] = "100000"
    page = growth.post("/rules/experiments/plan/", data).content.decode()
    assert 'id="plan-underpowered"' not in page
