"""Every visible form control on the growth pages has a label: a ``<label for>``, a wrapping
``<label>`` or an ``aria-label`` (screen readers read nothing else; issue: the rule editor's quiet
hours were two bare inputs)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.test import Client

from tests.triggers.conftest import make_rule

pytestmark = pytest.mark.usefixtures("flow", "templates")

UNLABELLED_TYPES = {"hidden", "submit", "button", "reset", "image"}


class _Controls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self.open_labels = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "label":
            self.open_labels += 1
            if attributes.get("for"):
                self.label_for.add(attributes["for"])
        elif tag in ("input", "select", "textarea"):
            if tag == "input" and attributes.get("type", "text") in UNLABELLED_TYPES:
                return
            self.controls.append({**attributes, "_wrapped": "1" if self.open_labels else None})

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self.open_labels:
            self.open_labels -= 1


def unlabelled(html: str) -> list[str | None]:
    parser = _Controls()
    parser.feed(html)
    return [
        control.get("name")
        for control in parser.controls
        if not (
            control.get("aria-label")
            or control.get("aria-labelledby")
            or control["_wrapped"]
            or control.get("id") in parser.label_for
        )
    ]


PAGES = [
    "/rules/new/",
    "/rules/idle/",
    "/rules/templates/new/",
    "/rules/idle/experiments/new/",
    "/rules/sandbox/",
    "/rules/",
    "/segments/new/",
    "/flows/new/",
    "/flows/activation/funnel/",
    "/people/",
    "/kpis/",
    "/settings/",
]


def test_every_form_control_on_the_growth_pages_has_a_label(alice):
    make_rule(
        "idle",
        {
            "trigger": {"kind": "inactive_in_flow", "flow": "activation", "minutes": 5},
            "follow_ups": [{"channel": "in_app", "template": "nudge", "delay": "0s"}],
        },
    )
    client = Client()
    client.force_login(alice)
    found = {}
    for url in PAGES:
        response = client.get(url)
        assert response.status_code == 200, url
        found[url] = unlabelled(response.content.decode())
    assert found == {url: [] for url in PAGES}
