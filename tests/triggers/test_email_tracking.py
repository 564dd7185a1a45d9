"""Click and open tracking in emails (DESIGN §3.3): every link of the HTML part goes through the
signed click redirect; the open pixel is there only with ``ONRAMP_TRACK_OPENS`` (off by default)."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from urllib.parse import urlsplit

import pytest
from django.urls import reverse

from triggers.delivery.pipeline import deliver_due
from triggers.models import Message
from triggers.services.templates import template_save

from .conftest import T0
from .test_delivery import event_rule, identify

pytestmark = pytest.mark.usefixtures("flow", "templates")
M = timedelta(minutes=1)
TARGETS = ["https://app.example.com/setup", "http://docs.example.com/start?x=1"]


def send_one(api, timeline, smtp):
    template_save(
        slug="links",
        channel="email",
        subject="Two links",
        body=f"Start at {TARGETS[0]}\n\nor read {TARGETS[1]} first.",
    )
    identify(api, "u1", email="ada@example.com", first_name="Ada")
    event_rule(follow_ups=[{"channel": "email", "template": "links", "delay": "0s"}])
    timeline.send(T0, "u1", "Trial Ending")
    timeline.tick(T0 + M)
    assert deliver_due(now=T0 + M).sent == 1
    [email] = smtp.messages
    return email.get_body(preferencelist=("html",)).get_content()


def local(url: str) -> str:
    parts = urlsplit(unescape(url))
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def test_every_link_goes_through_the_click_redirect_and_no_pixel_by_default(
    api, client, timeline, smtp
):
    html = send_one(api, timeline, smtp)
    hrefs = re.findall(r'<a href="([^"]+)"', html)
    unsubscribe = reverse("links:unsubscribe", args=["x"]).rsplit("/", 1)[0]
    links = [h for h in hrefs if unsubscribe not in h]
    assert len(links) == 2 and all(local(h).startswith(reverse("links:click")) for h in links)
    assert not any(target in href for href in links for target in TARGETS)  # signed, not raw
    redirects = [client.get(local(h))["Location"] for h in links]
    assert redirects == TARGETS
    assert Message.objects.get().clicked_at is not None
    assert "<img" not in html  # ONRAMP_TRACK_OPENS is off


def test_with_open_tracking_on_the_pixel_records_the_open(api, client, timeline, smtp, settings):
    settings.ONRAMP_TRACK_OPENS = True
    html = send_one(api, timeline, smtp)
    [pixel] = re.findall(r'<img src="([^"]+)"', html)
    response = client.get(local(pixel))
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    message = Message.objects.get()
    assert message.opened_at is not None and message.clicked_at is None


@pytest.mark.parametrize("prefix", ["/", "/onramp/"])
def test_link_paths_are_those_reverse_gives(prefix):
    """The link routes are reversed once per URL configuration and script prefix (a pass builds
    three links per email); the paths are exactly what ``reverse`` gives for each token."""
    import time_machine
    from django.urls import set_script_prefix

    from triggers import links

    with time_machine.travel(T0, tick=False):  # the tokens hold a timestamp
        try:
            set_script_prefix(prefix)
            unsubscribe = links.sign_message(7, links.SALT_UNSUBSCRIBE)
            assert links.unsubscribe_url(7).endswith(
                reverse("links:unsubscribe", args=[unsubscribe])
            )
            pixel = links.sign_message(7, links.SALT_OPEN)
            assert links.open_pixel_url(7).endswith(reverse("links:open", args=[pixel]))
            assert urlsplit(links.click_url(7, TARGETS[0])).path == reverse("links:click")
            assert reverse("links:click").startswith(prefix)
        finally:
            set_script_prefix("/")


def test_a_click_link_is_what_urlencode_writes():
    """The click link's query is written without ``urlencode`` (it quotes in Python, character
    by character); it must be the same text, for plain, odd and compressed targets alike."""
    from urllib.parse import urlencode

    import time_machine
    from django.core import signing

    from triggers import links

    targets = [*TARGETS, "https://example.com/a?b=c&d=%20e#f", "https://example.com/" + "x" * 300]
    with time_machine.travel(T0, tick=False):
        for target in targets:
            token = signing.dumps({"m": 7, "u": target}, salt=links.SALT_CLICK, compress=True)
            query = urlsplit(links.click_url(7, target)).query
            assert query == urlencode({"t": token})
            assert links.click_target(token) == (7, target)
