"""The main journeys end to end in headless Chromium, beyond the single-page browser tests.

Each journey drives the real pages (htmx and Plotly on) served by ``live_server``; data arrives
through the tracking API and the engine/pipeline functions that beat would call, so the pages
show what production would. Waits are explicit conditions, never sleeps. With
``ONRAMP_SAVE_SCREENSHOTS=1`` each journey saves docs/img/journey-<name>.png for the guides.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from onboarding.models import Person
from onboarding.services.flows import StepInput, flow_save
from tests.browser.conftest import login
from tests.browser.helpers import hx_settled, screenshot, session_get, wait
from tests.conftest import basic_auth
from tests.triggers.conftest import T0, Timeline, make_rule
from triggers.delivery.pipeline import deliver_due
from triggers.engine.evaluate import evaluate_rules
from triggers.models import Message, ReviewItem, Rule
from triggers.services.templates import template_save

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
M = timedelta(minutes=1)


def by():
    from selenium.webdriver.common.by import By

    return By


def ec():
    from selenium.webdriver.support import expected_conditions

    return expected_conditions


def activation_flow() -> None:
    flow_save(
        slug="activation",
        name="Activation",
        window_seconds=7 * 86400,
        steps=[
            StepInput("Signed up", "Signed Up"),
            StepInput("Email verified", "Email Verified"),
            StepInput("Profile completed", "Profile Completed"),
        ],
    )


def post_batch(api: Client, messages: list[dict]) -> None:
    batch = [{"messageId": f"j-{n}", **message} for n, message in enumerate(messages)]
    response = api.post("/v1/batch", json.dumps({"batch": batch}), content_type="application/json")
    assert response.status_code == 200, response.content


def onboarding_batch(people: int, start: datetime, **traits_of) -> list[dict]:
    """user-i signs up; even i verify their email; every fourth completes the profile."""
    messages: list[dict] = []
    for i in range(people):
        user, at = f"user-{i}", start + timedelta(minutes=11 * i)
        traits = {"email": f"{user}@example.com", "first_name": f"Name{i}"}
        traits.update({key: value(i) for key, value in traits_of.items()})
        messages.append(
            {"type": "identify", "userId": user, "traits": traits, "timestamp": at.isoformat()}
        )
        messages.append(
            {"type": "track", "userId": user, "event": "Signed Up", "timestamp": at.isoformat()}
        )
        if i % 2 == 0:
            later = (at + timedelta(minutes=5)).isoformat()
            messages.append(
                {"type": "track", "userId": user, "event": "Email Verified", "timestamp": later}
            )
        if i % 4 == 0:
            later = (at + timedelta(hours=2)).isoformat()
            messages.append(
                {"type": "track", "userId": user, "event": "Profile Completed", "timestamp": later}
            )
    return messages


# --- 1. the people behind a funnel step, and their CSV ------------------------------------------


def test_funnel_step_people_and_csv_export(browser, live_server, alice, api):
    By, EC = by(), ec()
    activation_flow()
    post_batch(api, onboarding_batch(8, datetime.now(UTC) - timedelta(days=2)))

    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/flows/activation/funnel/")
    wait(browser).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "#funnel-chart .js-plotly-plot"))
    )
    assert browser.find_element(By.CSS_SELECTOR, "[data-testid=entrants]").text == "8"
    # Step 3's "Stopped before": verified their email (even i) but no profile (i % 4 != 0).
    drops = browser.find_elements(By.CSS_SELECTOR, "#funnel-steps a.count-link.drop")
    assert [link.text for link in drops] == ["4", "2"]
    drops[1].click()

    table = wait(browser).until(EC.presence_of_element_located((By.ID, "people-table")))
    assert "/flows/activation/" in browser.current_url
    assert table.find_element(By.TAG_NAME, "h2").text == "2 people"
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    shown = sorted(row.find_elements(By.TAG_NAME, "td")[0].text.split()[0] for row in rows)
    assert shown == ["user-2", "user-6"]
    assert all(row.find_elements(By.TAG_NAME, "td")[3].text == "2" for row in rows)
    screenshot(browser, "funnel-people")

    csv_link = browser.find_element(By.LINK_TEXT, "Export CSV")
    response = session_get(browser, csv_link.get_attribute("href"))
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers.get("Content-Disposition", "")
    records = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted(r["external_id"] for r in records) == ["user-2", "user-6"]
    assert {r["email"] for r in records} == {"user-2@example.com", "user-6@example.com"}
    assert {r["furthest_step"] for r in records} == {"2"}
    ids = {str(p.pk) for p in Person.objects.filter(external_id__in=["user-2", "user-6"])}
    assert {r["person_id"] for r in records} == ids
    # Without the session the export is not public.
    anonymous = Client().get(csv_link.get_attribute("href").removeprefix(live_server.url))
    assert anonymous.status_code == 302


# --- 2. a segment: live count, save, list -------------------------------------------------------


def test_segment_editor_live_count_save_and_list(browser, live_server, alice, api):
    from selenium.webdriver.support.ui import Select

    By, EC = by(), ec()
    plans = ["pro", "free", "free", "pro", "free", "team", "pro"]
    post_batch(
        api,
        [
            {"type": "identify", "userId": f"p{i}", "traits": {"plan": plan}}
            for i, plan in enumerate(plans)
        ],
    )

    def count_is(expected: str):
        def check(driver) -> bool:
            found = driver.find_elements(By.CSS_SELECTOR, "[data-testid=preview-count]")
            return bool(found) and found[0].text == expected and hx_settled(driver)

        return check

    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/segments/new/")
    browser.find_element(By.NAME, "name").send_keys("Pro plan")
    assert (
        browser.find_element(By.NAME, "slug").get_attribute("value") == "pro-plan"
    )  # from the name
    browser.find_element(By.NAME, "conditions-0-trait").send_keys("plan")
    Select(browser.find_element(By.NAME, "conditions-0-op")).select_by_value("eq")
    browser.find_element(By.NAME, "conditions-0-value").send_keys("pro")
    wait(browser).until(count_is("3"))
    sample = browser.find_element(By.CSS_SELECTOR, "#segment-preview .preview-list").text
    assert {"p0", "p3", "p6"} <= set(sample.split())

    # The condition changes: the count follows without a reload.
    browser.execute_script("window.__sameDocument = true")
    value = browser.find_element(By.NAME, "conditions-0-value")
    value.clear()
    value.send_keys("pro, team")
    Select(browser.find_element(By.NAME, "conditions-0-op")).select_by_value("in")
    wait(browser).until(count_is("4"))
    assert browser.execute_script("return window.__sameDocument === true")
    screenshot(browser, "segment-editor")

    browser.find_element(By.CSS_SELECTOR, ".form-actions button[value=save]").click()
    wait(browser).until(EC.url_to_be(f"{live_server.url}/segments/"))
    link = browser.find_element(By.LINK_TEXT, "Pro plan")
    assert link.get_attribute("href").endswith("/segments/pro-plan/edit/")
    from onboarding.models import Segment

    segment = Segment.objects.get(slug="pro-plan")
    assert segment.definition["conditions"] == [
        {"trait": "plan", "op": "in", "value": ["pro", "team"]}
    ]


# --- 3. template preview for a person, with the missing-variable reason ------------------------


def test_template_preview_names_the_missing_variable(browser, live_server, alice, api):
    By, EC = by(), ec()
    post_batch(
        api,
        [
            {
                "type": "identify",
                "userId": "ada",
                "traits": {"first_name": "Ada", "company": "Acme"},
            },
            {"type": "identify", "userId": "bo", "traits": {"first_name": "Bo"}},
        ],
    )
    template_save(
        slug="company-tip",
        channel="email",
        subject="Tips for {{ company }}",
        body="Hi {{ first_name | default: 'there' }}, set up {{ company }} in two minutes.",
    )

    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/rules/templates/company-tip/")
    person = browser.find_element(By.ID, "id_person")
    person.send_keys("ada")
    wait(browser).until(
        EC.text_to_be_present_in_element((By.ID, "template-preview"), "Rendered for ada.")
    )
    preview = browser.find_element(By.ID, "template-preview")
    assert "Tips for Acme" in preview.find_element(By.CSS_SELECTOR, ".rendered-subject").text
    assert "Hi Ada, set up Acme" in preview.find_element(By.CSS_SELECTOR, ".rendered-body").text

    person = browser.find_element(By.ID, "id_person")
    person.clear()
    person.send_keys("bo")
    # "Rendered for bo." (found by id), not the fallback "the most recently seen person".
    wait(browser).until(
        EC.text_to_be_present_in_element((By.ID, "template-preview"), "Rendered for bo.")
    )
    problem = browser.find_element(By.CSS_SELECTOR, "#template-preview .render-problem")
    assert "This person would not get the message." in problem.text
    assert "company" in problem.text and "no default" in problem.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#template-preview .rendered")
    screenshot(browser, "template-preview")


# --- 4. a rule built in the browser whose email arrives over SMTP -------------------------------


def test_rule_built_in_browser_sends_email_once(browser, live_server, alice, api, smtp):
    from selenium.webdriver.support.ui import Select

    By, EC = by(), ec()
    template_save(
        slug="trial-ending",
        channel="email",
        subject="{{ first_name }}, your trial ends soon",
        body="Hi {{ first_name }}, pick a plan to keep your projects.",
    )
    post_batch(
        api,
        [
            {
                "type": "identify",
                "userId": "grace",
                "traits": {"email": "grace@example.com", "first_name": "Grace"},
            }
        ],
    )

    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/rules/new/")
    browser.find_element(By.NAME, "name").send_keys("Trial ending")
    assert (
        browser.find_element(By.NAME, "slug").get_attribute("value") == "trial-ending"
    )  # from the name
    Select(browser.find_element(By.NAME, "kind")).select_by_value("event")
    event = wait(browser).until(EC.element_to_be_clickable((By.NAME, "event")))
    event.send_keys("Trial Ending")
    Select(browser.find_element(By.NAME, "follow_ups-0-channel")).select_by_value("email")
    wait(browser).until(
        EC.presence_of_element_located(
            (By.CSS_SELECTOR, "select[name='follow_ups-0-template'] option[value='trial-ending']")
        )
    )
    Select(browser.find_element(By.NAME, "follow_ups-0-template")).select_by_value("trial-ending")
    delay = browser.find_element(By.NAME, "follow_ups-0-delay")
    delay.clear()
    delay.send_keys("0m")
    wait(browser).until(hx_settled)
    browser.find_element(By.CSS_SELECTOR, ".form-actions button[value=activate]").click()
    wait(browser).until(EC.url_to_be(f"{live_server.url}/rules/trial-ending/"))
    screenshot(browser, "rule-email")
    rule = Rule.objects.get(slug="trial-ending")
    assert rule.status == "active"

    api.post(
        "/v1/track",
        json.dumps({"type": "track", "userId": "grace", "event": "Trial Ending"}),
        content_type="application/json",
    )
    now = timezone.now() + M
    evaluate_rules(now=now)
    deliver_due(now=now)
    # A second pass (beat runs every minute) sends nothing more.
    evaluate_rules(now=now + M)
    deliver_due(now=now + M)

    assert len(smtp.messages) == 1, [m["Subject"] for m in smtp.messages]
    mail = smtp.messages[0]
    assert mail["To"] == "grace@example.com"
    assert mail["Subject"] == "Grace, your trial ends soon"
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert "Hi Grace, pick a plan" in text
    assert Message.objects.get(rule=rule).status == "sent"


# --- 5. KPIs: charts after the roll-up; the range switch swaps over htmx -----------------------


def test_kpi_page_charts_and_range_switch(browser, live_server, alice, api):
    from dashboard.kpis import rollup_kpis

    By, EC = by(), ec()
    activation_flow()
    now = datetime.now(UTC)
    post_batch(api, onboarding_batch(8, now - timedelta(days=5)))
    rollup_kpis(first=(now - timedelta(days=89)).date(), last=now.date(), now=now)

    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/kpis/")
    wait(browser).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "#kpi-results .js-plotly-plot"))
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#kpi-results .js-plotly-plot")) >= 2
    tiles = browser.find_element(By.CSS_SELECTOR, ".kpi-tiles").get_attribute("textContent")
    assert "Onboarding completion" in tiles and "2 of 8 entrants" in tiles
    assert "rolled up" in browser.find_element(By.CSS_SELECTOR, ".kpi-toolbar").text
    screenshot(browser, "kpis")

    browser.execute_script("window.__sameDocument = true")
    old = browser.find_element(By.ID, "kpi-results")
    browser.find_element(By.CSS_SELECTOR, ".segmented a[href='?range=7d']").click()
    wait(browser).until(EC.staleness_of(old))
    wait(browser).until(EC.url_contains("range=7d"))
    active = wait(browser).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, ".segmented-item.is-active"))
    )
    assert active.text == "7 d"
    wait(browser).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "#kpi-results .js-plotly-plot"))
    )
    assert browser.execute_script("return window.__sameDocument === true")  # swapped, not loaded
    assert browser.find_elements(By.ID, "kpi-stalled")  # the rest of the page stayed


# --- 6. support resolves a review item, the dashboard's person page shows it --------------------


@pytest.fixture
def review_item(write_key) -> ReviewItem:
    template_save(slug="strict", channel="in_app", subject="", body="Hello {{ company }}")
    make_rule(
        "trial",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [{"channel": "in_app", "template": "strict", "delay": "0s"}],
        },
    )
    timeline = Timeline(Client(HTTP_AUTHORIZATION=basic_auth(write_key)))
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    return ReviewItem.objects.get()


def test_support_edits_and_sends_a_review_item(browser, live_server, bob, review_item):
    By, EC = by(), ec()
    person = review_item.message.person

    login(browser, live_server, "bob", "pw-bob")
    browser.get(f"{live_server.url}/admin/triggers/reviewitem/")
    row = wait(browser).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "#result_list tbody tr"))
    )
    assert "Open" in row.text and "u1" in row.text
    row.find_element(By.CSS_SELECTOR, "th a, td a").click()
    wait(browser).until(EC.url_contains(f"/admin/triggers/reviewitem/{review_item.pk}/change/"))
    assert "company" in browser.find_element(By.ID, "content").text

    edit = browser.find_element(By.CSS_SELECTOR, ".object-tools a[href$='/edit-and-send/']")
    assert edit.get_attribute("textContent").strip() == "Edit and send"
    edit.click()
    body = wait(browser).until(EC.presence_of_element_located((By.NAME, "body")))
    # It opens with the message rendered for u1, the variable they lack marked to replace.
    assert body.get_attribute("value") == "Hello [missing: company]"
    screenshot(browser, "review-edit-and-send")
    body.clear()
    body.send_keys("Hello from support: your trial ends on Friday.")
    browser.find_element(By.CSS_SELECTOR, ".submit-row input[type=submit]").click()

    wait(browser).until(EC.url_to_be(f"{live_server.url}/admin/triggers/reviewitem/"))
    success = browser.find_element(By.CSS_SELECTOR, ".messagelist .success")
    assert "on its way" in success.text
    review_item.refresh_from_db()
    assert review_item.status == "resent" and review_item.resolved_by == bob
    browser.get(f"{live_server.url}/admin/triggers/reviewitem/{review_item.pk}/change/")
    content = browser.find_element(By.ID, "content").text
    assert not browser.find_elements(By.CSS_SELECTOR, "a[href$='/edit-and-send/']")
    assert "bob" in content

    deliver_due(now=timezone.now() + M)  # beat's next delivery pass sends the manual message
    browser.get(f"{live_server.url}/people/{person.pk}/")
    entries = wait(browser).until(
        EC.presence_of_all_elements_located((By.CSS_SELECTOR, "li.timeline-message"))
    )
    manual = [e for e in entries if "Hello from support" in e.text]
    assert len(manual) == 1, [e.text for e in entries]
    assert "sent" in manual[0].find_element(By.CSS_SELECTOR, ".badge").text


# --- 7. the person page: events, enrollment, message and decisions in order ---------------------


def test_person_page_timeline_in_order(browser, live_server, alice, write_key):
    By, EC = by(), ec()
    activation_flow()
    template_save(
        slug="nudge",
        channel="in_app",
        subject="",
        body="Need a hand, {{ first_name | default: 'there' }}?",
    )
    make_rule(
        "verified-nudge",
        {
            "trigger": {"kind": "event", "event": "Email Verified"},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    timeline = Timeline(Client(HTTP_AUTHORIZATION=basic_auth(write_key)))
    timeline.send(T0, "u7", "Signed Up")
    timeline.send(T0 + M, "u7", "Email Verified")
    timeline.tick(T0 + 2 * M)
    deliver_due(now=T0 + 3 * M)
    person = Person.objects.get(external_id="u7")

    login(browser, live_server, "alice", "pw-alice")
    browser.get(f"{live_server.url}/people/?q=u7")
    wait(browser).until(EC.url_to_be(f"{live_server.url}/people/{person.pk}/"))
    flows = browser.find_element(By.CSS_SELECTOR, "section.card table").text
    assert "Activation" in flows and "in progress" in flows

    entries = browser.find_elements(By.CSS_SELECTOR, "ol.timeline li.timeline-entry")
    seen = [
        (
            entry.find_element(By.CSS_SELECTOR, ".timeline-kind").get_attribute("textContent"),
            entry.find_element(By.TAG_NAME, "strong").text,
            entry.find_element(By.TAG_NAME, "time").get_attribute("datetime"),
        )
        for entry in entries
    ]
    times = [datetime.fromisoformat(at) for _, _, at in seen]
    assert times == sorted(times, reverse=True), seen  # newest first
    kinds = [kind for kind, _, _ in seen]
    # Newest first: the delivery (message, its decision), the enrollment, then the two events.
    titles = [title for _, title, _ in seen]
    # Newest first: the send (message, then its decision), the enrollment decision of the tick,
    # the enrollment and the two events. The enrollment carries its trigger event's time; at that
    # tie the list keeps the event above the enrollment it caused (see the report), so the test
    # only pins the kinds and times around it.
    assert [kind for kind, _, _ in seen[:3]] == ["message", "decision", "decision"], seen
    assert titles[1] == "Sent · Verified Nudge" and titles[2] == "Enrolled · Verified Nudge"
    assert sorted(kinds[3:5]) == ["enrollment", "event"], seen
    assert kinds[5:] == ["event"] and titles[5] == "Signed Up", seen
    assert "Email Verified" in titles[3:5] and "Entered rule “Verified Nudge”" in titles[3:5]
    assert times[2] == T0 + 2 * M and times[0] == times[1] == T0 + 3 * M
    message = entries[0].text
    assert "Need a hand, there?" in message and "sent" in message
    screenshot(browser, "person")
