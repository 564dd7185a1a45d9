"""The in-app message API (DESIGN §3.2): auth, user hash, inbox, outcomes, CORS, errors."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.test import Client

from tests.conftest import basic_auth
from triggers.delivery.pipeline import deliver_due
from triggers.models import Message
from triggers.services.templates import template_save

from .conftest import T0, make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)
SECRET = "in-app-secret-for-tests"
URL = "/v1/in-app/messages"


def user_hash(value: str) -> str:
    return hmac.new(SECRET.encode(), value.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def sent(api, timeline):
    """Two in-app messages sent to u1 (a banner, then a modal with a call to action), one to u2."""
    template_save(
        slug="modal",
        channel="in_app",
        subject="[modal] Welcome back",
        body="Finish your profile: [Complete it](https://app.example.com/profile).",
    )
    make_rule(
        "nudges",
        {
            "trigger": {"kind": "event", "event": "Trial Ending"},
            "follow_ups": [
                {"channel": "in_app", "template": "nudge", "delay": "0s"},
                {"channel": "in_app", "template": "modal", "delay": "1h"},
            ],
            "reentry": {"once_per": "1m"},
        },
    )
    timeline.send(T0, "u1", "Trial Ending")
    timeline.send(T0, "u2", "Trial Ending")
    timeline.tick(T0 + M)
    deliver_due(now=T0 + M)
    deliver_due(now=T0 + 2 * 60 * M)
    return {
        user: list(
            Message.objects.filter(person__external_id=user)
            .order_by("sent_at")
            .values_list("pk", flat=True)
        )
        for user in ("u1", "u2")
    }


def get(client: Client, **params):
    return client.get(URL, params)


def test_lists_sent_messages_newest_first_with_display_and_cta(api, sent):
    response = get(api, userId="u1")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    messages = response.json()["messages"]
    assert [m["id"] for m in messages] == sent["u1"][::-1]
    modal, banner = messages
    assert modal["display"] == "modal" and modal["subject"] == "Welcome back"
    assert modal["body"] == "Finish your profile: Complete it."
    assert modal["cta"] == {"label": "Complete it", "url": "https://app.example.com/profile"}
    assert banner["display"] == "banner" and banner["cta"] is None
    assert banner["body"] == "Need a hand, there?"
    assert banner["sentAt"] == "2026-11-02T09:01:00Z" and banner["seenAt"] is None


@pytest.mark.parametrize("with_basic_auth", [False, True])
def test_write_key_in_the_url_is_refused(write_key, sent, with_basic_auth):
    """Access logs keep URLs: a key there is refused, even next to a valid Authorization."""
    client = Client(HTTP_AUTHORIZATION=basic_auth(write_key)) if with_basic_auth else Client()
    response = client.get(URL, {"userId": "u1", "writeKey": write_key})
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": {
            "code": "write_key_in_url",
            "path": "writeKey",
            "message": "send the write key as the HTTP Basic auth user name (an Authorization "
            "header), never in the URL: URLs are kept in access logs",
        },
    }
    mine = sent["u1"][0]
    response = client.post(f"{URL}/{mine}/seen?userId=u1&writeKey={write_key}")
    assert response.status_code == 400
    assert Message.objects.get(pk=mine).seen_at is None


@pytest.mark.parametrize("auth", [None, basic_auth("wrong-key"), "Bearer xyz", "Basic !!!"])
def test_missing_or_unknown_write_key_is_401(sent, auth):
    client = Client(HTTP_AUTHORIZATION=auth) if auth else Client()
    response = get(client, userId="u1")
    assert response.status_code == 401
    assert response.json() == {
        "success": False,
        "error": {
            "code": "unauthorized",
            "path": "writeKey",
            "message": "missing or unknown write key: send it as the HTTP Basic auth user name",
        },
    }
    assert response["WWW-Authenticate"].startswith("Basic")


def test_user_id_is_required_and_checked(api, sent):
    response = get(api)
    assert response.status_code == 400
    assert response.json()["error"]["path"] == "userId"
    response = get(api, userId="x" * 256)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_value")
    response = get(api, userId="nul\x00byte")
    assert response.status_code == 400


def test_unknown_user_gets_an_empty_list(api, sent):
    assert get(api, userId="nobody").json() == {"success": True, "messages": []}


def test_anonymous_id_works_too(api, timeline, sent):
    payload = {"type": "track", "anonymousId": "anon-7", "event": "Trial Ending", "messageId": "a7"}
    api.post("/v1/track", json.dumps(payload), content_type="application/json")
    assert get(api, anonymousId="anon-7").json()["messages"] == []


class TestUserHash:
    @pytest.fixture(autouse=True)
    def _secret(self, settings):
        settings.ONRAMP_IN_APP_SECRET = SECRET

    def test_optional_hash_is_still_checked_when_sent(self, api, sent):
        assert get(api, userId="u1").status_code == 200
        response = api.get(URL, {"userId": "u1"}, HTTP_X_ONRAMP_USER_HASH=user_hash("u2"))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_user_hash"
        assert response.json()["error"]["path"] == "X-Onramp-User-Hash"

    def test_required_hash(self, api, sent, settings):
        settings.ONRAMP_IN_APP_REQUIRE_HASH = True
        response = get(api, userId="u1")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "user_hash_required"
        for bad in ["0" * 64, user_hash("u2"), "zz", "é" * 64, user_hash("u1")[:-1]]:
            response = api.get(URL, {"userId": "u1"}, HTTP_X_ONRAMP_USER_HASH=bad)
            assert response.status_code == 401, bad
        response = api.get(URL, {"userId": "u1"}, HTTP_X_ONRAMP_USER_HASH=user_hash("u1").upper())
        assert response.status_code == 200 and len(response.json()["messages"]) == 2

    def test_required_hash_covers_outcomes(self, api, sent, settings):
        settings.ONRAMP_IN_APP_REQUIRE_HASH = True
        mine = sent["u1"][0]
        assert api.post(f"{URL}/{mine}/seen?userId=u1").status_code == 401
        response = api.post(f"{URL}/{mine}/seen?userId=u1", HTTP_X_ONRAMP_USER_HASH=user_hash("u1"))
        assert response.status_code == 200

    def test_a_sent_hash_is_refused_when_the_server_has_no_secret(self, api, sent, settings):
        """Sent means checked: a hash this server cannot check is refused, not ignored."""
        settings.ONRAMP_IN_APP_SECRET = ""
        assert get(api, userId="u1").status_code == 200  # no hash sent, none required
        response = api.get(URL, {"userId": "u1"}, HTTP_X_ONRAMP_USER_HASH=user_hash("u1"))
        assert response.status_code == 401
        assert response.json()["error"] == {
            "code": "invalid_user_hash",
            "path": "X-Onramp-User-Hash",
            "message": "X-Onramp-User-Hash cannot be verified: this server has no user-hash secret",
        }
        mine = sent["u1"][0]
        response = api.post(f"{URL}/{mine}/seen?userId=u1", HTTP_X_ONRAMP_USER_HASH="0" * 64)
        assert response.status_code == 401
        assert Message.objects.get(pk=mine).seen_at is None

    def test_required_without_a_secret_refuses_everyone(self, api, sent, settings):
        settings.ONRAMP_IN_APP_REQUIRE_HASH = True
        settings.ONRAMP_IN_APP_SECRET = ""
        response = api.get(URL, {"userId": "u1"}, HTTP_X_ONRAMP_USER_HASH=user_hash("u1"))
        assert response.status_code == 401


@pytest.mark.parametrize("outcome", ["seen", "clicked", "dismissed"])
def test_outcomes_are_recorded_once(api, sent, outcome):
    mine = sent["u1"][0]
    first = api.post(f"{URL}/{mine}/{outcome}?userId=u1")
    assert first.status_code == 200 and first.json() == {"success": True, "recorded": True}
    recorded_at = getattr(Message.objects.get(pk=mine), f"{outcome}_at")
    assert recorded_at is not None
    again = api.post(f"{URL}/{mine}/{outcome}?userId=u1")
    assert again.json() == {"success": True, "recorded": False}
    assert getattr(Message.objects.get(pk=mine), f"{outcome}_at") == recorded_at


def test_user_id_in_a_json_body(api, sent):
    mine = sent["u1"][0]
    response = api.post(
        f"{URL}/{mine}/seen", json.dumps({"userId": "u1"}), content_type="text/plain"
    )
    assert response.status_code == 200
    response = api.post(f"{URL}/{mine}/seen", "{nope", content_type="application/json")
    assert (response.status_code, response.json()["error"]["path"]) == (400, "body")


def test_dismissed_messages_leave_the_inbox(api, sent):
    newest = sent["u1"][-1]
    api.post(f"{URL}/{newest}/dismissed?userId=u1")
    assert [m["id"] for m in get(api, userId="u1").json()["messages"]] == [sent["u1"][0]]


def test_seen_is_reported_back(api, sent):
    newest = sent["u1"][-1]
    api.post(f"{URL}/{newest}/seen?userId=u1")
    seen = {m["id"]: m["seenAt"] for m in get(api, userId="u1").json()["messages"]}
    assert seen[newest] is not None and seen[sent["u1"][0]] is None


@pytest.mark.parametrize(
    "path",
    [
        "{other}/seen?userId=u1",  # another user's message
        "{mine}/seen?userId=u2",
        "{mine}/seen?userId=nobody",
        "999999/seen?userId=u1",
        "99999999999999999999999/seen?userId=u1",
        "-1/seen?userId=u1",
        "abc/seen?userId=u1",
        "²/seen?userId=u1",
        "{mine}/opened?userId=u1",
    ],
)
def test_anything_but_the_users_own_message_is_404(api, sent, path):
    url = f"{URL}/" + path.format(mine=sent["u1"][0], other=sent["u2"][0])
    response = api.post(url)
    assert response.status_code == 404
    assert response.json()["success"] is False
    assert Message.objects.filter(seen_at__isnull=False).count() == 0


def test_messages_not_yet_sent_are_404(api, timeline, sent):
    message = Message.objects.get(pk=sent["u1"][0])
    Message.objects.filter(pk=message.pk).update(status="scheduled")
    assert api.post(f"{URL}/{message.pk}/seen?userId=u1").status_code == 404
    assert message.pk not in [m["id"] for m in get(api, userId="u1").json()["messages"]]


def test_other_channels_are_not_in_the_inbox(api, timeline, sent):
    Message.objects.filter(pk=sent["u1"][0]).update(channel="email")
    assert [m["id"] for m in get(api, userId="u1").json()["messages"]] == [sent["u1"][1]]


def test_wrong_methods_are_json_405(api, sent):
    response = api.post(URL + "?userId=u1")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    response = api.get(f"{URL}/{sent['u1'][0]}/seen?userId=u1")
    assert response.status_code == 405


def test_cors_preflight_and_headers(sent, write_key):
    client = Client()
    response = client.options(
        f"{URL}/1/seen",
        HTTP_ORIGIN="https://app.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, x-onramp-user-hash",
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed = response["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "x-onramp-user-hash" in allowed
    response = client.get(
        URL,
        {"userId": "u1"},
        HTTP_ORIGIN="https://x.test",
        HTTP_AUTHORIZATION=basic_auth(write_key),
    )
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response


def test_no_cookie_auth(sent, alice, client):
    client.force_login(alice)
    assert client.get(URL, {"userId": "u1"}).status_code == 401


def test_rate_limited(api, sent, settings):
    settings.ONRAMP_RATE_LIMIT_REQUESTS = 1
    settings.ONRAMP_RATE_LIMIT_WINDOW = 3600
    from django.core.cache import cache

    cache.clear()
    assert get(api, userId="u1").status_code == 200
    response = get(api, userId="u1")
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    cache.clear()


def test_tracking_api_is_unaffected(api):
    payload = {"type": "track", "userId": "u9", "event": "x", "messageId": "t1"}
    assert api.post("/v1/track", json.dumps(payload), content_type="application/json").json() == {
        "success": True
    }


def test_widget_demo_requires_login_and_the_growth_group(client, charlie, sent):
    response = client.get("/demo/widget/")
    assert response.status_code == 302 and "/login/" in response["Location"]
    client.force_login(charlie)
    assert client.get("/demo/widget/").status_code == 403


def test_widget_demo_embeds_the_widget_for_the_chosen_user(client, alice, sent, settings):
    settings.ONRAMP_IN_APP_SECRET = SECRET
    client.force_login(alice)
    page = client.get("/demo/widget/").content.decode()
    assert "onramp.js" not in page and 'name="userId"' in page
    # A key in the URL (access logs keep it) is ignored: the form posts it.
    page = client.get("/demo/widget/", {"userId": "u1", "writeKey": "wk"}).content.decode()
    assert "onramp.js" not in page and 'value="u1"' in page and '"wk"' not in page
    assert '<form method="post"' in page
    page = client.post("/demo/widget/", {"userId": "u1", "writeKey": "wk"}).content.decode()
    assert "onramp.js" in page and 'data-config="onramp-demo-config"' in page
    assert user_hash("u1") in page  # computed server-side, as an app's backend would
    assert "Welcome back" in page  # the inbox as the widget will see it
