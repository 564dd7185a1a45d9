"""A web app keeps Segment's analytics.js and changes only its ``cdnURL`` (DESIGN §3.1).

The real ``@segment/analytics-next`` package from npm, its ``dist/umd`` bundle served by the web
app's own origin (another loopback port), loaded in headless Chromium against the live server,
through a reverse proxy that records every request and refuses one (503) as Onramp does when its
database is briefly unavailable. Onramp is told its public URL is the proxy's
(``ONRAMP_TRACKING_URL``), as behind a real load balancer.

Page load 1 uses the library's default delivery (one request per call), page load 2 its batching
mode; the in-app widget (static/onramp.js) runs on both pages without being told who the person is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from onboarding.models import Event, Identity, IdentityKind
from tests.browser.analytics_js import (
    analytics_next_bundle,
    recording_proxy,
    serve_directory,
)
from tests.browser.conftest import wait_for
from triggers.models import Message

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Each page runs its steps with the real library, then publishes what happened on window.result.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>A web app</title>
<script src="analytics-next.js"></script>
<script src="{onramp}/static/onramp.js"></script>
</head><body><h1>A web app</h1>
<script type="application/json" id="config">{config}</script>
<script>
window.result = {{done: false, errors: []}};
(async function () {{
  const config = JSON.parse(document.getElementById("config").textContent);
  try {{
    const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
      {{writeKey: config.writeKey, cdnURL: config.cdnURL}}, config.options);
    const before = {{
      userId: analytics.user().id(), anonymousId: analytics.user().anonymousId()}};
    const steps = {{
      page: () => analytics.page("Docs", "Setup", {{section: "install"}}),
      trackSignup: () => analytics.track("Signup Started", {{plan: "trial"}}),
      widget: () => Onramp.init({{host: config.onramp, writeKey: config.writeKey}}),
      identify: () => analytics.identify("u1", {{email: "ada@example.com", name: "Ada"}}),
      trackProject: () => analytics.track("Project Created", {{template: "blank"}}),
      alias: () => analytics.alias("u1", "legacy-7"),
      trackReturn: () => analytics.track("Dashboard Viewed", {{tab: "home"}}),
      pageHome: () => analytics.page("App", "Home"),
    }};
    for (const step of config.steps) await steps[step]();
    window.result.before = before;
    window.result.after = {{
      userId: analytics.user().id(), anonymousId: analytics.user().anonymousId()}};
    window.result.widgetIds = Onramp.analyticsJsIds();
  }} catch (error) {{
    window.result.errors.push(String(error && error.stack || error));
  }}
  window.result.done = true;
}})();
</script></body></html>
"""
DEADLINE = 30.0  # seconds, for each wait; the whole test takes about 10 s


def write_page(directory: Path, name: str, **config) -> None:
    (directory / name).write_text(
        PAGE.format(onramp=config["onramp"], config=json.dumps(config)), encoding="utf-8"
    )


def run_page(browser, url: str) -> dict:
    browser.get(url)
    result = wait_for(
        lambda: browser.execute_script("return window.result.done && window.result"), DEADLINE
    )
    assert result["errors"] == []
    return result


def posts_to(proxy, path: str) -> list:
    return [r for r in proxy.requests() if (r.method, r.path) == ("POST", path)]


@pytest.fixture
def bundle() -> Path:
    return analytics_next_bundle()


def test_analytics_js_works_against_onramp_unchanged(
    bundle, browser, live_server, settings, write_key, sent_message, tmp_path
):
    from selenium.webdriver.common.by import By

    shutil.copyfile(bundle, tmp_path / "analytics-next.js")
    with recording_proxy(live_server.url) as proxy, serve_directory(tmp_path) as app:
        settings.ONRAMP_TRACKING_URL = proxy.url
        common = {"writeKey": write_key, "cdnURL": proxy.url, "onramp": proxy.url}
        write_page(
            tmp_path,
            "one.html",
            **common,
            options={},
            steps=["page", "trackSignup", "widget", "identify", "trackProject", "alias"],
        )
        write_page(
            tmp_path,
            "two.html",
            **common,
            options={
                "integrations": {
                    "Segment.io": {
                        "deliveryStrategy": {
                            "strategy": "batching",
                            "config": {"size": 2, "timeout": 500},
                        }
                    }
                }
            },
            steps=["trackReturn", "pageHome", "widget"],
        )
        # Onramp refuses the first event (503, nothing stored), then a batch is stored but its
        # answer is lost: the library must retry both, and Onramp store each event once.
        proxy.fail_once("POST", "/v1/t", forward=False)
        proxy.fail_once("POST", "/v1/b", forward=True)

        first = run_page(browser, f"{app}/one.html")
        anonymous_id = first["before"]["anonymousId"]
        assert first["before"]["userId"] is None and anonymous_id
        assert first["after"] == {"userId": "u1", "anonymousId": anonymous_id}
        assert first["widgetIds"] == first["after"]
        wait_for(lambda: Event.objects.filter(name="Signup Started").exists(), DEADLINE)

        second = run_page(browser, f"{app}/two.html")
        # The second page load finds the same browser identity.
        assert second["before"] == {"userId": "u1", "anonymousId": anonymous_id}
        wait_for(lambda: Event.objects.filter(name="Home").exists(), DEADLINE)
        # The batch was stored at once; its retry comes after the library's backoff.
        wait_for(lambda: len(posts_to(proxy, "/v1/b")) == 2, DEADLINE)
        # The widget on the same page asked for the person analytics.js knows, and showed their
        # message (sent to userId u1 by a rule before the browser came).
        banner = wait_for(
            lambda: browser.find_elements(By.CSS_SELECTOR, "[data-onramp-message]"), DEADLINE
        )[0]
        assert banner.get_attribute("data-onramp-message") == str(sent_message.pk)
        wait_for(lambda: Message.objects.get(pk=sent_message.pk).seen_at, DEADLINE)

    requests = proxy.requests()
    # Nothing failed in the browser but the two 503s (and the web app's missing favicon): no CORS
    # refusal, and no request to any host but Onramp (the browser resolves nothing else).
    problems = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE"
        and "favicon.ico" not in entry["message"]
        and "status of 503" not in entry["message"]
    ]
    assert problems == []

    # Every call is stored exactly once, under one person, with the same anonymous id on both
    # page loads: the page view sent before identify (no userId) was merged into u1.
    events = list(Event.objects.exclude(name="Trial Ending"))  # that one made the message
    assert sorted((e.type, e.name) for e in events) == [
        ("alias", ""),
        ("identify", ""),
        ("page", "Home"),
        ("page", "Setup"),
        ("track", "Dashboard Viewed"),
        ("track", "Project Created"),
        ("track", "Signup Started"),
    ]
    person = Identity.objects.get(kind=IdentityKind.USER, value="u1").person
    assert {e.person_id for e in events} == {person.pk}
    assert {e.anonymous_id for e in events} == {anonymous_id}
    assert Identity.objects.get(kind=IdentityKind.ANONYMOUS, value=anonymous_id).person == person
    assert {i.person_id for i in Identity.objects.filter(value="legacy-7")} == {person.pk}
    assert {"email": "ada@example.com", "name": "Ada"}.items() <= person.traits.items()
    assert person.email == "ada@example.com"
    setup = Event.objects.get(name="Setup")
    assert (setup.user_id, setup.anonymous_id, setup.person_id) == ("", anonymous_id, person.pk)
    assert setup.properties["section"] == "install"
    assert setup.properties["path"] == "/one.html"
    assert Event.objects.get(name="Project Created").properties == {"template": "blank"}

    # The library retried what was refused or unanswered: the refused track was sent twice, the
    # batch whose answer was lost was sent twice with the same messageIds.
    posts = [r for r in requests if r.method == "POST"]
    signup = [r for r in posts if r.path == "/v1/t" and b"Signup Started" in r.body]
    assert [r.status for r in signup] == [503, 200]
    assert signup[0].forwarded is False and signup[1].headers.get("x-retry-count") == "1"
    batches = posts_to(proxy, "/v1/b")
    assert [r.status for r in batches] == [503, 200]
    sent = [[m["messageId"] for m in json.loads(r.body)["batch"]] for r in batches]
    assert sent[0] == sent[1] and len(sent[0]) == 2

    # The widget asked for the anonymous id before identify, then for the user id: the same
    # person as analytics.js.
    widget = [r.path for r in requests if r.path.startswith("/v1/in-app/messages?")]
    assert widget[0] == f"/v1/in-app/messages?anonymousId={anonymous_id}"
    assert "/v1/in-app/messages?userId=u1" in widget

    # What the library sent, and how Onramp answered (docs/api.md lists it). The settings were
    # loaded once: the second page load took them from the browser's cache.
    library = [
        (r.method, r.path, r.content_type, r.status)
        for r in requests
        if not r.path.startswith(("/static/", "/v1/in-app/"))
    ]
    settings_path = f"/v1/projects/{write_key}/settings"
    assert library[0] == ("GET", settings_path, "", 200)
    assert sorted(set(library)) == [
        ("GET", settings_path, "", 200),
        ("OPTIONS", "/v1/a", "", 204),
        ("OPTIONS", "/v1/b", "", 204),
        ("OPTIONS", "/v1/i", "", 204),
        ("OPTIONS", "/v1/p", "", 204),
        ("OPTIONS", "/v1/t", "", 204),
        ("POST", "/v1/a", "text/plain", 200),
        ("POST", "/v1/b", "text/plain", 200),
        ("POST", "/v1/b", "text/plain", 503),
        ("POST", "/v1/i", "text/plain", 200),
        ("POST", "/v1/p", "text/plain", 200),
        ("POST", "/v1/t", "text/plain", 200),
        ("POST", "/v1/t", "text/plain", 503),
    ]
    assert library.count(("GET", settings_path, "", 200)) == 1
