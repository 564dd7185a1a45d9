"""Why people stop at a step (issue 20, part 1): a planted cause comes first with the right odds
ratio, noise does not reach significance after Holm, people still converting are not judged, and
the 2×2 statistics agree with SciPy's."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from scipy.stats import fisher_exact as scipy_fisher
from scipy.stats.contingency import odds_ratio as scipy_odds_ratio

from dashboard.funnels import FunnelQuery
from dashboard.funnels.association import fisher_exact, odds_ratio
from dashboard.funnels.explain import Feature, explain_step
from onboarding.models import OnboardingFlow
from onboarding.services.flows import StepInput, flow_save

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
SETTLED = 1600
OPEN = 200


def post(api, messages: list[dict]) -> None:
    for start in range(0, len(messages), 300):
        batch = [
            {"messageId": f"m-{start + n}", **message}
            for n, message in enumerate(messages[start : start + 300])
        ]
        response = api.post(
            "/v1/batch", json.dumps({"batch": batch}), content_type="application/json"
        )
        assert response.status_code == 200, response.content


def track(user: str, event: str, at: datetime, **properties) -> dict:
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "timestamp": at.isoformat(),
        "properties": properties,
    }


@pytest.fixture
def planted(api) -> OnboardingFlow:
    return plant(api, NOW)


def plant(api, now: datetime) -> OnboardingFlow:
    """People on android stop before step 3 three times as often as the others (60 % vs 20 %:
    an odds ratio of (0.6/0.4) / (0.2/0.8) = 6). Browser, campaign, plan, country and two events
    done before the step are noise: independent of stopping."""
    flow_save(
        slug="activation",
        name="Activation",
        window_seconds=86400,
        steps=[
            StepInput("Signed up", "Signed Up"),
            StepInput("Email verified", "Email Verified"),
            StepInput("Profile completed", "Profile Completed"),
            StepInput("Teammate invited", "Teammate Invited"),
        ],
    )
    rng = random.Random(20261207)
    messages: list[dict] = []
    for i in range(SETTLED + OPEN):
        user = f"u{i}"
        settled = i < SETTLED
        at = now - (timedelta(days=3, minutes=3 * i) if settled else timedelta(hours=2, seconds=i))
        device = "android" if i % 4 == 0 or not settled else rng.choice(["ios", "web"])
        messages.append(
            {
                "type": "identify",
                "userId": user,
                "traits": {
                    "email": f"{user}@example.com",
                    "plan": rng.choice(["free", "pro"]),
                    "country": rng.choice(["de", "fr", "us", "br", "in"]),
                },
                "timestamp": (at - timedelta(minutes=1)).isoformat(),
            }
        )
        messages.append(
            track(
                user,
                "Signed Up",
                at,
                device=device,
                browser=rng.choice(["chrome", "firefox", "safari"]),
                campaign=rng.choice(["spring", "summer", "autumn", "winter"]),
            )
        )
        messages.append(track(user, "Email Verified", at + timedelta(minutes=5)))
        if rng.random() < 0.5:
            messages.append(track(user, "Viewed Docs", at + timedelta(minutes=10)))
        if rng.random() < 0.3:
            messages.append(track(user, "Opened Settings", at + timedelta(minutes=12)))
        if not settled:
            continue  # inside their window, not at step 3 yet: never judged
        stops = rng.random() < (0.6 if device == "android" else 0.2)
        if not stops:
            messages.append(track(user, "Profile Completed", at + timedelta(minutes=30)))
            # Only those who passed do this, after the step: it must not be counted before it.
            messages.append(track(user, "Uploaded Avatar", at + timedelta(minutes=31)))
            if rng.random() < 0.85:  # step 4 loses less than step 3: step 3 is the friction step
                messages.append(track(user, "Teammate Invited", at + timedelta(minutes=40)))
    post(api, messages)
    return OnboardingFlow.objects.get(slug="activation")


def query(flow: OnboardingFlow) -> FunnelQuery:
    return FunnelQuery(flow=flow, since=date(2026, 6, 1), until=date(2026, 6, 30), now=NOW)


def test_the_planted_cause_comes_first_with_its_odds_ratio_and_noise_is_not_significant(planted):
    explanation = explain_step(query(planted), 3)

    assert explanation.stopped + explanation.passed == SETTLED  # the open entrants are not judged
    assert not explanation.sampled
    first = explanation.rows[0]
    assert first.feature == Feature("entry", "device", "android")
    assert first.significant and first.over
    assert first.low < 6 < first.high  # the planted odds ratio lies in the 95 % interval
    assert 4 < first.odds_ratio < 9
    assert first.share_stopped > 2 * first.share_passed

    significant = {row.feature for row in explanation.significant}
    # The other device values are the same cause seen from the other side (fewer stop).
    assert {f.key for f in significant} == {"device"}, [r.feature.label for r in explanation.rows]
    noise = [row for row in explanation.rows if row.feature.key != "device"]
    assert {row.feature.key for row in noise} >= {
        "browser",
        "campaign",
        "plan",
        "country",
        "Viewed Docs",
        "Opened Settings",
    }
    assert all(row.p_adjusted >= 0.05 for row in noise)
    # An event done only after passing the step is not a feature of anyone judged at that step.
    assert all(row.feature.key != "Uploaded Avatar" for row in explanation.rows)
    # Emails are unique per person: too many values to be a feature.
    assert all(row.feature.key != "email" for row in explanation.rows)


def test_a_large_population_is_judged_on_a_deterministic_sample(planted):
    first = explain_step(query(planted), 3, max_people=500)
    again = explain_step(query(planted), 3, max_people=500)
    assert first.sampled and first.settled == SETTLED
    assert first.stopped + first.passed == 500
    assert [(r.feature, r.stopped_with, r.passed_with) for r in first.rows] == [
        (r.feature, r.stopped_with, r.passed_with) for r in again.rows
    ]


def test_step_one_cannot_be_explained(planted):
    from dashboard.funnels import FunnelQueryError

    with pytest.raises(FunnelQueryError, match="between 2 and 4"):
        explain_step(query(planted), 1)


@pytest.mark.parametrize(
    "table",
    [(30, 10, 20, 40), (0, 12, 7, 3), (240, 160, 300, 900), (1, 0, 0, 1), (5, 5, 5, 5)],
)
def test_the_two_by_two_statistics_match_scipy(table):
    a, b, c, d = table
    expected_p = scipy_fisher([[a, c], [b, d]])[1]
    assert fisher_exact(a, b, c, d) == pytest.approx(expected_p, rel=1e-9)
    ratio = odds_ratio(a, b, c, d)
    if 0 not in table:
        reference = scipy_odds_ratio([[a, c], [b, d]], kind="sample")
        interval = reference.confidence_interval()
        assert ratio.estimate == pytest.approx(reference.statistic)
        assert (ratio.low, ratio.high) == pytest.approx((interval.low, interval.high))
    else:  # Haldane–Anscombe: 0.5 in every cell keeps it finite
        assert 0 < ratio.low < ratio.estimate < ratio.high < float("inf")


# --- the page ------------------------------------------------------------------------------------


def test_the_panel_names_the_cause_and_makes_a_segment_in_one_click(client, alice, planted):
    import re

    from onboarding.models import Segment
    from onboarding.segments import members_queryset

    client.force_login(alice)  # growth
    with time_machine.travel(NOW, tick=False):
        page = client.get("/flows/activation/funnel/?since=2026-06-01&until=2026-06-30")
        assert 'id="funnel-explain"' in page.content.decode()
        panel = client.get(
            "/flows/activation/funnel/explain/?since=2026-06-01&until=2026-06-30&step=3"
        )
    html = panel.content.decode()
    assert panel.status_code == 200
    assert "Judged on the 1,600 settled entrants" in html
    rows = re.findall(r'data-feature="([^"]+)"', html)
    assert rows[0] == "entry:device=android"
    assert "more among stopped" in html

    response = client.post(
        "/flows/activation/funnel/explain/segment/",
        {"kind": "entry", "key": "device", "value": "android"},
    )
    segment = Segment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/segments/{segment.slug}/edit/"
    assert segment.definition["conditions"] == [
        {"event": "Signed Up", "where": {"device": "android"}}
    ]
    # Its members are the android entrants: every fourth settled one and the open ones.
    assert members_queryset(segment).count() == SETTLED // 4 + OPEN
    # A second click reuses it instead of saving a copy.
    client.post(
        "/flows/activation/funnel/explain/segment/",
        {"kind": "entry", "key": "device", "value": "android"},
    )
    assert Segment.objects.count() == 1


def test_bad_input_is_a_4xx_naming_the_field(client, alice, charlie, planted):
    client.force_login(alice)
    bad_step = client.get("/flows/activation/funnel/explain/?step=9")
    assert bad_step.status_code == 400 and "step: step must be between 2 and 4" in (
        bad_step.content.decode()
    )
    missing = client.post(
        "/flows/activation/funnel/explain/segment/", {"kind": "trait", "key": "plan"}
    )
    assert missing.status_code == 400 and "value" in missing.content.decode()
    client.force_login(charlie)  # no dashboard role
    assert client.get("/flows/activation/funnel/explain/?step=3").status_code == 403


def test_a_viewer_sees_the_panel_without_the_segment_button(client, vera, planted):
    client.force_login(vera)
    with time_machine.travel(NOW, tick=False):
        html = client.get(
            "/flows/activation/funnel/explain/?since=2026-06-01&until=2026-06-30&step=3"
        ).content.decode()
    assert "entry:device=android" in html and "Make segment" not in html
    denied = client.post(
        "/flows/activation/funnel/explain/segment/",
        {"kind": "entry", "key": "device", "value": "android"},
    )
    assert denied.status_code == 403


# --- act on this step (issue 20, part 2) ---------------------------------------------------------


def test_act_on_step_picks_step_skipped_where_the_step_has_a_typical_gap():
    from dashboard.funnels.explain import act_on_step
    from dashboard.funnels.query import StepDef

    steps = [StepDef(1, "Signed up", "A", {}), StepDef(2, "Verified", "B", {})]
    skipped = act_on_step(
        "activation", steps, 2, median_gap_seconds=25 * 60, passed=40, window_seconds=86400
    )
    assert skipped.params == {
        "name": "Stalled before Verified",
        "kind": "step_abandoned",
        "flow": "activation",
        "did": "1",
        "missing": "2",
        "within": "50m",
    }
    hours = act_on_step(
        "activation", steps, 2, median_gap_seconds=2.5 * 3600, passed=40, window_seconds=7 * 86400
    )
    assert hours.params["within"] == "5h"
    # Too few passed, or twice the gap is not well inside the window: inactive at the step.
    for gap, passed in ((25 * 60, 19), (None, 100), (10 * 3600, 100)):
        idle = act_on_step(
            "activation", steps, 2, median_gap_seconds=gap, passed=passed, window_seconds=86400
        )
        assert idle.params["kind"] == "inactive_in_flow"
        assert (idle.params["step"], idle.params["minutes"]) == ("2", "30")


def test_the_panel_links_to_a_prefilled_rule_editor(client, alice, planted):
    import html as html_lib
    import re

    client.force_login(alice)
    with time_machine.travel(NOW, tick=False):
        panel = client.get(
            "/flows/activation/funnel/explain/?since=2026-06-01&until=2026-06-30&step=3"
        ).content.decode()
    link = html_lib.unescape(re.search(r'href="(/rules/new/\?[^"]+)">Act on this step', panel)[1])
    assert "kind=step_abandoned" in link and "within=50m" in link
    editor = client.get(link).content.decode()
    assert 'value="Stalled before Profile completed"' in editor
    assert 'value="stalled-before-profile-completed"' in editor
    assert '<option value="step_abandoned" selected>' in editor
    assert 'value="50m"' in editor
    # An unknown kind in a link is ignored, never a 500.
    assert client.get("/rules/new/?kind=nonsense&name=x").status_code == 200
